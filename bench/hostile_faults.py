"""Faults an attacker or an unlucky operator causes: reload stalls, SIGTERM, slow IdPs.

    .venv/bin/python -m bench.hostile_faults [--repeat 5]

1. Reload stall. A live authz-service answers one caller back to back while its
   config is replaced by hostile files; reported: the longest gap between two
   answers during each reload against the same caller's longest gap with no
   reload, and the time to the rejection. Then, in process and side by side,
   the event loop's longest stall for the same files loaded on the loop (the old
   watcher) and off it (ConfigWatcher.check_off_loop).
2. SIGTERM under load. 32 callers on a grpc.aio server stopped with a bare
   server.stop(grace) (what the drain did) and with GrpcApp.drain, side by side:
   calls ended OK / UNAVAILABLE / CANCELLED.
3. Deadlines. RemoteJwks.refresh against a slow and a trickling IdP for several
   `timeout_seconds`; and Checks through the live service waiting on a refetch
   from a slow IdP, against `unknown_kid_wait_seconds`: max duration / deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx

from authz_service.keys.jwks import RemoteJwks
from bench.authz_bench import wait_serving
from tests.kits import jwt_kit
from tests.kits.core_kit import OPEN_CONFIG, atomic_write, large_invalid_config
from tests.kits.grpc_kit import AuthzClient, check_request
from tests.kits.http_kit import Route, serve_http
from tests.kits.key_sources import source
from tollgate.reload import ConfigHolder, ConfigWatcher
from tollgate.server import GrpcApp, ServiceSpec

ROOT = Path(__file__).resolve().parent.parent


HOSTILE = ROOT / "tests" / "core" / "fixtures" / "hostile_yaml"


def hostile_files() -> dict[str, str]:
    return {
        "1 MB of YAML, then refused (unknown key)": large_invalid_config(),
        "alias bomb (billion laughs)": (HOSTILE / "alias_bomb.yaml").read_text(),
        "merge-key bomb": (HOSTILE / "merge_bomb.yaml").read_text(),
        "self-referencing alias": (HOSTILE / "self_alias_mapping.yaml").read_text(),
        "nesting 50,000 deep": "a: " + "[" * 50_000 + "]" * 50_000 + "\n",
        "aliases expanding to 199,000 values (accepted by the loader, refused as a config)":
            _just_under_expansion_limit(),
        "valid: 2,000 routes": _many_routes(2000),
    }


def _just_under_expansion_limit() -> str:
    # 10 * 9^4 leaves, a little under the 200,000-value limit once expanded.
    lines = ['a: &a ["l","l","l","l","l","l","l","l","l"]']
    for level, name in enumerate("bcd"):
        prev = "abcd"[level]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    lines.append("e: [" + ",".join(["*d"] * 25) + "]")
    return OPEN_CONFIG + "bogus:\n" + "".join(f"  {line}\n" for line in lines)


def _many_routes(n: int) -> str:
    routes = "".join(
        f"  - name: r{i}\n    match: {{path: {{exact: /r{i}}}}}\n    anonymous: true\n"
        for i in range(n))
    return OPEN_CONFIG + routes


# --- 1. reload stall -----------------------------------------------------------------


def reload_stall_live(workdir: Path, repeat: int) -> None:
    config = workdir / "authz.yaml"
    config.write_text(OPEN_CONFIG)
    socket = workdir / "authz.sock"
    log_path = workdir / "authz.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/authz-service"), "--config", str(config),
             "--grpc-address", f"unix:{socket}", "--reload-interval", "0.05"],
            stdout=log, stderr=subprocess.STDOUT)
    client = AuthzClient(f"unix:{socket}")
    try:
        wait_serving(f"unix:{socket}", proc)
        answers: list[float] = []
        stop = threading.Event()

        def caller() -> None:
            request = check_request(path="/open")
            while not stop.is_set():
                if not client.check(request).allowed:
                    raise SystemExit("a wrong answer during the bench")
                answers.append(time.monotonic())

        thread = threading.Thread(target=caller, daemon=True)
        thread.start()
        time.sleep(1)
        base_start = time.monotonic()
        time.sleep(3)
        baseline = _worst_gap(answers, base_start, time.monotonic())
        print("## 1. Reload stall: a live authz-service, one caller back to back\n")
        print(f"Longest gap between two answers with no reload, 3 s: **{baseline * 1000:.1f} ms**"
              f" ({len([t for t in answers if t >= base_start]) / 3:,.0f} answers/s).\n")
        print("| file | outcome | time to outcome (median) | longest gap during the reload "
              "(max of runs) | runs |")
        print("|---|---|---:|---:|---:|")
        generation = 0
        for name, text in hostile_files().items():
            gaps, times, outcome = [], [], ""
            for _ in range(repeat):
                before = _events(log_path)
                started = time.monotonic()
                atomic_write(config, text)
                while _events(log_path) == before:
                    time.sleep(0.01)
                    if time.monotonic() - started > 120:
                        raise SystemExit(f"{name}: no reload outcome in 120 s")
                ended = time.monotonic()
                outcome = "rejected" if "rejected" in _last_event(log_path) else "reloaded"
                times.append(ended - started)
                gaps.append(_worst_gap(answers, started, ended))
                generation += 1
                atomic_write(config, OPEN_CONFIG + f"# {generation}\n")
                before = _events(log_path)
                while _events(log_path) == before:
                    time.sleep(0.01)
            times.sort()
            print(f"| {name} | {outcome} | {times[len(times) // 2] * 1000:,.0f} ms | "
                  f"**{max(gaps) * 1000:.1f} ms** | {repeat} |")
        stop.set()
        thread.join(10)
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


def _worst_gap(times: list[float], start: float, end: float) -> float:
    inside = [start, *(t for t in times if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(inside))


def _events(log: Path) -> int:
    text = log.read_text()
    return text.count('"config reloaded"') + text.count('"config reload rejected')


def _last_event(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines()
             if '"config reloaded"' in line or '"config reload rejected' in line]
    return lines[-1]


def reload_stall_in_process(workdir: Path) -> None:
    from authz_service.keys.registry import KeyRegistry  # noqa: PLC0415
    from authz_service.policy.loading import load_policy  # noqa: PLC0415

    print("\nThe same files in process, side by side: the event loop's longest stall while "
          "the watcher loads each one\n")
    print("| file | on the loop (the old watcher) | off the loop (check_off_loop) | ratio |")
    print("|---|---:|---:|---:|")
    path = workdir / "inproc.yaml"
    for name, text in hostile_files().items():
        stalls = {}
        for mode in ("on", "off"):
            path.write_text(OPEN_CONFIG)
            keys = KeyRegistry()
            holder = ConfigHolder(load_policy(path, keys))
            watcher = ConfigWatcher(path, holder, lambda keys=keys: load_policy(path, keys))
            atomic_write(path, text)
            stalls[mode] = asyncio.run(_loop_stall(watcher, mode))
        print(f"| {name} | {stalls['on'] * 1000:,.1f} ms | **{stalls['off'] * 1000:.1f} ms** | "
              f"{stalls['on'] / max(stalls['off'], 1e-6):,.0f}x |")


async def _loop_stall(watcher: ConfigWatcher[object], mode: str) -> float:
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst, last = max(worst, now - last), now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    if mode == "on":
        watcher.check()
    else:
        await watcher.check_off_loop()
    await asyncio.sleep(0.05)
    done.set()
    await task
    return worst


# --- 2. SIGTERM under load -----------------------------------------------------------


async def _sigterm_once(use_drain: bool, socket: str) -> collections.Counter[str]:
    async def handler(request: bytes, context: object) -> bytes:
        return b"ok"

    def register(server: grpc.aio.Server) -> None:
        method = grpc.unary_unary_rpc_method_handler(handler)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("bench.S", {"M": method}),))

    app = GrpcApp(socket, [ServiceSpec("bench.S", register)])
    await app.start()
    codes: collections.Counter[str] = collections.Counter()
    stopping: list[bool] = []

    async def caller(channel: grpc.aio.Channel) -> None:
        call = channel.unary_unary("/bench.S/M")
        while True:
            try:
                await call(b"x", timeout=5)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                if stopping:
                    return

    channels = [grpc.aio.insecure_channel(socket) for _ in range(4)]
    tasks = [asyncio.create_task(caller(channels[i % 4])) for i in range(32)]
    await asyncio.sleep(0.5)
    stopping.append(True)
    if use_drain:
        await app.drain(3.0, 0.0)
    else:
        assert app.server is not None
        await app.server.stop(3.0)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for channel in channels:
        await channel.close()
    return codes


def sigterm(workdir: Path, repeat: int) -> None:
    print("\n## 2. SIGTERM under load: 32 callers, after the announce window\n")
    print("| stop | runs | calls OK | ended UNAVAILABLE | ended CANCELLED |")
    print("|---|---:|---:|---:|---:|")
    for use_drain, label in ((False, "bare `server.stop(grace)` (the old drain)"),
                             (True, "`GrpcApp.drain`")):
        total: collections.Counter[str] = collections.Counter()
        for run in range(repeat):
            total += asyncio.run(_sigterm_once(use_drain, f"unix:{workdir}/sig{run}.sock"))
        print(f"| {label} | {repeat} | {total['OK']:,} | {total['UNAVAILABLE']} | "
              f"**{total['CANCELLED']}** |")


def sigterm_service(workdir: Path, repeat: int) -> None:
    """The real authz-service, SIGTERM under 32 callers (its own announce window)."""
    config = workdir / "sig.yaml"
    config.write_text(OPEN_CONFIG)
    total: collections.Counter[str] = collections.Counter()
    for run in range(repeat):
        socket = workdir / f"svc{run}.sock"
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/authz-service"), "--config", str(config),
             "--grpc-address", f"unix:{socket}", "--drain-announce-seconds", "0.3",
             "--drain-seconds", "3"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_serving(f"unix:{socket}", proc)
        total += asyncio.run(_hammer_service(f"unix:{socket}", proc))
        proc.wait(timeout=10)
    print(f"| authz-service, SIGTERM (announce 0.3 s) | {repeat} | {total['OK']:,} | "
          f"{total['UNAVAILABLE']} | **{total['CANCELLED']}** |")


async def _hammer_service(socket: str, proc: subprocess.Popen[bytes]) -> collections.Counter[str]:
    from envoy.service.auth.v3 import external_auth_pb2_grpc  # noqa: PLC0415

    codes: collections.Counter[str] = collections.Counter()
    request = check_request(path="/open")
    signalled: list[bool] = []

    async def caller(channel: grpc.aio.Channel) -> None:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        while True:
            try:
                await stub.Check(request, timeout=5)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                if signalled:
                    return

    channels = [grpc.aio.insecure_channel(socket) for _ in range(4)]
    tasks = [asyncio.create_task(caller(channels[i % 4])) for i in range(32)]
    await asyncio.sleep(0.5)
    signalled.append(True)
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for channel in channels:
        await channel.close()
    return codes


# --- 3. deadlines ----------------------------------------------------------------------


def deadlines(workdir: Path, repeat: int) -> None:
    rsa = jwt_kit.rsa_key("bench-rsa")
    body = json.dumps(jwt_kit.jwks(rsa)).encode()
    print("\n## 3. Every timeout is a deadline\n")
    print("| call | deadline | runs | median | max | max / deadline |")
    print("|---|---:|---:|---:|---:|---:|")
    with serve_http() as idp:
        faults: dict[str, Callable[[], None]] = {
            "JWKS fetch, IdP answers after 10 s": lambda: idp.set_route(
                "/jwks", Route(body=body, delay=10)),
            "JWKS fetch, IdP trickles a byte per 50 ms": lambda: idp.set_route(
                "/jwks", Route(body=body, byte_delay=0.05)),
            "discovery + JWKS, each 60% of the deadline": lambda: (
                idp.set_route("/.well-known/openid-configuration", Route(body=json.dumps(
                    {"issuer": idp.base_url, "jwks_uri": f"{idp.base_url}/jwks"}).encode(),
                    delay=0.3)),
                idp.set_route("/jwks", Route(body=body, delay=0.3))),
        }
        for name, apply in faults.items():
            for deadline in (0.25, 0.5, 1.0) if "discovery" not in name else (0.5,):
                apply()
                durations = asyncio.run(_refreshes(idp.base_url, deadline, repeat,
                                                   discovery="discovery" in name))
                idp.release.set()
                time.sleep(0.05)
                idp.release.clear()
                _row(name, deadline, durations)
        _check_deadline(idp, workdir, rsa, repeat * 4)


async def _refreshes(base: str, deadline: float, repeat: int, discovery: bool) -> list[float]:
    durations = []
    async with httpx.AsyncClient(follow_redirects=False) as client:
        for _ in range(repeat):
            fields = ({"issuer": base, "discovery": True} if discovery
                      else {"jwks_uri": f"{base}/jwks"})
            jwks = RemoteJwks("bench", source(**fields, refresh={"timeout_seconds": deadline}),
                              client)
            started = time.perf_counter()
            if await jwks.refresh():
                raise SystemExit("the fetch was expected to fail")
            durations.append(time.perf_counter() - started)
    return durations


def _check_deadline(idp: object, workdir: Path, rsa: jwt_kit.SigningKey, n: int) -> None:
    from tests.kits.http_kit import HttpServer  # noqa: PLC0415

    assert isinstance(idp, HttpServer)
    wait = 0.4
    idp.set_json("/jwks", jwt_kit.jwks(rsa))
    config = workdir / "deadline.yaml"
    refresh = {"unknown_kid_wait_seconds": wait, "unknown_kid_cooldown_seconds": 0,
               "timeout_seconds": 3}
    config.write_text(f"""identities:
  - name: idp
    jwt:
      issuer: {jwt_kit.ISSUER}
      jwks_uri: {idp.base_url}/jwks
      refresh: {json.dumps(refresh)}
