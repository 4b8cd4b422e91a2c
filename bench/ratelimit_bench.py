"""Decisions per second through real gRPC: memory vs Redis vs Redis Cluster.

One command, one run, side by side on the same machine:

    .venv/bin/python -m bench.ratelimit_bench [--seconds 4] [--rounds 3] [--clients 4] [--streams 16]

Starts its own redis-server and a 3-master Redis Cluster on free ports and one
`ratelimit-service` process per store (all started first, idle while another is
measured), then drives ShouldRateLimit with h2load (gRPC over h2c, `clients x
streams` in flight), the stores alternated over `--rounds` rounds so that a busy
moment on the shared machine hits every store alike; each round's ratio to memory is
reported and their median. Every request carries the demo's two descriptors
([plan, subject] and [remote_address]) under limits high enough never to trip, so
every decision really goes to the store (no local-cache shortcut). Also reports the
service's CPU microseconds per decision (/proc/PID/stat), the script calls sent per
decision (EVALSHA/EVAL on the wire, INFO commandstats over all nodes) and the pure
decision cost without transport. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from bench.procstats import cpu_seconds
from ratelimit_service.adapter import to_query
from ratelimit_service.decision import DecisionSettings, counter_ops, decide, plan
from ratelimit_service.stores.memory import MemoryStore
from tests.kits.processes import free_port
from tests.kits.ratelimit_kit import descriptor, request, rules_from
from tests.kits.redis_procs import RedisProcess, cli, start_cluster

ROOT = Path(__file__).resolve().parent.parent


CLK_TCK = os.sysconf("SC_CLK_TCK")
# What the service sends: script calls, each carrying the counters of one or more
# requests (single Redis) or of one slot (cluster). commandstats also lists the
# INCRBY/EXPIRE the scripts run inside Redis; those are not commands on the wire.
CLIENT_COMMANDS = {"evalsha", "eval"}
PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

# [plan, subject] has stacked windows (per second and per day), [remote_address] one:
# three counters per request, which must still cost at most one script call.
CONFIG = """
domain: bench
descriptors:
  - key: plan
    descriptors:
      - key: subject
        rate_limits:
          - {unit: second, requests_per_unit: 4000000000}
          - {unit: day, requests_per_unit: 4000000000}
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 4000000000}
"""


def bench_request() -> bytes:
    req = request(
        "bench",
        descriptor(("plan", "free"), ("subject", "alice")),
        descriptor(("remote_address", "10.1.2.3")),
    )
    return req.SerializeToString()






def start_service(config: Path, redis_url: str, workers: int = 1,
                  address: str = "127.0.0.1:0",
                  extra: list[str] | None = None) -> tuple[subprocess.Popen[str], str]:
    # Info level: the bound address is read from the "serving" log line.
    args = [str(ROOT / ".venv/bin/ratelimit-service"), "--config", str(config),
            "--grpc-address", address, "--log-level", "info", "--log-format", "json",
            "--workers", str(workers), *(extra or [])]
    if redis_url:
        args += ["--redis-url", redis_url]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError("ratelimit-service exited")
            continue
        entry = json.loads(line)
        if entry.get("msg") == "serving":
            # Drain the rest of stderr in the background so the pipe never fills.
            subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
            return proc, str(entry["address"])
    raise RuntimeError("ratelimit-service did not start")


def h2load(address: str, body: Path, seconds: float, clients: int, streams: int) -> int:
    """Run h2load for `seconds`; returns the number of successful requests."""
    out = subprocess.run(
        ["h2load", "-D", str(max(1, round(seconds))), "-c", str(clients), "-m", str(streams),
         "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://{address}{PATH}"],
        capture_output=True, text=True, check=True,
    ).stdout
    found = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if found is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    return int(found.group(1))


def redis_calls(ports: list[int], commands: set[str]) -> int:
    total = 0
    for port in ports:
        for line in cli(port, "INFO", "commandstats").splitlines():
            name = line.partition(":")[0].removeprefix("cmdstat_")
            # Commands the service sent (scripts' inner calls are listed separately).
            if name in commands:
                total += int(re.search(r"calls=(\d+)", line).group(1))  # type: ignore[union-attr]
    return total


def reset_stats(ports: list[int]) -> None:
    for port in ports:
        cli(port, "CONFIG", "RESETSTAT")


class Service:
    """One ratelimit-service process on one store (and the Redis processes it uses)."""

    def __init__(self, name: str, config: Path, redis_url: str, ports: list[int], *,
                 redis_pids: list[int] | None = None, extra: list[str] | None = None) -> None:
        self.name = name
        self.ports = ports
        self.redis_pids = redis_pids or []
        self.proc, self.address = start_service(config, redis_url, extra=extra)
        self.rounds: list[dict[str, float]] = []

    def measure(self, body: Path, args: argparse.Namespace, *, warm_up: bool = False) -> None:
        if warm_up:
            h2load(self.address, body, 1, args.clients, args.streams)  # connections, scripts
            return
        reset_stats(self.ports)
        cpu0 = cpu_seconds(self.proc.pid)
        redis0 = sum(cpu_seconds(pid) for pid in self.redis_pids)
        started = time.monotonic()
        done = h2load(self.address, body, args.seconds, args.clients, args.streams)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(self.proc.pid) - cpu0
        redis_cpu = sum(cpu_seconds(pid) for pid in self.redis_pids) - redis0
        calls = redis_calls(self.ports, CLIENT_COMMANDS) if self.ports else 0
        self.rounds.append({
            "rps": done / elapsed,
            "cpu_us": cpu / done * 1e6 if done else 0.0,
            "redis_us": redis_cpu / done * 1e6 if done else 0.0,
            "calls": calls / done if done else 0.0,
        })

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK, sum(fields) / CLK_TCK


def workers_ratio(config: Path, body: Path, single: RedisProcess,
                  args: argparse.Namespace) -> list[dict[str, float]]:
    """--workers 1 vs 2 on Redis, alternated; 8 connections so SO_REUSEPORT spreads them.
    Per run: decisions/s, the service's CPU (all workers), redis-server's and h2load's,
    and how busy the whole machine was (every core, whoever used it)."""
    services = []
    for workers in (1, 2):
        address = f"127.0.0.1:{free_port()}"
        services.append(start_service(config, single.url, workers, address))
    redis_pid = single.proc.pid if single.proc is not None else 0
    runs: list[dict[str, float]] = []
    try:
        for _, bound in services:
            h2load(bound, body, 1, 8, args.streams)
        for _ in range(args.rounds):
            for workers, (proc, bound) in enumerate(services, start=1):
                service0, redis0 = cpu_seconds(proc.pid), cpu_seconds(redis_pid)
                load0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                busy0, total0 = machine_busy()
                started = time.monotonic()
                done = h2load(bound, body, args.seconds, 8, args.streams)
                elapsed = time.monotonic() - started
                load1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                busy1, total1 = machine_busy()
                runs.append({
                    "workers": workers, "rps": done / elapsed,
                    "service": (cpu_seconds(proc.pid) - service0) / elapsed,
                    "redis": (cpu_seconds(redis_pid) - redis0) / elapsed,
                    "h2load": (load1.ru_utime + load1.ru_stime - load0.ru_utime
                               - load0.ru_stime) / elapsed,
                    "machine": (busy1 - busy0) / (total1 - total0) * os.cpu_count(),  # type: ignore[operator]
                })
    finally:
        for proc, _ in services:
            proc.terminate()
            proc.wait(timeout=30)
    return runs


def pure_decision_us(n: int = 20000) -> float:
    """plan + counter ops + in-memory apply + decide, with the adapter's parse."""
    rules = rules_from(CONFIG)
    store = MemoryStore()
    settings = DecisionSettings()
    raw = bench_request()
    from envoy.service.ratelimit.v3 import rls_pb2  # noqa: PLC0415

    now = time.time()
    started = time.perf_counter()
    for _ in range(n):
        query = to_query(rls_pb2.RateLimitRequest.FromString(raw))
        checks = plan(rules, query)
        usages = store.apply_now(counter_ops(checks, query.domain), now)
        decide(checks, usages, settings)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--window", default="2ms",
                        help="the --redis-pipeline-window of the windowed rows")
    parser.add_argument("--workers-only", action="store_true",
                        help="only compare --workers 1 and 2 (on Redis)")
    args = parser.parse_args()
    if args.workers_only:
        workers_main(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "bench.yaml"
        config.write_text(CONFIG)
        body = work / "request.bin"
        payload = bench_request()
        body.write_bytes(b"\x00" + struct.pack(">I", len(payload)) + payload)
        (work / "single").mkdir()
        single = RedisProcess(work / "single")
        single.start()
        cluster = start_cluster(work / "cluster")
        services: list[Service] = []
        try:
            cluster_pids = [n.proc.pid for n in cluster.nodes if n.proc is not None]
            single_pid = [single.proc.pid] if single.proc is not None else []
            window = ["--redis-pipeline-window", args.window]
            services = [
                Service("memory", config, "", []),
                Service("redis", config, single.url, [single.port], redis_pids=single_pid),
                Service(f"redis, --redis-pipeline-window {args.window}", config, single.url,
                        [single.port], redis_pids=single_pid, extra=window),
                Service("redis cluster (3 masters)", config, cluster.url,
                        [n.port for n in cluster.nodes], redis_pids=cluster_pids),
                Service(f"redis cluster, --redis-pipeline-window {args.window}", config,
                        cluster.url, [n.port for n in cluster.nodes], redis_pids=cluster_pids,
                        extra=window),
            ]
            for service in services:
                service.measure(body, args, warm_up=True)
            for _ in range(args.rounds):
                for service in services:
                    service.measure(body, args)
        finally:
            for service in services:
                service.stop()
            single.stop()
            cluster.stop()
    pure = pure_decision_us()
    print(f"ratelimit-service, {args.seconds:g} s per store per round, {args.rounds} rounds "
          f"alternated, h2load {args.clients} clients x {args.streams} streams, "
          f"2 descriptors per request\n")
    print("| store | decisions/s (median) | vs memory, per round | vs memory (median) "
          "| service CPU µs/decision | redis-server CPU µs/decision | script calls/decision |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    memory = services[0].rounds
    for service in services:
        rounds = service.rounds
        ratios = [r["rps"] / m["rps"] for r, m in zip(rounds, memory, strict=True)]
        rps = statistics.median(r["rps"] for r in rounds)
        cpu = statistics.median(r["cpu_us"] for r in rounds)
        redis_cpu = "-" if not service.ports else \
            f"{statistics.median(r['redis_us'] for r in rounds):.0f}"
        calls = "-" if not service.ports else f"{statistics.median(r['calls'] for r in rounds):.2f}"
        per_round = ", ".join(f"{x:.2f}" for x in ratios)
        print(f"| {service.name} | {rps:,.0f} | {per_round} | {statistics.median(ratios):.2f}x "
              f"| {cpu:.0f} | {redis_cpu} | {calls} |")
    print(f"\nPure decision (parse + rule lookup + memory count + decide), no transport: "
          f"{pure:.1f} µs")


def workers_main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "bench.yaml"
        config.write_text(CONFIG)
        body = work / "request.bin"
        payload = bench_request()
        body.write_bytes(b"\x00" + struct.pack(">I", len(payload)) + payload)
        (work / "single").mkdir()
        single = RedisProcess(work / "single")
        single.start()
        try:
            runs = workers_ratio(config, body, single, args)
        finally:
            single.stop()
    print(f"ratelimit-service on Redis, --workers 1 vs 2, {args.seconds:g} s each, "
          f"{args.rounds} rounds alternated, h2load 8 clients x {args.streams} streams, "
          f"{os.cpu_count()} cores\n")
    print("| round | workers | decisions/s | 2 vs 1 | cores used: service | redis-server "
          "| h2load | whole machine (every process) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for i in range(0, len(runs), 2):
        one, two = runs[i], runs[i + 1]
        ratios.append(two["rps"] / one["rps"])
        for run in (one, two):
            ratio = f"{ratios[-1]:.2f}x" if run is two else ""
            print(f"| {i // 2 + 1} | {run['workers']:.0f} | {run['rps']:,.0f} | {ratio} "
                  f"| {run['service']:.2f} | {run['redis']:.2f} | {run['h2load']:.2f} "
                  f"| {run['machine']:.2f} |")
    print(f"\nMedian 2 vs 1: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
