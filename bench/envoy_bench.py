"""Envoy + Tollgate, side by side with Envoy's own filters, in one run.

    .venv/bin/python -m bench.envoy_bench [--seconds 10] [--connections 32] [--rate 1000]
                                          [--cases local,jwt_authn,...] [--out FILE]

Every case runs the same Envoy 1.40 (one worker). The filters are measured against a
route that answers locally (`direct_response`), so no upstream's cost hides theirs:
Envoy alone (local), native jwt_authn (RS256, uncached and cached), native
local_ratelimit, and each Tollgate door with its floor: the plain-HTTP door
(http_floor: a trivial uvloop + httptools server allowing every Bearer; http_authz:
Tollgate authz, RS256 JWT + scope + headers + metadata, cached token; _limit_memory /
_limit_redis: plus a rate limit decided in the same call; _batched: with
--limits-redis-pipeline-window 500us, so busy checks share Redis calls; _leased: with
--limits-redis-lease-hits 100, blocks of hits reserved per round trip) and the gRPC door
(grpc_floor: an empty grpc.aio handler; grpc_authz...). Envoy's ratelimit filter skips
direct responses, so the two-hop layout (authz over gRPC + ratelimit-service behind
Envoy's ratelimit filter) and ratelimit-service alone are measured against an upstream
(a second listener of the same Envoy answering directly), beside `passthrough`.
Load comes from h2load (`--h1`) at a fixed number of connections, with a
per-request log for exact p50/p99/p99.9, then from bench/paced_load.py at a fixed,
evenly paced rate (h2load's `--rps` sends in bursts: see that file). For each case it
records req/s, latency, CPU microseconds and context switches per request of Envoy and
of each Tollgate process (/proc/PID/stat, /proc/PID/task/*/status), their peak RSS
(VmHWM) and Redis commands per request (INFO commandstats), and writes a Markdown
table with ratios to the baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import paced_load
from bench.procstats import context_switches, cpu_seconds, peak_rss_mb
from tests.kits import jwt_kit
from tests.kits.processes import binary, free_port, stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOCAL_CASES = [
    "local",
    "jwt_authn",
    "jwt_authn_cached",
    "local_ratelimit",
    "http_floor",
    "http_authz",
    "http_authz_limit_memory",
    "http_authz_limit_redis",
    "http_authz_limit_redis_batched",
    "http_authz_limit_redis_leased",
    "grpc_floor",
    "grpc_authz",
    "grpc_authz_limit_memory",
    "grpc_authz_limit_redis",
]
UPSTREAM_CASES = ["passthrough", "ratelimit_memory", "ratelimit_redis", "two_hop"]
ALL_CASES = LOCAL_CASES + UPSTREAM_CASES

AUTHZ_CONFIG = """
identities:
  - name: bench
    jwt:
      issuer: {issuer}
      audiences: [{audience}]
      jwks_file: {jwks}
      algorithms: [RS256]
routes:
  - name: orders-read
    match: {{methods: [GET], path: {{template: "/orders/{{id}}"}}}}
    require: {{scopes: {{all_of: ["orders:read"]}}}}
"""

RATELIMIT_CONFIG = """
domain: bench
descriptors:
  - key: subject
    rate_limit: {unit: second, requests_per_unit: 1000000000}
"""

# The same limit as the ratelimit-service cases, decided inside the Check.
AUTHZ_LIMITS = """
rate_limits:
  rules: {rules}
  domain: bench
  sets:
    - name: per-subject
      stage: after_authz
      descriptors: [{{actions: [{{subject: {{}}}}]}}]
      store_failure_mode: closed
