"""Render the committed Envoy bootstrap for one environment (run directory, ports).

The files in envoy/ carry the paths and ports of the container images. The local
stack and the tests need their own, so this module swaps the TLS and socket
directories and rewrites listener, admin and upstream addresses, leaving every
policy-relevant setting exactly as committed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"
SIDECAR_CONFIG = ENVOY_DIR / "envoy.yaml"
TLS_DIR = "/etc/tollgate/tls"
SOCKET_DIR = "/var/run/tollgate"


@dataclass(frozen=True)
class EnvoyPorts:
    """Where the rendered Envoy listens and where the application is."""

    https: int = 8443
    mtls: int = 8444
    admin: int = 9901
    upstream: int = 8080
    bind_address: str = "127.0.0.1"


def render(template: Path, tls_dir: Path, socket_dir: Path, ports: EnvoyPorts) -> dict[str, Any]:
    """The bootstrap from `template` with this environment's paths and ports."""
    text = template.read_text()
    text = text.replace(TLS_DIR + "/", f"{tls_dir.resolve()}/")
    text = text.replace(SOCKET_DIR + "/", f"{socket_dir.resolve()}/")
    config: dict[str, Any] = yaml.safe_load(text)
    config["admin"]["address"]["socket_address"].update(address="127.0.0.1",
                                                        port_value=ports.admin)
    listener_ports = {"https": ports.https, "mtls": ports.mtls}
    for listener in config["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(
            address=ports.bind_address, port_value=listener_ports[listener["name"]]
        )
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == "app":
            endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
            endpoint["address"]["socket_address"].update(address="127.0.0.1",
                                                         port_value=ports.upstream)
    return config


def write_rendered(config: dict[str, Any], path: Path) -> Path:
    """Write the bootstrap as JSON (valid YAML, and free of YAML anchors)."""
    path.write_text(json.dumps(config, indent=1))
    return path
