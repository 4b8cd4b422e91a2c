"""Envoy ext_authz decision service: identity, route policy, RFC 6750 answers."""

import tollgate  # noqa: F401 - sets gRPC core settings before anything imports grpc
