"""Envoy's rate-limit service (envoy.service.ratelimit.v3), drop-in for envoyproxy/ratelimit.

Pure parts: `rules` (compiled lookup tree), `algorithms`, `decision`. I/O parts:
`stores` (memory, Redis, Redis Cluster), `adapter` (protobuf), `service` (gRPC), `cli`.
"""

from __future__ import annotations

import tollgate  # noqa: F401 - sets gRPC core settings before anything imports grpc
