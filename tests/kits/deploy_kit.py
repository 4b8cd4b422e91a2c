"""Helpers for the deployment-artefact tests: paths, YAML loading, renderings, tools."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.kits.processes import binary
from tests.kits.references import Image

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
K8S_BASE = K8S / "base"
OVERLAYS = ("single-replica", "shared-limits", "grpc")
ISTIO = DEPLOY / "istio"
CHART = DEPLOY / "helm" / "tollgate"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
HEALTH_SCRIPT = DEPLOY / "docker" / "grpc_health_check.py"
HTTP_HEALTH_SCRIPT = DEPLOY / "docker" / "http_health_check.py"

# The Kubernetes release whose OpenAPI schemas the manifests are validated against
# (kubernetes-validate ships schemas per release; 1.30 is the oldest we support).
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")

# Chart values the tests render, by name: the default, and one per way to run it.
CHART_CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "shared-limits": {"limits": {"store": "redis"}, "autoscaling": {"enabled": True},
                      "podDisruptionBudget": {"enabled": True}},
    "grpc": {"layout": "grpc", "limits": {"store": "redis"}, "replicas": 2,
             "podDisruptionBudget": {"enabled": True}},
    "own-redis-and-tls": {"limits": {"store": "redis", "storeFailureMode": "closed"},
                          "redis": {"deploy": False, "existingSecret": "my-redis"},
                          "tls": {"certManager": {"enabled": False}, "secretName": "my-tls"},
                          "backend": {"deploy": False, "host": "orders", "port": 8080},
                          "image": {"digest": "sha256:" + "ab" * 32},
                          "tracing": {"otlpEndpoint": "http://otel:4317"},
                          "metrics": {"enabled": False}},
    "monitoring": {"layout": "grpc", "limits": {"store": "redis"},
                   "monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "prom"}},
                                  "prometheusRule": {"enabled": True},
                                  "grafanaDashboard": {"enabled": True}}},
    "cluster-issuer-and-namespace": {
        "tls": {"certManager": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer",
                                              "group": "cert-manager.io"},
                                "dnsNames": ["api.example.com"]}},
        "namespace": {"create": True}},
}
# What the cluster provides for those cases (created by hand or by the operator).
CHART_EXTERNAL: dict[str, list[dict[str, Any]]] = {
    "own-redis-and-tls": [
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "my-redis", "namespace": "tollgate"},
         "stringData": {"url": "rediss://redis.example.com:6380/0"}},
        {"apiVersion": "v1", "kind": "Secret",
         "metadata": {"name": "my-tls", "namespace": "tollgate"},
         "stringData": {"tls.crt": "", "tls.key": ""}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "orders", "namespace": "tollgate"},
         "spec": {"ports": [{"port": 8080}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "otel", "namespace": "tollgate"},
         "spec": {"ports": [{"port": 4317}]}},
    ],
}


def load_all(path: Path) -> list[dict[str, Any]]:
    return parse_all(path.read_text(), str(path))


def parse_all(text: str, where: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs, f"{where}: no YAML documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{where}: a document is not a mapping"
    return docs


def manifest_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.glob("*.yaml") if p.name != "kustomization.yaml")
    assert files, f"no manifests under {directory}"
    return files


def pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if doc.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        yield doc["spec"]["template"]["spec"]


def run_tool(name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a required tool (fails loudly when absent) and capture its output."""
    return subprocess.run([binary(name), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@functools.cache
def _kustomize_text(directory: Path) -> str:
    # kubectl's built-in kustomize (v5: components, configMapGenerator options); the
    # machines have it from their image, Debian's kubernetes-client (1.20) is too old.
    if shutil.which("kubectl") is None:
        raise AssertionError("kubectl >= 1.27 (kustomize v5) is needed to render deploy/k8s")
    result = run_tool("kubectl", "kustomize", str(directory), timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return result.stdout


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` (kustomize v5, built into kubectl), parsed; a fresh copy."""
    return parse_all(_kustomize_text(directory), str(directory))


@functools.cache
def _chart_text(case: str) -> str:
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(CHART_CASES[case], name="tollgate", namespace="tollgate",
                                is_install=True)
    return "\n---\n".join(text for path, text in sorted(rendered.items())
                          if path.endswith(".yaml"))


def helm_render(case: str) -> list[dict[str, Any]]:
    """The chart rendered by Helm's engine with CHART_CASES[case]; a fresh copy."""
    return parse_all(_chart_text(case), f"chart ({case})")


def renderings() -> dict[str, list[dict[str, Any]]]:
    """Every shipped Kubernetes rendering, by name: kustomize overlays, Istio, the chart."""
    out = {f"k8s/{o}": kustomize(K8S / "overlays" / o) for o in OVERLAYS}
    out["istio"] = kustomize(ISTIO)
    out.update({f"chart/{case}": helm_render(case) for case in CHART_CASES})
    return out


def configmaps(docs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "ConfigMap" and key in d.get("data", {})]


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def tollgate_image() -> Image:
    """The commands the Dockerfile's runtime stage puts on PATH: the project's scripts
    and what it copies into /usr/local/bin."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = DOCKERFILE.read_text().split(" AS runtime", 1)[1]
    copied = re.findall(r"^COPY .* /usr/local/bin/([\w-]+)$", runtime, re.M)
    return Image("tollgate", frozenset({*project["scripts"], *copied, "python"}))


def shipped_envoy_configs() -> dict[str, str]:
    """Every Envoy bootstrap the project ships, by where it comes from: envoy/ (rendered
    as `tollgate up` renders it), Compose, the Kubernetes overlays and the chart cases
    (as rendered), the stand-in backends."""
    from tollgate_cli.stack import ENVOY_DIR, render

    values: dict[str, str | int] = {"RUN_DIR": "/run/tollgate", "HTTPS_PORT": 8443,
                                    "MTLS_PORT": 8444, "ADMIN_PORT": 9901,
                                    "UPSTREAM_PORT": 8080}
    out = {f"envoy/{p.name}": render(p, values) for p in sorted(ENVOY_DIR.glob("*.yaml"))}
    out.update({f"compose/{p.name}": p.read_text()
                for p in sorted(COMPOSE_DIR.glob("envoy*.yaml"))})
    for name, docs in renderings().items():
        for cm in configmaps(docs, "envoy.yaml"):
            stable = re.sub(r"-[a-z0-9]{10}$", "", cm["metadata"]["name"])  # kustomize's hash
            out[f"{name}:{stable}"] = cm["data"]["envoy.yaml"]
    return out


def is_http_layout(config: dict[str, Any]) -> bool:
    """An Envoy config whose ext_authz filter is the HTTP-door layout (http_service)."""
    return any(f["typed_config"].get("http_service") is not None for f in ext_authz_filters(config))


def ext_authz_filters(config: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for listener in config["static_resources"].get("listeners", []):
        for chain in listener["filter_chains"]:
            for network in chain["filters"]:
                for http_filter in network["typed_config"].get("http_filters", []):
                    if http_filter["name"] == "envoy.filters.http.ext_authz":
                        found.append(http_filter)
    return found
