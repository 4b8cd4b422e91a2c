#!/opt/venv/bin/python
"""grpc.health.v1 probe for the Tollgate sidecars (installed as `tollgate-grpc-health`).

    tollgate-grpc-health unix:/var/run/tollgate/authz.sock
    tollgate-grpc-health 127.0.0.1:8081 --service envoy.service.ratelimit.v3.RateLimitService

Exit 0 when the server answers SERVING, 1 otherwise (NOT_SERVING while draining after
SIGTERM, unreachable, timeout). Used by Kubernetes exec probes and Compose healthchecks:
kubelet's own `grpc:` probe needs a TCP port on the pod IP, and the sidecars listen on a
unix socket only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollgate-grpc-health", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address", help="HOST:PORT or unix:PATH")
    parser.add_argument("--service", default="", help="service name ('' = the whole server)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=args.service),
                                  timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"{args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"{args.address}: {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
