"""The transport floor: a grpc.aio Check server that answers a precomputed OK.

Same bootstrap as authz-service (tollgate.server, uvloop), no decision at all.
"""

from __future__ import annotations

import sys

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

import tollgate  # noqa: F401 - first: it sets gRPC core settings before grpc loads
from tollgate.server import GrpcApp, ServiceSpec, run, serve_until_signal

# isort: split


_OK = external_auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


class EmptyAuthorization(external_auth_pb2_grpc.AuthorizationServicer):
    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return _OK


def main() -> None:
    address = sys.argv[1]
    spec = ServiceSpec(
        "envoy.service.auth.v3.Authorization",
        lambda s: external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            EmptyAuthorization(), s
        ),
    )
    run(lambda: serve_until_signal(GrpcApp(address, [spec]), drain_seconds=1))


if __name__ == "__main__":
    main()
