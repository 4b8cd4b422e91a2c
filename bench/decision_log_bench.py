"""What the decision log adds per decision, and to the service's p99 under load.

    .venv/bin/python -m bench.decision_log_bench [--decisions 100000] [--rate 1500] [--seconds 5]

1. In process, the pipeline alone (no transport): `Pipeline.decide` for a cached
   token's allow and for a denial, with the decision log off, and on (every allow,
   and 10% of allows) writing JSON lines to /dev/null from its writer thread. Two
   figures per case: the event loop's wall time per decision (what the hot path
   pays, GIL hand-offs to the writer included) and the whole process's CPU per
   decision (the writer's rendering and writing included), each the median of
   `--repeat` runs.
2. Through the HTTP door of a real authz-service (TCP on loopback): an open-loop
   paced load (bench/paced_load.py) of cached-token allows with the log off and on
   at every allow, interleaved twice; p50 / p99 / p99.9 in ms.

`--instructions` counts instead (valgrind's callgrind; deterministic, so it holds on
a busy machine): each case runs alone for N and 3N cached-token allows, and the
difference over 2N is the instructions per decision: the hot path's `offer`, and
rendering plus writing one record (what the writer thread does), apart.

    .venv/bin/python -m bench.decision_log_bench --instructions [--decisions 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from authz_service.decision_log import DecisionLog, DecisionLogSettings
from authz_service.keys.registry import KeyRegistry
from authz_service.models import Answer, RequestContext
from authz_service.pipeline import Pipeline
from authz_service.policy.loading import load_policy
from bench.paced_load import measure as paced
from tests.kits import jwt_kit
from tests.kits.processes import free_port, wait_for
from tollgate.record_log import JsonLinesSink
from tollgate.reload import ConfigHolder

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
identities:
  - name: idp
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


def run_now(coro: Coroutine[Any, Any, Answer]) -> Answer:
    """A decision that needs no I/O finishes on its first step (as the HTTP door runs it)."""
    try:
        coro.send(None)
    except StopIteration as done:
        answer: Answer = done.value
        return answer
    raise SystemExit("the decision suspended: the bench needs one that does not")


def in_process(config: Path, token: str, decisions: int, repeat: int) -> list[list[str]]:
    policy = load_policy(config, KeyRegistry())
    allow_ctx = RequestContext("GET", "/orders/1", headers={
        "authorization": f"Bearer {token}", "x-request-id": "bench-1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        request_id="bench-1", source_address="10.0.0.1")
    deny_ctx = RequestContext("GET", "/orders/1", request_id="bench-2")
    rows = []
    for label, ctx in (("cached-token allow", allow_ctx), ("denial (no token)", deny_ctx)):
        for mode, rate in (("off", None), ("every allow", 1.0), ("10% of allows", 0.1)):
            if rate is not None and ctx is deny_ctx and rate != 1.0:
                continue  # denials are always recorded: the rate does not apply
            walls, cpus, written = [], [], 0
            for _ in range(repeat):
                dlog = None
                if rate is not None:
                    dlog = DecisionLog(DecisionLogSettings(allow_sample_rate=rate),
                                       [JsonLinesSink.open(os.devnull)],
                                       max_queued=decisions + 1)
                    assert dlog.queue is not None
                    dlog.queue.start()
                pipeline = Pipeline(ConfigHolder(policy), KeyRegistry(), decision_log=dlog)
                run_now(pipeline.decide(ctx))  # the token is verified once, then cached
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for _ in range(decisions):
                    run_now(pipeline.decide(ctx))
                wall = time.perf_counter() - wall0
                if dlog is not None and dlog.queue is not None:
                    dlog.queue.close()  # everything rendered and written
                    written = dlog.queue.written
                    if dlog.queue.dropped:
                        raise SystemExit("records dropped: raise max_queued")
                cpus.append((time.process_time() - cpu0) / decisions * 1e6)
                walls.append(wall / decisions * 1e6)
            rows.append([label, mode, f"{statistics.median(walls):.2f}",
                         f"{statistics.median(cpus):.2f}", str(written)])
    return rows


CASES = ("off", "offer", "offer+write")


def one_case(config: Path, token: str, case: str, decisions: int) -> None:
    """`decisions` cached-token allows, for callgrind: off; each record queued (the hot
    path only); each queued, then rendered and written to /dev/null (the writer's part)."""
    policy = load_policy(config, KeyRegistry())
    ctx = RequestContext("GET", "/orders/1", headers={
        "authorization": f"Bearer {token}", "x-request-id": "bench-1",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        request_id="bench-1", source_address="10.0.0.1")
    dlog = None if case == "off" else DecisionLog(
        DecisionLogSettings(), [JsonLinesSink.open(os.devnull)], max_queued=decisions + 1)
    pipeline = Pipeline(ConfigHolder(policy), KeyRegistry(), decision_log=dlog)
    for _ in range(decisions + 1):
        run_now(pipeline.decide(ctx))
    if case == "offer+write" and dlog is not None and dlog.queue is not None:
        dlog.queue.drain()  # on this thread: callgrind counts it the same


def instructions(config: Path, token: str, decisions: int) -> list[list[str]]:
    counts: dict[tuple[str, int], int] = {}
    for case in CASES:
        for n in (decisions, 3 * decisions):
            with tempfile.NamedTemporaryFile(suffix=".callgrind") as out:
                done = subprocess.run(
                    ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out.name}",
                     sys.executable, "-m", "bench.decision_log_bench", "--case", case,
                     "--decisions", str(n), "--config", str(config), "--token", token],
                    capture_output=True, text=True, check=True, cwd=ROOT)
            collected = [line for line in done.stderr.splitlines() if "Collected" in line]
            counts[(case, n)] = int(collected[-1].split()[-1])
    per = {case: (counts[(case, 3 * decisions)] - counts[(case, decisions)]) / (2 * decisions)
           for case in CASES}
    return [
        ["decision, log off", f"{per['off']:,.0f}", "—"],
        ["decision + offer (the hot path, log on)", f"{per['offer']:,.0f}",
         f"+{per['offer'] - per['off']:,.0f}"],
        ["+ render and write the record (writer thread)", f"{per['offer+write']:,.0f}",
         f"+{per['offer+write'] - per['offer']:,.0f}"],
    ]


