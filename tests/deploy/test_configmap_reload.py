"""The manifests' config mounts really reload: kubelet's ConfigMap layout, real services.

Each service is started with the arguments of its container in deploy/k8s/deployment.yaml
(paths moved under tmp, metrics off) on a unix socket, against a directory laid out the
way kubelet projects a ConfigMap (`..<ts>/`, `..data -> ..<ts>`, `KEY -> ..data/KEY`).
The `..data` symlink is then swapped as kubelet does: a valid config is reloaded, an
invalid one is rejected while the service keeps serving.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.deploy._util import HEALTH_SCRIPT, K8S, load_all
from tests.support import VENV_BIN, wait_for


def _manifest() -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    docs = [d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in load_all(p)]
    data = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    args = {c["name"]: [*c["command"], *c["args"]]
            for c in deployment["spec"]["template"]["spec"]["initContainers"]}
    return data, args


def _project(directory: Path, files: dict[str, str], generation: int) -> None:
    """Write `files` the way kubelet's AtomicWriter updates a ConfigMap volume."""
    version = directory / f"..2026_11_23_00_00_0{generation}.000000000"
    version.mkdir()
    for name, text in files.items():
        (version / name).write_text(text)
    tmp_link = directory / "..data_tmp"
    os.symlink(version.name, tmp_link)
    os.replace(tmp_link, directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / name)


@contextmanager
def _service(argv: list[str], log: Path, socket: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "AUTHZ_LOG_FORMAT": "json", "RATELIMIT_LOG_FORMAT": "json"}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(socket.exists, timeout=20, what=f"{argv[0]} socket")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _healthy(socket: Path) -> bool:
    # Liveness: readiness also waits for the manifest's IdP, which no test reaches.
    result = subprocess.run([sys.executable, str(HEALTH_SCRIPT), f"unix:{socket}",
                             "--service", "liveness"],
                            capture_output=True, timeout=30, check=False)
    return result.returncode == 0


@pytest.mark.parametrize(("container", "configmap", "mount"), [
    ("authz", "tollgate-authz", "/etc/tollgate/authz"),
    ("ratelimit", "tollgate-ratelimit", "/etc/tollgate/ratelimit"),
])
def test_configmap_symlink_swap_reloads_the_service(
        tmp_path: Path, container: str, configmap: str, mount: str) -> None:
    data, args = _manifest()
    files = data[configmap]
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    _project(config_dir, files, 1)
    socket = tmp_path / f"{container}.sock"
    argv = [str(VENV_BIN / args[container][0])]
    for arg in args[container][1:]:
        if arg.startswith("--grpc-address="):
            argv.append(f"--grpc-address=unix:{socket}")
        elif not arg.startswith("--metrics-address="):
            argv.append(arg.replace(mount, str(config_dir)))
    argv.append("--reload-interval=0.1")
    log = tmp_path / "service.log"

    def logged(message: str) -> bool:
        return message in log.read_text()

    with _service(argv, log, socket) as proc:
        assert _healthy(socket)
        # A valid change is picked up.
        (name, text), = files.items()
        changed = text.replace("600", "700") if container == "ratelimit" else \
            text.replace("realm: tollgate", "realm: tollgate-v2")
        assert changed != text
        yaml.safe_load(changed)
        _project(config_dir, {name: changed}, 2)
        wait_for(lambda: logged("config reloaded"), timeout=15, what="config reloaded")
        # An invalid one is refused, and the service keeps serving the last good one.
        _project(config_dir, {name: changed + "\nnot_a_known_key: 1\n"}, 3)
        wait_for(lambda: logged("reload rejected"), timeout=15, what="reload rejected")
        assert proc.poll() is None
        assert _healthy(socket)
