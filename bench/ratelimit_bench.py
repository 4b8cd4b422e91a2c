"""Decisions per second through real gRPC: memory vs Redis vs Redis Cluster.

One command, one run, side by side on the same machine:

    .venv/bin/python bench/ratelimit_bench.py [--seconds 5] [--clients 4] [--streams 16]

Starts its own redis-server and a 3-master Redis Cluster on free ports, then for each
store runs `ratelimit-service` as its own process and drives ShouldRateLimit with
h2load (gRPC over h2c, `clients x streams` in flight). Every request carries the
demo's two descriptors ([plan, subject] and [remote_address]) under limits high
enough never to trip, so every decision really goes to the store (no local-cache
shortcut). Reports decisions/s, the ratio to memory, the service's CPU microseconds
per decision (/proc/PID/stat), Redis commands per decision (INFO commandstats over
all nodes) and the pure decision cost without transport. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ratelimit_service.adapter import to_query  # noqa: E402
from ratelimit_service.decision import DecisionSettings, counter_ops, decide, plan  # noqa: E402
from ratelimit_service.stores.memory import MemoryStore  # noqa: E402
from tests.ratelimit.redis_procs import RedisProcess, cli, start_cluster  # noqa: E402
from tests.ratelimit.support import descriptor, request, rules_from  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# What the service sends: one script per request (single Redis) or per slot (cluster).
# commandstats also lists the INCRBY/EXPIRE the scripts run inside Redis; those are
# not commands on the wire. (A sliding-window limit on a cluster adds a GET; the
# bench has none.)
CLIENT_COMMANDS = {"evalsha", "eval"}
PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

CONFIG = """
domain: bench
descriptors:
  - key: plan
    descriptors:
      - key: subject
        rate_limit: {unit: second, requests_per_unit: 4000000000}
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_service(config: Path, redis_url: str) -> tuple[subprocess.Popen[str], str]:
    # Info level: the bound address is read from the "serving" log line.
    args = [str(ROOT / ".venv/bin/ratelimit-service"), "--config", str(config),
            "--grpc-address", "127.0.0.1:0", "--log-level", "info", "--log-format", "json"]
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


def measure(name: str, config: Path, body: Path, *, redis_url: str, ports: list[int],
            args: argparse.Namespace, commands: set[str] | None = None) -> dict[str, object]:
    proc, address = start_service(config, redis_url)
    try:
        h2load(address, body, 1, args.clients, args.streams)  # warm-up, connections
        reset_stats(ports)
        cpu0 = cpu_seconds(proc.pid)
        started = time.monotonic()
        done = h2load(address, body, args.seconds, args.clients, args.streams)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(proc.pid) - cpu0
        calls = redis_calls(ports, commands or set()) if ports else 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "store": name,
        "rps": done / elapsed,
        "cpu_us": cpu / done * 1e6 if done else 0.0,
        "cmds": calls / done if ports and done else 0.0,
    }


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
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16)
    args = parser.parse_args()
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
        try:
            rows = [
                measure("memory", config, body, redis_url="", ports=[], args=args),
                measure("redis", config, body, redis_url=single.url, ports=[single.port],
                        args=args, commands=CLIENT_COMMANDS),
                measure("redis cluster (3 masters)", config, body, redis_url=cluster.url,
                        ports=[n.port for n in cluster.nodes], args=args,
                        commands=CLIENT_COMMANDS),
            ]
        finally:
            single.stop()
            cluster.stop()
    pure = pure_decision_us()
    base = float(rows[0]["rps"])  # type: ignore[arg-type]
    print(f"ratelimit-service, {args.seconds:g} s per store, h2load "
          f"{args.clients} clients x {args.streams} streams, 2 descriptors per request\n")
    print("| store | decisions/s | vs memory | service CPU µs/decision | Redis commands/decision |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        rps = float(row["rps"])  # type: ignore[arg-type]
        cmds = f"{row['cmds']:.2f}" if row["store"] != "memory" else "-"
        print(f"| {row['store']} | {rps:,.0f} | {rps / base:.2f}x | {row['cpu_us']:.0f} | {cmds} |")
    print(f"\nPure decision (parse + rule lookup + memory count + decide), no transport: "
          f"{pure:.1f} µs")


if __name__ == "__main__":
    main()
