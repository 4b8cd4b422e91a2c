"""Kubernetes and Istio manifests: schema-valid, hardened, and wired to the same configs."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import binary

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
ISTIO = ROOT / "deploy" / "istio"
VERSION = "1.31.0"  # the oldest Kubernetes the manifests target (sidecar preStop sleep: 1.30)
CRD_KINDS = {"AuthorizationPolicy"}  # not in the Kubernetes schemas; checked structurally


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all() -> list[tuple[Path, dict[str, Any]]]:
    files = sorted(K8S.glob("*.yaml")) + sorted(ISTIO.glob("*.yaml"))
    return [(f, d) for f in files if f.name != "kustomization.yaml" for d in _documents(f)]


def _by_kind(kind: str, folder: Path = K8S) -> dict[str, Any]:
    (doc,) = [d for f, d in _all() if d["kind"] == kind and f.parent == folder]
    return doc


@pytest.mark.parametrize(
    "document", [d for _, d in _all() if d["kind"] not in CRD_KINDS],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_manifest_is_valid_against_kubernetes_schema(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, VERSION, strict=True)


def test_schema_validation_can_fail() -> None:
    deployment = _by_kind("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_pod_is_the_hardened_sidecar_pattern() -> None:
    pod = _by_kind("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"envoy", "authz", "ratelimit", "app"}
    for container in containers.values():
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] and container["resources"]["limits"]
    assert containers["envoy"]["image"] == "envoyproxy/envoy:v1.40.0"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["sockets"]
    for name in ("envoy", "authz", "ratelimit"):
        mounts = {m["name"]: m for m in containers[name]["volumeMounts"]}
        assert mounts["sockets"]["mountPath"] == "/var/run/tollgate"
        # Whole-directory mounts: subPath would never see a ConfigMap update.
        assert all("subPath" not in m for m in mounts.values())
    for name in ("authz", "ratelimit"):
        args = containers[name]["args"]
        address = args[args.index("--grpc-address") + 1]
        assert address == f"unix:/var/run/tollgate/{name}.sock"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            command = containers[name][probe]["exec"]["command"]
            assert command == ["python", "-m", "tollgate.readiness", address]


def test_envoy_configmap_is_the_committed_sidecar_config() -> None:
    configmap = next(d for _, d in _all() if d["metadata"]["name"] == "tollgate-envoy")
    assert configmap["data"]["envoy.yaml"] == (ROOT / "envoy" / "envoy.yaml").read_text()


def test_service_configmaps_pass_the_services_own_checks(tmp_path: Path) -> None:
    configs = {d["metadata"]["name"]: d["data"] for _, d in _all() if d["kind"] == "ConfigMap"}
    authz = tmp_path / "authz.yaml"
    authz.write_text(configs["tollgate-authz"]["authz.yaml"])
    ratelimit = tmp_path / "ratelimit"
    ratelimit.mkdir()
    (ratelimit / "tollgate.yaml").write_text(configs["tollgate-ratelimit"]["tollgate.yaml"])
    for command in (["authz-service", "--check-config", str(authz)],
                    ["ratelimit-service", "--check-config", str(ratelimit)]):
        result = subprocess.run([binary(command[0]), *command[1:]], capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


def test_pdb_and_hpa_target_the_deployment() -> None:
    labels = _by_kind("Deployment")["spec"]["selector"]["matchLabels"]
    assert _by_kind("PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == labels
    hpa = _by_kind("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == _by_kind("Deployment")["metadata"]["name"]
    assert hpa["minReplicas"] >= 2  # with minAvailable 1, a drain never empties the service


def test_istio_policy_uses_the_mesh_extension_provider() -> None:
    mesh = yaml.safe_load(_by_kind("ConfigMap", ISTIO)["data"]["mesh"])
    (provider,) = mesh["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert grpc["failOpen"] is False
    service = _by_kind("Service", ISTIO)
    assert grpc["service"] == (f"{service['metadata']['name']}."
                               f"{service['metadata']['namespace']}.svc.cluster.local")
    assert grpc["port"] == service["spec"]["ports"][0]["port"]
    policy = _by_kind("AuthorizationPolicy", ISTIO)
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert set(policy) == {"apiVersion", "kind", "metadata", "spec"}
    assert set(policy["spec"]) <= {"selector", "action", "provider", "rules"}
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"] == {"name": provider["name"]}
