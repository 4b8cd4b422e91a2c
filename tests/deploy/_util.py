"""Helpers for the deployment-artefact tests: paths, YAML loading, required tools."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support import binary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ISTIO = DEPLOY / "istio"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
HEALTH_SCRIPT = DEPLOY / "docker" / "grpc_health_check.py"

# The Kubernetes release whose OpenAPI schemas the manifests are validated against
# (kubernetes-validate ships schemas per release; 1.30 is the oldest we support).
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")


def load_all(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path}: no YAML documents"
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
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