routes:
  - name: r
    match: {{path: {{prefix: /}}}}
""")
    socket = workdir / "deadline.sock"
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/authz-service"), "--config", str(config),
         "--grpc-address", f"unix:{socket}"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=dict(os.environ))
    client = AuthzClient(f"unix:{socket}")
    try:
        wait_serving(f"unix:{socket}", proc)
        token = jwt_kit.mint(rsa)
        deadline = time.monotonic() + 20
        while not client.check(check_request(
                headers={"authorization": f"Bearer {token}"})).allowed:
            if time.monotonic() > deadline:
                raise SystemExit("no keys")
            time.sleep(0.05)
        idp.set_route("/jwks", Route(body=b"{}", delay=10))
        durations = []
        for i in range(n):
            stranger = jwt_kit.mint(jwt_kit.rsa_key(f"s{i % 4}"), sub=f"s{i}")
            started = time.perf_counter()
            client.check(check_request(headers={"authorization": f"Bearer {stranger}"}))
            durations.append(time.perf_counter() - started)
        _row("Check waiting on a refetch from a 10 s IdP (through gRPC)", wait, durations)
    finally:
        idp.release.set()
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


def _row(name: str, deadline: float, durations: list[float]) -> None:
    durations.sort()
    median, worst = durations[len(durations) // 2], durations[-1]
    print(f"| {name} | {deadline:g} s | {len(durations)} | {median * 1000:,.0f} ms | "
          f"{worst * 1000:,.0f} ms | **{worst / deadline:.2f}x** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["reload", "sigterm", "deadlines"], default=None)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the failures are the point; their logs are not
    workdir = Path(tempfile.mkdtemp(prefix="hostile-"))
    if args.only in (None, "reload"):
        reload_stall_live(workdir, args.repeat)
        reload_stall_in_process(workdir)
    if args.only in (None, "sigterm"):
        sigterm(workdir, args.repeat)
        sigterm_service(workdir, args.repeat)
    if args.only in (None, "deadlines"):
        deadlines(workdir, args.repeat)


if __name__ == "__main__":
    main()
