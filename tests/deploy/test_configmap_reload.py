"""The manifests' config mounts really reload: kubelet's ConfigMap layout, real services.

Each service is started with the arguments of its container in the rendered overlays
(authz from overlays/single-replica, ratelimit from overlays/grpc; socket paths moved
under tmp, metrics off), against directories laid out the way kubelet projects a
ConfigMap (`..<ts>/`, `..data -> ..<ts>`, `KEY -> ..data/KEY`) side by side, as the pod
mounts them (/etc/tollgate/authz beside /etc/tollgate/limits, so the policy's
`rules: ../limits` resolves). The `..data` symlink is then swapped as kubelet does: a
valid config is reloaded, an invalid one is rejected while the service keeps serving.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy._util import HEALTH_SCRIPT, HTTP_HEALTH_SCRIPT, K8S, kustomize
from tests.kits.processes import VENV_BIN, wait_for

pytestmark = pytest.mark.integration


def _pod(overlay: str) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, Any]]]:
    docs = kustomize(K8S / "overlays" / overlay)
    data = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    deployment = next(d for d in docs if d["kind"] == "Deployment"
                      and d["metadata"]["name"] == "tollgate")
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
    sidecars = {}
    for c in spec["initContainers"]:
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]
                  if m["name"] in volumes}
        sidecars[c["name"]] = {"argv": [*c["command"], *c["args"]], "mounts": mounts}
    return data, sidecars


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


def _healthy(container: str, socket: Path) -> bool:
    # Liveness: readiness also waits for the manifest's IdP, which no test reaches.
    if container == "authz":
        probe = [sys.executable, str(HTTP_HEALTH_SCRIPT), f"unix:{socket}", "/healthz"]
    else:
        probe = [sys.executable, str(HEALTH_SCRIPT), f"unix:{socket}", "--service", "liveness"]
    return subprocess.run(probe, capture_output=True, timeout=30, check=False).returncode == 0


@pytest.mark.parametrize(("overlay", "container", "configmap"), [
    ("single-replica", "authz", "tollgate-authz"),
    ("single-replica", "authz", "tollgate-limits"),
    ("grpc", "ratelimit", "tollgate-limits"),
])
def test_configmap_symlink_swap_reloads_the_service(
        tmp_path: Path, overlay: str, container: str, configmap: str) -> None:
    data, sidecars = _pod(overlay)
    sidecar = sidecars[container]
    etc = tmp_path / "etc"
    for mount, name in sidecar["mounts"].items():
        directory = etc / Path(mount).relative_to("/etc")
        directory.mkdir(parents=True)
        _project(directory, data[name], 1)
    changed_dir = etc / Path(next(m for m, n in sidecar["mounts"].items()
                                  if n == configmap)).relative_to("/etc")
    socket = tmp_path / f"{container}.sock"
    argv = [str(VENV_BIN / sidecar["argv"][0])]
    for arg in sidecar["argv"][1:]:
        if arg.startswith(("--grpc-address=unix:", "--http-address=unix:")):
            argv.append(arg.split("=", 1)[0] + f"=unix:{socket}")
        elif not arg.startswith("--metrics-address="):
            argv.append(arg.replace("/etc/", f"{etc}/"))
    argv.append("--reload-interval=0.1")
    log = tmp_path / "service.log"

    def logged(message: str) -> int:
        return log.read_text().count(message)

    with _service(argv, log, socket) as proc:
        wait_for(lambda: _healthy(container, socket), timeout=20, what="ready")
        # A valid change is picked up.
        (name, text), = data[configmap].items()
        changed = text.replace("600", "700") if configmap == "tollgate-limits" else \
            text.replace("realm: tollgate", "realm: tollgate-v2")
        assert changed != text
        yaml.safe_load(changed)
        _project(changed_dir, {name: changed}, 2)
        wait_for(lambda: logged("config reloaded") >= 1, timeout=15, what="config reloaded")
        # An invalid one is refused, and the service keeps serving the last good one.
        _project(changed_dir, {name: changed + "\nnot_a_known_key: 1\n"}, 3)
        wait_for(lambda: logged("reload rejected") >= 1, timeout=15, what="reload rejected")
        assert proc.poll() is None
        assert _healthy(container, socket)
