"""The Dockerfile: hadolint-clean, multi-stage, non-root, pinned; the health probes work.

No Docker engine runs here, so the image is not built in the tests: hadolint checks the
file, and these tests check what it copies, runs and names against the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy._util import (
    DOCKERFILE,
    HEALTH_SCRIPT,
    HTTP_HEALTH_SCRIPT,
    ROOT,
    project_version,
    run_tool,
)
from tests.kits.processes import VENV_BIN, free_port, wait_for

pytestmark = pytest.mark.integration  # hadolint, real services for the probes


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_hadolint_reports_nothing_at_warning_or_above() -> None:
    result = run_tool("hadolint", "--failure-threshold", "warning", "--no-color",
                      str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_pinned_base_and_numeric_non_root_user() -> None:
    ins = _instructions()
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(r for k, r in ins if k == "ARG")))
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    stages = [rest for k, rest in ins if k == "FROM"]
    assert len(stages) >= 2
    assert all(s.startswith("${PYTHON_IMAGE} AS ") for s in stages)
    users = [rest for k, rest in ins if k == "USER"]
    assert users and re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", users[-1]), users
    # The runtime stage copies the venv from the builder and runs one of the services.
    assert any(k == "COPY" and "--from=builder" in r for k, r in ins)
    cmd = [r for k, r in ins if k == "CMD"][-1]
    assert "authz-service" in cmd
    assert any(k == "EXPOSE" for k, _ in ins)
    # The image names its version: the one docker-compose.yml, deploy/k8s and the chart use.
    assert f'org.opencontainers.image.version="{project_version()}"' in DOCKERFILE.read_text()
    assert f"docker build -t tollgate:{project_version()} ." in DOCKERFILE.read_text()


def test_the_opentelemetry_proto_step_lives_in_one_script() -> None:
    """xds-protos ships an older opentelemetry/proto: the venv and the image both write
    the newer one again, with the same script, after the project."""
    script = "scripts/reinstall-otel-proto.sh"
    assert "--force-reinstall --no-deps" in (ROOT / script).read_text()
    setup = (ROOT / "scripts" / "_setup.sh").read_text()
    assert f"{script} .venv/bin/python" in setup
    dockerfile = DOCKERFILE.read_text()
    assert f"COPY --chmod=0755 {script} /usr/local/bin/reinstall-otel-proto" in dockerfile
    builder = dockerfile.split(" AS runtime")[0]
    assert builder.index("pip install --no-cache-dir .") < builder.index(
        "reinstall-otel-proto python")
    for other in (setup, dockerfile):
        assert "--force-reinstall" not in other  # the step is not repeated anywhere


def test_no_secrets_in_the_image_definition() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"(?i)(password|secret|token|api_key)\s*=", text)
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[0:1] == ["*"] or "*" in ignore, "build context must be an allow-list"
    for needed in ("!pyproject.toml", "!README.md", "!tollgate/", "!authz_service/",
                   "!ratelimit_service/", "!deploy/docker/grpc_health_check.py",
                   "!deploy/docker/http_health_check.py", "!scripts/reinstall-otel-proto.sh"):
        assert needed in ignore, needed
    # Every path the Dockerfile COPYs from the context is let in by .dockerignore.
    for keyword, rest in _instructions():
        if keyword == "COPY" and "--from=" not in rest:
            sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
            for src in sources:
                assert (ROOT / src).exists(), src
                assert any(line == f"!{src}" or src.startswith(line[1:].rstrip("/"))
                           for line in ignore if line.startswith("!")), src


def test_health_probe_script_against_a_real_service_on_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "authz.sock"
    # An issuer whose JWKS URL nothing answers: live, but never ready.
    config = tmp_path / "authz.yaml"
    config.write_text(f"""identities:
  - name: idp
    jwt: {{issuer: https://issuer.test, jwks_uri: "http://127.0.0.1:{free_port()}/jwks"}}
routes:
  - name: r
    match: {{path: {{prefix: /}}}}
""")
    env = {**os.environ, "AUTHZ_LOG_LEVEL": "warning"}
    proc = subprocess.Popen([str(VENV_BIN / "authz-service"), "--grpc-address",
                             f"unix:{sock}", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = [sys.executable, str(HEALTH_SCRIPT)]
    try:
        wait_for(sock.exists, timeout=20, what="authz-service socket")
        live = subprocess.run([*probe, f"unix:{sock}", "--service", "liveness"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert live.returncode == 0, live.stderr
        for service in ("", "envoy.service.auth.v3.Authorization"):
            ready = subprocess.run([*probe, f"unix://{sock}", "--service", service],
                                   capture_output=True, text=True, timeout=30, check=False)
            assert ready.returncode == 1
            assert ready.stderr.strip() == f"unix://{sock}: NOT_SERVING"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    gone = subprocess.run([*probe, f"unix:{sock}", "--timeout", "0.5"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert gone.returncode == 1
    assert "UNAVAILABLE" in gone.stderr or "DEADLINE" in gone.stderr


def test_hadolint_does_flag_an_unpinned_root_image(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install grpcio\nUSER root\n")
    result = run_tool("hadolint", "--failure-threshold", "warning", "--no-color", str(bad))
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # :latest


def test_http_probe_script_against_a_real_http_door_on_a_socket_and_tcp(tmp_path: Path) -> None:
    sock = tmp_path / "authz.sock"
    port = free_port()
    env = {**os.environ, "AUTHZ_LOG_LEVEL": "warning"}
    probe = [sys.executable, str(HTTP_HEALTH_SCRIPT)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*probe, *args], capture_output=True, text=True, timeout=30,
                              check=False)

    # No JWT source, so nothing to wait for: ready once it serves.
    config = tmp_path / "authz.yaml"
    config.write_text("routes:\n  - {name: r, match: {path: {prefix: /}}, anonymous: true}\n")
    proc = subprocess.Popen([str(VENV_BIN / "authz-service"), "--grpc-address", "off",
                             "--http-address", f"unix:{sock}", "--config", str(config)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: run(f"unix:{sock}", "/ready").returncode == 0, timeout=20,
                 what="the HTTP door ready")
        assert run(f"unix:{sock}", "/healthz").returncode == 0
        missing = run(f"unix:{sock}", "/nope")
        assert missing.returncode == 1 and "HTTP 404" in missing.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    gone = run(f"unix:{sock}", "/ready", "--timeout", "0.5")
    assert gone.returncode == 1 and gone.stderr
    refused = run(f"127.0.0.1:{port}", "/ready", "--timeout", "0.5")
    assert refused.returncode == 1 and "refused" in refused.stderr.lower()
    bad = run("no-port", "/ready")
    assert bad.returncode == 1 and "expected HOST:PORT or unix:PATH" in bad.stderr