"""


def shipped_http_ext_authz() -> dict[str, Any]:
    """The ext_authz filter of envoy/envoy.yaml (the HTTP layout), as shipped."""
    from tollgate_cli.stack import ENVOY_DIR, render  # noqa: PLC0415

    values = {"RUN_DIR": "/x", "HTTPS_PORT": 1, "MTLS_PORT": 2, "ADMIN_PORT": 3,
              "UPSTREAM_PORT": 4}
    shipped = yaml.safe_load(render(ENVOY_DIR / "envoy.yaml", values))
    hcm = shipped["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for http_filter in hcm["typed_config"]["http_filters"]:
        if http_filter["name"] == "envoy.filters.http.ext_authz":
            config: dict[str, Any] = http_filter["typed_config"]
            config["http_service"]["server_uri"] = {
                "uri": "http://authz", "cluster": "authz", "timeout": "2s"}
            return config
    raise SystemExit("envoy/envoy.yaml has no ext_authz filter")


def uds_cluster(name: str, socket: Path) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(socket)}}}}]}]},
    }








def grpc_cluster(name: str, socket: Path) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(socket)}}}}]}
            ],
        },
    }


def envoy_config(case: str, port: int, admin: int, work: Path, jwks: dict[str, Any]) -> str:
    filters: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    upstream_port = free_port()
    if case in UPSTREAM_CASES:
        # Envoy's ratelimit filter skips direct_response routes: these route to an
        # upstream, a second listener of the same Envoy that answers directly.
        route: dict[str, Any] = {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
        clusters.append({
            "name": "upstream",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": upstream_port}}}}]}]},
        })
    else:
        route = {"match": {"prefix": "/"},
                 "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
    if case.startswith("jwt_authn"):
        provider: dict[str, Any] = {
            "issuer": jwt_kit.ISSUER,
            "audiences": [jwt_kit.AUDIENCE],
            "local_jwks": {"inline_string": json.dumps(jwks)},
            "forward": True,
        }
        if case == "jwt_authn_cached":
            provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
        filters.append({
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"bench": provider},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
            },
        })
    if case == "local_ratelimit":
        filters.append({
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "stat_prefix": "bench",
                "token_bucket": {
                    "max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"
                },
                "filter_enabled": {"default_value": {"numerator": 100}},
                "filter_enforced": {"default_value": {"numerator": 100}},
            },
        })
    if case.startswith("http_"):
        filters.append({"name": "envoy.filters.http.ext_authz",
                        "typed_config": shipped_http_ext_authz()})
        clusters.append(uds_cluster("authz", work / "authz.sock"))
    if case.startswith("grpc_") or case == "two_hop":
        filters.append({
            "name": "envoy.filters.http.ext_authz",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
                "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "2s"},
                "transport_api_version": "V3",
                "failure_mode_allow": False,
            },
        })
        clusters.append(grpc_cluster("authz", work / "authz.sock"))
    if case.startswith("ratelimit_") or case == "two_hop":
        filters.append({
            "name": "envoy.filters.http.ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                "domain": "bench",
                "failure_mode_deny": True,
                "timeout": "2s",
                "rate_limit_service": {
                    "grpc_service": {"envoy_grpc": {"cluster_name": "ratelimit"}},
                    "transport_api_version": "V3",
                },
            },
        })
        route["route_rate_limits"] = [{
            "actions": [{
                "request_headers": {"header_name": "x-subject", "descriptor_key": "subject"}
            }]
        }]
        clusters.append(grpc_cluster("ratelimit", work / "ratelimit.sock"))
    filters.append({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    })
    vhost: dict[str, Any] = {"name": "bench", "domains": ["*"], "routes": [route]}
    if "route_rate_limits" in route:
        vhost["rate_limits"] = route.pop("route_rate_limits")
    upstream_listener = {
        "name": "upstream",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": upstream_port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "upstream",
                "route_config": {"virtual_hosts": [{"name": "upstream", "domains": ["*"], "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                }]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    }
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [upstream_listener, {
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "route_config": {"virtual_hosts": [vhost]},
                        "http_filters": filters,
                    },
                }]}],
            }],
            "clusters": clusters,
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class Processes:
    envoy: subprocess.Popen[bytes]
    services: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: subprocess.Popen[bytes] | None = None
    redis_port: int = 0

    def all(self) -> dict[str, subprocess.Popen[bytes]]:
        return {"envoy": self.envoy, **self.services}

    def stop(self) -> None:
        for proc in [*self.services.values(), self.envoy, *([self.redis] if self.redis else [])]:
            stop_process(proc)


def redis_commands(port: int) -> int:
    out = subprocess.run(
        [binary("redis-cli"), "-p", str(port), "info", "commandstats"],
        capture_output=True, text=True, check=True,
    ).stdout
    total = 0
    for line in out.splitlines():
        if line.startswith("cmdstat_") and not line.startswith(("cmdstat_info", "cmdstat_ping")):
            total += int(line.split("calls=")[1].split(",")[0])
    return total


def start_case(case: str, work: Path, port: int, jwks: dict[str, Any]) -> Processes:
    admin = free_port()
    config = work / f"envoy-{case}.yaml"
    config.write_text(envoy_config(case, port, admin, work, jwks))
    services: dict[str, subprocess.Popen[bytes]] = {}
    redis = None
    redis_port = 0
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if "_redis" in case:
        redis_port = free_port()
        redis = subprocess.Popen(
            [binary("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"], **quiet,
        )
        wait_for(lambda: _redis_ready(redis_port), 20, "redis")
    redis_url = f"redis://127.0.0.1:{redis_port}/0" if redis else ""
    sock = f"unix:{work}/authz.sock"
    if case in ("http_floor", "grpc_floor"):
        floor = "empty_http_authz.py" if case == "http_floor" else "empty_authz.py"
        services["authz"] = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / floor), sock], **quiet)
    elif case.startswith(("http_", "grpc_")) or case == "two_hop":
        door = "--http-address" if case.startswith("http_") else "--grpc-address"
        other = "--grpc-address" if door == "--http-address" else "--http-address"
        policy = "authz-limits.yaml" if "_limit_" in case else "authz.yaml"
        store_flags = {"_batched": ["--limits-redis-pipeline-window", "500us"],
                       "_leased": ["--limits-redis-lease-hits", "100"]}.get(
                           case[case.rfind("_"):], [])
        services["authz"] = subprocess.Popen(
            [binary("authz-service"), door, sock, other, "off", "--config", str(work / policy),
             "--limits-redis-url", redis_url, *store_flags, "--log-level", "error"], **quiet,
        )
    if "authz" in services:
        wait_for((work / "authz.sock").exists, 30, "authz socket")
    if case.startswith("ratelimit_") or case == "two_hop":
        argv = [binary("ratelimit-service"), "--config", str(work / "ratelimit.yaml"),
                "--grpc-address", f"unix:{work}/ratelimit.sock", "--log-level", "error"]
        if redis_url:
            argv += ["--redis-url", redis_url]
        services["ratelimit"] = subprocess.Popen(argv, **quiet)
        wait_for((work / "ratelimit.sock").exists, 30, "ratelimit socket")
    envoy = subprocess.Popen(
        [binary("envoy"), "-c", str(config), "--concurrency", "1", "--log-level", "error",
         "--base-id", str(port)], **quiet,
    )
    procs = Processes(envoy, services, redis, redis_port)
    return procs


def _redis_ready(port: int) -> bool:
    result = subprocess.run(
        [binary("redis-cli"), "-p", str(port), "ping"], capture_output=True, text=True,
        check=False,
    )
    return result.stdout.strip() == "PONG"


def h2load(
    url: str, headers: list[str], *, seconds: float, connections: int, log: Path
) -> dict[str, float]:
    log.unlink(missing_ok=True)  # h2load appends to an existing log file
    argv = [binary("h2load"), "--h1", "-c", str(connections)]
    argv += ["-D", str(int(seconds)), "--log-file", str(log)]
    for header in headers:
        argv += ["-H", header]
    result = subprocess.run([*argv, url], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"h2load failed ({result.returncode}): {result.stderr or result.stdout}")
    out = result.stdout
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            statuses[int(parts[1])] = statuses.get(int(parts[1]), 0) + 1
            latencies.append(int(parts[2]) / 1000.0)  # microseconds -> ms
    latencies.sort()
    done = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(int(p * done), done - 1)] if done else float("nan")

    rps = 0.0
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
    ok = statuses.get(200, 0) / done if done else 0.0
    return {"rps": rps, "p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "requests": done,
            "ok": ok}


def run_case(case: str, work: Path, args: argparse.Namespace, token: str,
             jwks: dict[str, Any]) -> dict[str, Any]:
    port = free_port()
    procs = start_case(case, work, port, jwks)
    try:
        url = f"http://127.0.0.1:{port}/orders/42"
        headers = [f"authorization: Bearer {token}", "x-subject: bench-user"]
        wait_for(lambda: _http_ok(url, headers), 30, f"envoy for {case}")
        results: dict[str, Any] = {"case": case}
        # A separate warm-up run, so that the CPU and context switches counted
        # below belong to exactly the requests in the measured run's log.
        h2load(url, headers, seconds=1, connections=args.connections, log=work / "h2w.log")
        cpu0 = {name: cpu_seconds(p.pid) for name, p in procs.all().items()}
        switches0 = {name: context_switches(p.pid) for name, p in procs.all().items()}
        redis0 = redis_commands(procs.redis_port) if procs.redis else 0
        load = h2load(url, headers, seconds=args.seconds, connections=args.connections,
                      log=work / "h2.log")
        cpu1 = {name: cpu_seconds(p.pid) for name, p in procs.all().items()}
        switches1 = {name: context_switches(p.pid) for name, p in procs.all().items()}
        redis1 = redis_commands(procs.redis_port) if procs.redis else 0
        results.update(load)
        n = max(load["requests"], 1)
        results["cpu_us"] = {name: (cpu1[name] - cpu0[name]) / n * 1e6 for name in cpu0}
        results["switches"] = {name: (switches1[name] - switches0[name]) / n for name in cpu0}
        results["redis_per_req"] = (redis1 - redis0) / n if procs.redis else None
        results["fixed"] = paced_load.measure(url, headers, args.rate, args.seconds)
        results["rss_mb"] = {name: peak_rss_mb(p.pid) for name, p in procs.all().items()}
        return results
    finally:
        procs.stop()
        for sock in ("authz.sock", "ratelimit.sock"):
            (work / sock).unlink(missing_ok=True)


def _http_ok(url: str, headers: list[str]) -> bool:
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
    for header in headers:
        argv += ["-H", header]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=False).stdout
    return out == "200"


def reference(case: str) -> str | None:
    """What a case is compared with beyond jwt_authn: its floor, or its door without limits."""
    if "_limit_" in case:
        return case.split("_limit_", maxsplit=1)[0]
    if case in ("http_authz", "grpc_authz"):
        return case.replace("_authz", "_floor")
    return None


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    base = {r["case"]: r for r in rows}
    native = base.get("jwt_authn")
    lines = [
        f"Envoy 1.40, 1 worker; h2load --h1, {args.connections} connections, "
        f"{args.seconds:.0f} s per case (after a 1 s warm-up); then {args.rate} req/s "
        f"evenly paced (bench/paced_load.py) for the fixed-rate columns. `vs Envoy alone`: "
        f"against `local` (a direct response) or, for the cases behind Envoy's ratelimit "
        f"filter, `passthrough` (an upstream). `vs ref`: an authz door against its floor, "
        f"a rate-limited case against the same door without limits.",
        "",
        "| case | req/s | vs Envoy alone | vs jwt_authn | vs ref | p50 ms | p99 ms | p99.9 ms "
        "| p50 / p99 @ rate ms | added p99 @ rate | CPU µs/req (envoy / authz / ratelimit) "
        "| context switches/req (envoy / authz / ratelimit) "
        "| peak RSS MB | Redis cmds/req | 200s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|",
    ]

    def ratio(row: dict[str, Any], other: dict[str, Any] | None) -> str:
        return f"{row['rps'] / other['rps']:.2f}x" if other else "-"

    for r in rows:
        alone = base.get("passthrough" if r["case"] in UPSTREAM_CASES else "local")
        ref_name = reference(r["case"])
        added = f"{r['fixed']['p99'] - alone['fixed']['p99']:+.2f}" if alone else "-"
        cpu = " / ".join(f"{r['cpu_us'].get(n, 0):.0f}" for n in ("envoy", "authz", "ratelimit"))
        switches = " / ".join(
            f"{r['switches'].get(n, 0):.1f}" for n in ("envoy", "authz", "ratelimit")
        )
        rss = " / ".join(f"{v:.0f}" for v in r["rss_mb"].values())
        redis = f"{r['redis_per_req']:.2f}" if r["redis_per_req"] is not None else "-"
        lines.append(
            f"| {r['case']} | {r['rps']:.0f} | {ratio(r, alone)} | {ratio(r, native)} "
            f"| {ratio(r, base.get(ref_name)) if ref_name else '-'} "
            f"| {r['p50']:.2f} | {r['p99']:.2f} | {r['p999']:.2f} "
            f"| {r['fixed']['p50']:.2f} / {r['fixed']['p99']:.2f} "
            f"| {added} | {cpu} | {switches} | {rss} | {redis} | {r['ok']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--cases", default=",".join(ALL_CASES))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "envoy_bench.md"))
    args = parser.parse_args()
    if shutil.which("curl") is None:
        raise SystemExit("curl is required (./scripts/test installs it)")

    work = Path(tempfile.mkdtemp(prefix="tollgate-envoy-bench-"))
    key = jwt_kit.rsa_key("bench-rsa")
    jwks = jwt_kit.jwks(key)
    (work / "jwks.json").write_text(json.dumps(jwks))
    (work / "authz.yaml").write_text(AUTHZ_CONFIG.format(
        issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE, jwks=work / "jwks.json"))
    (work / "ratelimit.yaml").write_text(RATELIMIT_CONFIG)
    (work / "authz-limits.yaml").write_text(
        (work / "authz.yaml").read_text() + AUTHZ_LIMITS.format(rules=work / "ratelimit.yaml"))
    token = jwt_kit.mint(key, exp=int(time.time()) + 3600)

    rows = []
    for case in args.cases.split(","):
        print(f"== {case}", flush=True)
        rows.append(run_case(case, work, args, token, jwks))
    report = table(rows, args)
    print("\n" + report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Envoy benchmark\n\nReproduce: `.venv/bin/python -m bench.envoy_bench`\n\n" + report + "\n"
    )
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
