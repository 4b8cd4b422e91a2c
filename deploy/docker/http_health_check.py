#!/opt/venv/bin/python
"""HTTP probe for authz-service's plain-HTTP door (installed as `tollgate-http-health`).

    tollgate-http-health unix:/var/run/tollgate/authz.sock /ready
    tollgate-http-health 127.0.0.1:9192 /healthz

Exit 0 when GET PATH answers 200, 1 otherwise (503 from /ready while draining after
SIGTERM, unreachable, timeout). Used by Kubernetes exec probes and Compose
healthchecks: kubelet's own `httpGet:` probe dials the pod IP, and the door listens on
a Unix socket there. Standard library only, so a probe costs a Python start-up and
nothing more.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys
from collections.abc import Sequence


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def _connection(address: str, timeout: float) -> http.client.HTTPConnection:
    if address.startswith("unix:"):
        return _UnixConnection(address[len("unix:"):].removeprefix("//"), timeout)
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address}: expected HOST:PORT or unix:PATH")
    return http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollgate-http-health", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("address", help="HOST:PORT or unix:PATH")
    parser.add_argument("path", nargs="?", default="/ready", help="default /ready")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds (default 2)")
    args = parser.parse_args(argv)
    try:
        conn = _connection(args.address, args.timeout)
        try:
            conn.request("GET", args.path)
            status = conn.getresponse().status
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        print(f"{args.address}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"{args.address}{args.path}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
