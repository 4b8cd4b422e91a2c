"""deploy/k8s, deploy/istio and the Helm chart, as rendered: schema-valid, whole,
hardened, probed, pinned, consistent.

Each rendering is what a user applies: `kubectl kustomize` of every overlay and of
deploy/istio, and the chart rendered by Helm's own engine with each case of
CHART_CASES. Core Kubernetes objects are validated strictly (unknown fields are errors)
against the OpenAPI schemas `kubernetes-validate` ships, for the oldest and a current
release we support; cert-manager's and Istio's objects (CRDs, not in those schemas) are
checked by the reference test and the Istio tests instead.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.kits.deploy_kit import (
    CHART_EXTERNAL,
    ISTIO,
    K8S,
    K8S_BASE,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    configmaps,
    kustomize,
    pod_specs,
    project_version,
    renderings,
    run_tool,
    tollgate_image,
)
from tests.kits.references import containers, unresolved

pytestmark = pytest.mark.integration  # kubectl kustomize, Helm's engine, the services

RENDERINGS = renderings()
EXTERNAL_SERVICES = ["otel-collector.observability"]  # the cluster's trace collector
CRD_GROUPS = ("cert-manager.io/", "security.istio.io/", "install.istio.io/",
              "monitoring.coreos.com/")


def _core(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if not d["apiVersion"].startswith(CRD_GROUPS)]


def _resolve(name: str, docs: list[dict[str, Any]]) -> list[str]:
    case = name.removeprefix("chart/")
    given = CHART_EXTERNAL.get(case, [])
    chart = name.startswith("chart/")
    created_outside = ["tollgate"] if chart and case != "cluster-issuer-and-namespace" else []
    return unresolved([*docs, *given], namespaces=created_outside, images=[tollgate_image()],
                      external_issuers=["letsencrypt"],
                      external_services=EXTERNAL_SERVICES)


def _workload(docs: list[dict[str, Any]], name: str = "tollgate") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_reference_in_the_rendering_resolves(name: str) -> None:
    docs = RENDERINGS[name]
    assert len(docs) >= 6, name
    problems = _resolve(name, docs)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", RENDERINGS)
def test_every_core_object_validates_strictly(name: str, version: str) -> None:
    failures = []
    for doc in _core(RENDERINGS[name]):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except (kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError) as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)


def test_the_cli_agrees_on_a_rendered_overlay(tmp_path: Path) -> None:
    rendered = tmp_path / "shared-limits.yaml"
    rendered.write_text(yaml.safe_dump_all(_core(RENDERINGS["k8s/shared-limits"])))
    result = run_tool("kubernetes-validate", "--strict", "--quiet", "-k",
                      KUBERNETES_VERSIONS[-1], str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


def test_strict_validation_does_catch_a_typo() -> None:
    deployment = copy.deepcopy(_workload(RENDERINGS["k8s/single-replica"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# --- the reference test catches each kind of dangling reference ----------------------

def _without(docs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    kept = [d for d in docs if not (d["kind"] == kind and d["metadata"]["name"] == name)]
    assert len(kept) == len(docs) - 1, (kind, name)
    return kept


def _problems(docs: list[dict[str, Any]]) -> list[str]:
    return unresolved(docs, images=[tollgate_image()], external_services=EXTERNAL_SERVICES)


def test_the_reference_test_catches_a_missing_secret_configmap_and_namespace() -> None:
    docs = kustomize(K8S / "overlays" / "shared-limits")
    assert _problems(_without(docs, "Secret", "tollgate-redis")) == [
        "Deployment/tollgate/tollgate: container authz: env AUTHZ_LIMITS_REDIS_URL: "
        "secretKeyRef tollgate-redis does not exist"]
    assert _problems(_without(docs, "Certificate", "tollgate-tls")) == [
        "Deployment/tollgate/tollgate: volume tls: Secret tollgate-tls does not exist"]
    assert "Deployment/tollgate/tollgate: volume limits-config: ConfigMap tollgate-limits " \
        "does not exist" in _problems(_without(docs, "ConfigMap", "tollgate-limits"))
    assert "Deployment/tollgate/tollgate: ServiceAccount tollgate does not exist" in \
        _problems(_without(docs, "ServiceAccount", "tollgate"))
    assert "Service/tollgate/tollgate: namespace tollgate is not created" in \
        _problems(_without(docs, "Namespace", "tollgate"))
    assert _problems(_without(docs, "Issuer", "tollgate-selfsigned")) == [
        "Certificate/tollgate/tollgate-tls: Issuer tollgate-selfsigned does not exist"]


def test_the_reference_test_catches_keys_ports_services_and_commands() -> None:
    docs = kustomize(K8S / "overlays" / "shared-limits")
    authz_cm = next(d for d in docs if d["metadata"]["name"] == "tollgate-authz")
    authz_cm["data"] = {"policy.yaml": authz_cm["data"]["authz.yaml"]}
    assert _problems(docs) == [
        "Deployment/tollgate/tollgate: container authz: /etc/tollgate/authz/authz.yaml is not "
        "in volume authz-config (keys: policy.yaml)"]

    docs = kustomize(K8S / "overlays" / "shared-limits")
    envoy = next(c for c in containers(_workload(docs)["spec"]["template"]["spec"])
                 if c["name"] == "envoy")
    envoy["ports"] = [p for p in envoy["ports"] if p["name"] != "envoy-probes"]
    problems = _problems(docs)
    assert "Deployment/tollgate/tollgate: container envoy: readinessProbe names port " \
        "envoy-probes, which the container does not declare" in problems

    docs = _without(kustomize(K8S / "overlays" / "shared-limits"), "Service", "backend")
    assert any("cluster upstream: Service backend does not exist in namespace tollgate" in p
               for p in _problems(docs))
    docs = _without(kustomize(K8S / "overlays" / "shared-limits"), "Service", "redis")
    assert any("Secret/tollgate/tollgate-redis: url: Service redis does not exist" in p
               for p in _problems(docs))

    docs = kustomize(K8S / "overlays" / "single-replica")
    authz = containers(_workload(docs)["spec"]["template"]["spec"])[0]
    authz["args"] = [a.replace("--http-address=unix:/var/run/tollgate/authz.sock",
                               "--http-address=unix:/var/run/tollgate/authz-http.sock")
                     for a in authz["args"]]
    authz["livenessProbe"]["exec"]["command"][0] = "tollgate-health"
    problems = _problems(docs)
    assert any("cluster tollgate_authz: no container beside this Envoy listens on "
               "unix:/var/run/tollgate/authz.sock" in p for p in problems), problems
    assert "Deployment/tollgate/tollgate: container authz: image tollgate has no command " \
        "tollgate-health" in problems


# --- overlays: what each one is ------------------------------------------------------

def _authz_env(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    authz = next(c for c in _workload(docs)["spec"]["template"]["spec"]["initContainers"]
                 if c["name"] == "authz")
    return {e["name"]: e for e in authz.get("env", [])}


def test_single_replica_counts_in_memory_and_shared_limits_in_redis() -> None:
    single, shared = (RENDERINGS[f"k8s/{o}"] for o in ("single-replica", "shared-limits"))
    assert _workload(single)["spec"]["replicas"] == 1
    assert "AUTHZ_LIMITS_REDIS_URL" not in _authz_env(single)
    assert not [d for d in single if d["kind"] in {"HorizontalPodAutoscaler", "Secret"}]
    assert _workload(shared)["spec"]["replicas"] == 2
    ref = _authz_env(shared)["AUTHZ_LIMITS_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    secret = next(d for d in shared if d["kind"] == "Secret")
    assert ref == {"name": secret["metadata"]["name"], "key": "url"}
    assert secret["stringData"]["url"] == "redis://redis:6379/0"
    assert "@" not in secret["stringData"]["url"], "no credentials in the repository"
    assert _workload(shared, "redis")
    hpa = next(d for d in shared if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 2  # a PDB with maxUnavailable 1 needs two


def test_every_rendering_that_scales_out_counts_in_redis() -> None:
    for name, docs in RENDERINGS.items():
        for doc in docs:
            if doc["kind"] != "Deployment" or doc["metadata"]["name"] != "tollgate":
                continue
            scaled = doc["spec"].get("replicas", 2) > 1 or any(
                d["kind"] == "HorizontalPodAutoscaler" for d in docs)
            if not scaled:
                continue
            env = {e["name"] for c in containers(doc["spec"]["template"]["spec"])
                   for e in c.get("env", [])}
            assert env & {"AUTHZ_LIMITS_REDIS_URL", "RATELIMIT_REDIS_URL"}, name


def test_the_http_layouts_run_one_sidecar_on_the_http_door() -> None:
    for name in ("k8s/single-replica", "k8s/shared-limits", "chart/default"):
        spec = _workload(RENDERINGS[name])["spec"]["template"]["spec"]
        (authz,) = spec["initContainers"]
        assert authz["restartPolicy"] == "Always"  # native sidecar
        assert "--http-address=unix:/var/run/tollgate/authz.sock" in authz["args"], name
        assert "--grpc-address=off" in authz["args"], name
        for probe in ("startupProbe", "readinessProbe"):
            assert authz[probe]["exec"]["command"] == [
                "tollgate-http-health", "unix:/var/run/tollgate/authz.sock", "/ready"], name


def test_the_grpc_layouts_run_ratelimit_service_beside_authz_on_grpc() -> None:
    for name in ("k8s/grpc", "chart/grpc"):
        spec = _workload(RENDERINGS[name])["spec"]["template"]["spec"]
        sidecars = {c["name"]: c for c in spec["initContainers"]}
        assert set(sidecars) == {"authz", "ratelimit"}, name
        assert "--grpc-address=unix:/var/run/tollgate/authz.sock" in sidecars["authz"]["args"]
        assert "--http-address=off" in sidecars["authz"]["args"]
        for c in sidecars.values():
            socket = next(a for a in c["args"] if a.startswith("--grpc-address=")).split("=")[1]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe]["exec"]["command"] == ["tollgate-grpc-health", socket], name
        env = {e["name"]: e for e in sidecars["ratelimit"]["env"]}
        assert "secretKeyRef" in env["RATELIMIT_REDIS_URL"]["valueFrom"]


def _policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = configmaps(docs, "authz.yaml")
    policy: dict[str, Any] = yaml.safe_load(cm["data"]["authz.yaml"])
    return policy


def test_the_policy_needs_one_value_changed_and_says_it_in_one_place() -> None:
    text = (K8S_BASE / "config" / "authz" / "authz.yaml").read_text()
    assert text.count("https://idp.example.com/") == 1
    assert "ONE VALUE TO CHANGE: `issuer`" in text
    issuers = {name: [i["jwt"]["issuer"] for i in _policy(docs)["identities"]]
               for name, docs in RENDERINGS.items()}
    assert set(map(tuple, issuers.values())) == {("https://idp.example.com/",)}, issuers
    # The grpc overlay, the mesh and the chart's generated policy are the base's, less the
    # rate limits where another process counts them.
    base = _policy(RENDERINGS["k8s/single-replica"])
    without_limits = {k: v for k, v in base.items() if k != "rate_limits"}
    assert _policy(RENDERINGS["k8s/grpc"]) == without_limits
    assert _policy(RENDERINGS["istio"]) == without_limits
    assert _policy(RENDERINGS["chart/default"]) == base
    assert _policy(RENDERINGS["chart/grpc"]) == without_limits


def test_the_image_is_named_once_per_tool_and_is_the_dockerfiles() -> None:
    expected = f"tollgate:{project_version()}"
    component = yaml.safe_load((K8S / "components" / "image" / "kustomization.yaml").read_text())
    (entry,) = component["images"]
    assert f"{entry['newName']}:{entry['newTag']}" == expected
    assert "images" not in yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    for overlay in OVERLAYS:  # the image component last: it sees every container
        kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml")
                                       .read_text())
        assert "images" not in kustomization
        assert kustomization["components"][-1] == "../../components/image", overlay
    for name in ("k8s/single-replica", "k8s/grpc", "chart/default", "chart/grpc"):
        images = {c["image"] for d in RENDERINGS[name] for s in pod_specs(d)
                  for c in containers(s) if c["name"] in ("authz", "ratelimit")}
        assert images == {expected}, name
    chart = RENDERINGS["chart/own-redis-and-tls"]
    assert {c["image"] for d in chart for s in pod_specs(d) for c in containers(s)
            if c["name"] == "authz"} == {"tollgate@sha256:" + "ab" * 32}


def test_one_edit_renames_every_tollgate_container_of_every_overlay(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    image = copy / "components" / "image" / "kustomization.yaml"
    image.write_text(image.read_text().replace("newName: tollgate", "newName: reg.example/tg"))
    for overlay in OVERLAYS:
        result = run_tool("kubectl", "kustomize", str(copy / "overlays" / overlay))
        assert result.returncode == 0, result.stderr
        names = {c["name"]: c["image"] for d in yaml.safe_load_all(result.stdout)
                 for s in pod_specs(d) for c in containers(s)}
        tollgate = {n: i for n, i in names.items() if n in ("authz", "ratelimit")}
        assert tollgate and set(tollgate.values()) == {
            f"reg.example/tg:{project_version()}"}, (overlay, names)


# --- every container: hardened, probed, pinned ---------------------------------------

@pytest.mark.parametrize("name", RENDERINGS)
def test_every_container_is_non_root_read_only_capability_free_and_probed(name: str) -> None:
    seen = 0
    for doc in RENDERINGS[name]:
        for spec in pod_specs(doc):
            where = f"{name} {doc['kind']}/{doc['metadata']['name']}"
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000, where
            assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
            assert spec["automountServiceAccountToken"] is False, where
            for c in containers(spec):
                seen += 1
                sc, at = c["securityContext"], f"{where}:{c['name']}"
                assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000, at
                assert sc["readOnlyRootFilesystem"] is True, at
                assert sc["allowPrivilegeEscalation"] is False, at
                assert sc["capabilities"]["drop"] == ["ALL"], at
                assert "add" not in sc["capabilities"], at
                assert sc["seccompProfile"]["type"] == "RuntimeDefault", at
                assert c["resources"]["requests"] and c["resources"]["limits"], at
                assert "livenessProbe" in c and "readinessProbe" in c, at
                for m in c.get("volumeMounts", []):
                    # subPath mounts never see ConfigMap updates: no reload would happen.
                    assert "subPath" not in m, (at, m)
    assert seen >= 1, name


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_image_is_pinned_to_a_version_or_a_digest(name: str) -> None:
    for doc in RENDERINGS[name]:
        for spec in pod_specs(doc):
            for c in containers(spec):
                image = c["image"]
                assert re.fullmatch(
                    r"[\w./-]+(:v?\d+\.\d+\.\d+[\w.-]*)?(@sha256:[0-9a-f]{64})?", image
                ) and (":" in image), f"{name}:{c['name']}: {image}"


def test_the_sockets_volume_is_shared_in_memory() -> None:
    for name in ("k8s/single-replica", "k8s/grpc", "chart/default", "chart/grpc"):
        spec = _workload(RENDERINGS[name])["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["sockets"]["emptyDir"]["medium"] == "Memory"
        for c in containers(spec):
            assert {"name": "sockets", "mountPath": "/var/run/tollgate"} in c["volumeMounts"]


def test_the_envoy_configmap_is_hash_named_and_the_reloaded_ones_are_not() -> None:
    docs = RENDERINGS["k8s/single-replica"]
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    assert {"tollgate-authz", "tollgate-limits"} <= names
    assert any(re.fullmatch(r"tollgate-envoy-[a-z0-9]{10}", n) for n in names), names


def test_istio_objects_agree_with_each_other() -> None:
    docs = RENDERINGS["istio"]
    (mesh,) = yaml.safe_load_all((ISTIO / "mesh-config.yaml").read_text())
    assert (mesh["apiVersion"], mesh["kind"]) == ("install.istio.io/v1alpha1", "IstioOperator")
    (provider,) = mesh["spec"]["meshConfig"]["extensionProviders"]
    grpc = provider["envoyExtAuthzGrpc"]
    assert set(grpc) <= {"service", "port", "timeout", "failOpen", "statusOnError",
                         "includeRequestBodyInCheck", "clearRouteCache"}
    assert grpc["failOpen"] is False
    assert re.fullmatch(r"\d+(\.\d+)?(ms|s)", grpc["timeout"])
    # The provider is the Service, on its gRPC port, and the Service reaches the door.
    service = next(d for d in docs if d["kind"] == "Service")
    meta = service["metadata"]
    assert grpc["service"] == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert grpc["port"] in {p["port"] for p in service["spec"]["ports"]}
    authz = _workload(docs, "tollgate-authz")
    (c,) = authz["spec"]["template"]["spec"]["containers"]
    assert f"--grpc-address=0.0.0.0:{grpc['port']}" in c["args"]
    assert "--http-address=off" in c["args"]
    assert c["readinessProbe"]["grpc"]["port"] == grpc["port"]
    # The policies: CUSTOM with our provider, in namespaces the kustomization creates.
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    (policy,) = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
    assert policy["metadata"]["namespace"] in namespaces
    spec = policy["spec"]
    assert set(spec) <= {"selector", "targetRefs", "action", "provider", "rules"}
    assert spec["action"] == "CUSTOM" and spec["provider"]["name"] == provider["name"]
    assert spec["selector"]["matchLabels"] and spec["rules"]
    for rule in spec["rules"]:
        assert set(rule) <= {"from", "to", "when"}
    (peer,) = [d for d in docs if d["kind"] == "PeerAuthentication"]
    assert peer["metadata"]["namespace"] == meta["namespace"] in namespaces
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    assert peer["spec"]["selector"]["matchLabels"].items() <= \
        authz["spec"]["template"]["metadata"]["labels"].items()
    for ns in namespaces:
        assert next(d for d in docs if d["kind"] == "Namespace" and
                    d["metadata"]["name"] == ns)["metadata"]["labels"]["istio-injection"] \
            == "enabled"


@pytest.mark.parametrize("directory", [K8S_BASE, ISTIO, *(K8S / "components").iterdir()],
                         ids=lambda p: p.name)
def test_each_kustomization_lists_exactly_its_manifests(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    for entry in listed:
        assert (directory / entry).is_file(), entry
    patches = {p["path"] for p in kustomization.get("patches", []) if "path" in p}
    for entry in patches:
        assert (directory / entry).is_file(), entry
    on_disk = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml",
                                                            "mesh-config.yaml"}
    assert listed | patches == on_disk
    for generator in kustomization.get("configMapGenerator", []):
        for entry in generator["files"]:
            assert (directory / entry.split("=", 1)[-1]).is_file(), entry


def test_every_yaml_file_under_deploy_parses() -> None:
    files = [*sorted((K8S.parent).rglob("*.yaml")), K8S.parents[1] / "docker-compose.yml"]
    files = [f for f in files if "/helm/tollgate/templates/" not in str(f)
             and "/helm/tollgate/files/" not in str(f)]
    assert len(files) >= 25
    for path in files:
        list(yaml.safe_load_all(path.read_text()))


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_service_configs_in_the_configmaps_pass_check_config(name: str,
                                                                 tmp_path: Path) -> None:
    """Laid out as the pods mount them: the policy at /etc/tollgate/authz beside the
    rules at /etc/tollgate/limits (the policy says `rules: ../limits`)."""
    docs = RENDERINGS[name]
    checked = 0
    for doc in docs:
        for spec in pod_specs(doc):
            volumes = {v["name"]: v["configMap"]["name"] for v in spec.get("volumes", [])
                       if "configMap" in v}
            data = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
            for c in containers(spec):
                if c["command"][0] not in ("authz-service", "ratelimit-service"):
                    continue
                etc = tmp_path / f"{doc['metadata']['name']}-{c['name']}"
                for m in c["volumeMounts"]:
                    if m["name"] in volumes:
                        directory = etc / m["mountPath"].lstrip("/")
                        directory.mkdir(parents=True)
                        for key, text in data[volumes[m["name"]]].items():
                            (directory / key).write_text(text)
                config = next(a for a in c["args"] if a.startswith("--config=")).split("=")[1]
                result = run_tool(c["command"][0], "--check-config",
                                  str(etc / config.lstrip("/")))
                assert result.returncode == 0, f"{c['name']}: {result.stdout}{result.stderr}"
                checked += 1
    assert checked >= 1


def _envoy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [d for d in configmaps(docs, "envoy.yaml")
             if d["metadata"]["name"].startswith("tollgate-envoy")]
    config: dict[str, Any] = yaml.safe_load(cm["data"]["envoy.yaml"])
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "upstream":  # the backend's Service name differs by design
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
            endpoint["endpoint"]["address"]["socket_address"]["address"] = "BACKEND"
    return config


@pytest.mark.parametrize(("overlay", "case"), [("single-replica", "default"),
                                               ("grpc", "grpc")])
def test_the_chart_renders_the_overlays_envoy_config(overlay: str, case: str) -> None:
    assert _envoy(RENDERINGS[f"chart/{case}"]) == _envoy(RENDERINGS[f"k8s/{overlay}"])


def test_the_chart_and_the_overlays_count_the_same_rules() -> None:
    def rules(docs: list[dict[str, Any]]) -> Any:
        (cm,) = [d for d in docs if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"] == "tollgate-limits"]
        return {k: yaml.safe_load(v) for k, v in cm["data"].items()}

    assert rules(RENDERINGS["chart/default"]) == rules(RENDERINGS["k8s/single-replica"]) \
        == rules(RENDERINGS["k8s/grpc"])
