"""deploy/k8s and deploy/istio: schema-valid, hardened, probed, pinned, consistent.

Core Kubernetes objects are validated (strictly: unknown fields are errors) against
the OpenAPI schemas that `kubernetes-validate` ships, for the oldest and a current
Kubernetes release we support. Istio's CRDs (AuthorizationPolicy, PeerAuthentication,
IstioOperator) are not in those schemas: test_istio_* check their structure
explicitly (apiVersion, kind, the fields Istio requires) instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy._util import (
    ISTIO,
    K8S,
    KUBERNETES_VERSIONS,
    ROOT,
    load_all,
    manifest_files,
    pod_specs,
    run_tool,
)
from tests.deploy.test_envoy_configs import envoy_validate, self_signed

ISTIO_KINDS = {
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("install.istio.io/v1alpha1", "IstioOperator"),
}


def _all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for d in (K8S, ISTIO) for path in manifest_files(d)
            for doc in load_all(path)]


def _core_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in _all_docs() if (d["apiVersion"], d["kind"]) not in ISTIO_KINDS]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _by_kind(directory: Path, kind: str) -> list[dict[str, Any]]:
    return [d for p in manifest_files(directory) for d in load_all(p) if d["kind"] == kind]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_core_manifest_validates_strictly(version: str) -> None:
    docs = _core_docs()
    assert len(docs) >= 15
    failures = []
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except (kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError) as exc:
            failures.append(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)


def test_strict_validation_does_catch_a_typo() -> None:
    deployment = _by_kind(K8S, "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_cli_agrees_on_the_sidecar_manifests() -> None:
    result = run_tool("kubernetes-validate", "--strict", "--quiet", "-k",
                      KUBERNETES_VERSIONS[-1], *map(str, manifest_files(K8S)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_container_is_non_root_read_only_and_capability_free() -> None:
    seen = 0
    for path, doc in _all_docs():
        for spec in pod_specs(doc):
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000, path
            assert pod["seccompProfile"]["type"] == "RuntimeDefault", path
            assert spec["automountServiceAccountToken"] is False, path
            for c in _containers(spec):
                seen += 1
                sc = c["securityContext"]
                where = f"{path.name}:{c['name']}"
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["capabilities"]["drop"] == ["ALL"], where
                assert "add" not in sc["capabilities"], where
                assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
                assert c["resources"]["requests"] and c["resources"]["limits"], where
    assert seen == 4  # envoy, authz, ratelimit in the pod; authz in the mesh


def test_every_long_running_container_has_liveness_and_readiness_probes() -> None:
    for path, doc in _all_docs():
        for spec in pod_specs(doc):
            for c in _containers(spec):
                where = f"{path.name}:{c['name']}"
                assert "livenessProbe" in c and "readinessProbe" in c, where


def test_exec_probes_use_the_grpc_health_client_on_the_container_socket() -> None:
    deployment = _by_kind(K8S, "Deployment")[0]
    spec = deployment["spec"]["template"]["spec"]
    for c in spec["initContainers"]:
        assert c["restartPolicy"] == "Always", c["name"]  # native sidecar
        address = next(a for a in c["args"] if a.startswith("--grpc-address="))
        socket = address.split("=", 1)[1]
        assert socket.startswith("unix:/var/run/tollgate/"), socket
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["exec"]["command"] == ["tollgate-grpc-health", socket]
    mesh = _by_kind(ISTIO, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert mesh["readinessProbe"]["grpc"]["port"] == 9191  # TCP there: native gRPC probe
    assert "--grpc-address=0.0.0.0:9191" in mesh["args"]


def test_every_image_is_pinned() -> None:
    for path, doc in _all_docs():
        for spec in pod_specs(doc):
            for c in _containers(spec):
                image = c["image"]
                assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", image), \
                    f"{path.name}:{c['name']}: {image}"
    for kustomization in (K8S / "kustomization.yaml", ISTIO / "kustomization.yaml"):
        for image in yaml.safe_load(kustomization.read_text()).get("images", []):
            assert image["newTag"] != "latest"


def test_sockets_emptydir_is_shared_and_configmaps_are_directory_mounts() -> None:
    deployment = _by_kind(K8S, "Deployment")[0]
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["sockets"]
    configmaps = {name for name, v in volumes.items() if "configMap" in v}
    for c in _containers(spec):
        mounts = c["volumeMounts"]
        assert any(m["name"] == "sockets" and m["mountPath"] == "/var/run/tollgate"
                   for m in mounts), c["name"]
        for m in mounts:
            # subPath mounts never see ConfigMap updates: the reload would not happen.
            assert "subPath" not in m, (c["name"], m)
            if m["name"] in configmaps:
                assert m.get("readOnly") is True
    defined = {d["metadata"]["name"] for d in _by_kind(K8S, "ConfigMap")}
    assert {volumes[n]["configMap"]["name"] for n in configmaps} == defined


def _envoy_configmap() -> dict[str, Any]:
    return next(d for d in _by_kind(K8S, "ConfigMap")
                if d["metadata"]["name"] == "tollgate-envoy")


def test_envoy_sockets_match_the_services_addresses() -> None:
    envoy = yaml.safe_load(_envoy_configmap()["data"]["envoy.yaml"])
    pipes = {}
    for cluster in envoy["static_resources"]["clusters"]:
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        pipes[cluster["name"]] = endpoint["address"].get("pipe", {}).get("path")
    deployment = _by_kind(K8S, "Deployment")[0]
    for c in deployment["spec"]["template"]["spec"]["initContainers"]:
        address = next(a for a in c["args"] if a.startswith("--grpc-address="))
        assert address == f"--grpc-address=unix:{pipes[c['name']]}"


def test_envoy_config_in_the_configmap_validates(tmp_path: Path) -> None:
    text = _envoy_configmap()["data"]["envoy.yaml"]
    assert "/etc/envoy/tls/" in text
    self_signed(tmp_path)
    config = tmp_path / "envoy.yaml"
    config.write_text(text.replace("/etc/envoy/tls/", f"{tmp_path}/"))
    envoy_validate(config)


def test_service_configs_in_configmaps_pass_check_config(tmp_path: Path) -> None:
    authz_maps = [d for directory in (K8S, ISTIO) for d in _by_kind(directory, "ConfigMap")
                  if "authz.yaml" in d["data"]]
    assert len(authz_maps) == 2
    for i, cm in enumerate(authz_maps):
        path = tmp_path / f"authz{i}.yaml"
        path.write_text(cm["data"]["authz.yaml"])
        result = run_tool("authz-service", "--check-config", str(path))
        assert result.returncode == 0, result.stderr
    ratelimit = next(d for d in _by_kind(K8S, "ConfigMap")
                     if d["metadata"]["name"] == "tollgate-ratelimit")
    rl_dir = tmp_path / "ratelimit"
    rl_dir.mkdir()
    for name, text in ratelimit["data"].items():
        (rl_dir / name).write_text(text)
    result = run_tool("ratelimit-service", "--check-config", str(rl_dir))
    assert result.returncode == 0, result.stderr


def test_ratelimit_reads_redis_from_the_secret() -> None:
    deployment = _by_kind(K8S, "Deployment")[0]
    rl = next(c for c in deployment["spec"]["template"]["spec"]["initContainers"]
              if c["name"] == "ratelimit")
    env = {e["name"]: e for e in rl["env"]}
    ref = env["RATELIMIT_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    secret = _by_kind(K8S, "Secret")[0]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert "@" not in secret["stringData"][ref["key"]], "no credentials in the repository"


def test_service_pdb_hpa_select_and_target_the_deployment() -> None:
    deployment = _by_kind(K8S, "Deployment")[0]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _by_kind(K8S, "Service")[0]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for c in _containers(deployment["spec"]["template"]["spec"])
             for p in c.get("ports", [])}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    pdb = _by_kind(K8S, "PodDisruptionBudget")[0]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = _by_kind(K8S, "HorizontalPodAutoscaler")[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2  # a PDB with maxUnavailable 1 needs two


@pytest.mark.parametrize("directory", [K8S, ISTIO], ids=["k8s", "istio"])
def test_kustomization_lists_exactly_the_manifests(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    for entry in listed:
        assert (directory / entry).resolve().is_relative_to(directory), entry
        assert (directory / entry).is_file(), entry
    on_disk = {p.name for p in manifest_files(directory)} - {"mesh-config.yaml"}
    assert listed == on_disk


def test_istio_mesh_config_registers_a_fail_closed_grpc_provider() -> None:
    (doc,) = load_all(ISTIO / "mesh-config.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("install.istio.io/v1alpha1", "IstioOperator")
    providers = doc["spec"]["meshConfig"]["extensionProviders"]
    provider = next(p for p in providers if p["name"] == "tollgate-ext-authz")
    grpc = provider["envoyExtAuthzGrpc"]
    assert set(grpc) <= {"service", "port", "timeout", "failOpen", "statusOnError",
                         "includeRequestBodyInCheck", "clearRouteCache"}
    assert grpc["failOpen"] is False
    assert re.fullmatch(r"\d+(\.\d+)?(ms|s)", grpc["timeout"])
    # The provider points at the mesh Service, on its gRPC port.
    service = _by_kind(ISTIO, "Service")[0]
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert grpc["service"] == f"{name}.{namespace}.svc.cluster.local"
    assert grpc["port"] in {p["port"] for p in service["spec"]["ports"]}


def test_istio_authorization_policy_is_custom_with_our_provider() -> None:
    (policy,) = _by_kind(ISTIO, "AuthorizationPolicy")
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert set(policy) == {"apiVersion", "kind", "metadata", "spec"}
    assert policy["metadata"]["name"] and policy["metadata"]["namespace"]
    spec = policy["spec"]
    assert set(spec) <= {"selector", "targetRefs", "action", "provider", "rules"}
    assert spec["action"] == "CUSTOM"
    assert spec["provider"]["name"] == "tollgate-ext-authz"
    assert spec["selector"]["matchLabels"]
    assert spec["rules"], "CUSTOM with no rules would match nothing"
    for rule in spec["rules"]:
        assert set(rule) <= {"from", "to", "when"}
    (peer,) = _by_kind(ISTIO, "PeerAuthentication")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    authz = _by_kind(ISTIO, "Deployment")[0]
    assert peer["spec"]["selector"]["matchLabels"].items() <= \
        authz["spec"]["template"]["metadata"]["labels"].items()


def test_every_yaml_file_under_deploy_parses() -> None:
    files = [*sorted((ROOT / "deploy").rglob("*.yaml")), ROOT / "docker-compose.yml"]
    assert len(files) >= 20
    for path in files:
        list(yaml.safe_load_all(path.read_text()))