def through_http_door(config: Path, token: str, rate: float, seconds: float) -> list[list[str]]:
    rows = []
    for rnd in range(2):
        for mode in ("off", "every allow"):
            port = free_port()
            argv = [str(Path(sys.executable).parent / "authz-service"), "--config", str(config),
                    "--grpc-address", "off", "--http-address", f"127.0.0.1:{port}",
                    "--log-level", "warning"]
            if mode != "off":
                argv += ["--decision-log", os.devnull]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
            try:
                wait_for(lambda p=port: _ready(p), timeout=30, what="authz-service")
                result = paced(f"http://127.0.0.1:{port}/check/orders/1",
                               [f"authorization: Bearer {token}"], rate, seconds)
            finally:
                proc.terminate()
                proc.wait(10)
            if result["ok"] < 1.0:
                raise SystemExit(f"not every check was allowed: {result}")
            rows.append([str(rnd + 1), mode, f"{result['rps']:.0f}", f"{result['p50']:.2f}",
                         f"{result['p99']:.2f}", f"{result['p999']:.2f}"])
    return rows


def _ready(port: int) -> bool:
    import http.client  # noqa: PLC0415

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1500.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions with callgrind instead of timing")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # one callgrind run
        one_case(args.config, args.token, args.case, args.decisions)
        return
    with tempfile.TemporaryDirectory() as tmp:
        key = jwt_kit.rsa_key("bench-1")
        jwks = Path(tmp) / "jwks.json"
        jwks.write_text(json.dumps(jwt_kit.jwks(key)))
        config = Path(tmp) / "authz.yaml"
        config.write_text(CONFIG.format(issuer=jwt_kit.ISSUER, audience=jwt_kit.AUDIENCE,
                                        jwks=jwks))
        token = jwt_kit.mint(key, exp=int(time.time()) + 3600)
        if args.instructions:
            print(f"Python {sys.version.split()[0]}; callgrind, instructions per cached-token "
                  f"allow ({args.decisions} and {3 * args.decisions} decisions)\n")
            print(table(["what", "instructions per decision", "added"],
                        instructions(config, token, args.decisions)))
            return
        print(f"Python {sys.version.split()[0]}; {args.decisions} decisions x {args.repeat} "
              "runs, medians\n")
        print(table(["decision", "decision log", "loop µs/decision", "process CPU µs/decision",
                     "records written"],
                    in_process(config, token, args.decisions, args.repeat)))
        print(f"\nThrough the HTTP door, paced {args.rate:.0f} req/s for {args.seconds:.0f} s "
              "(cached-token allows)\n")
        print(table(["round", "decision log", "req/s", "p50 ms", "p99 ms", "p99.9 ms"],
                    through_http_door(config, token, args.rate, args.seconds)))


if __name__ == "__main__":
    main()
