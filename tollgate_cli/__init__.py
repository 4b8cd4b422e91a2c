"""The `tollgate` operator and developer command: the local stack (`up`), the demo
issuer, upstream and certificates, token minting, config checks, rate-limit counters.

Tooling, above both services: it may import them; the shared core (`tollgate`) and
the services never import it.
"""

from __future__ import annotations

from tollgate import grpc_env  # noqa: F401 - first: grpc reads it when imported
