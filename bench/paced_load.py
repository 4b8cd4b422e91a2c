"""An open-loop load at an even rate: one request every 1/rate seconds, on time.

h2load's `--rps` is not even: it sends each client's due requests from a timer,
measured here as bursts of about ten requests every 10 ms at 1,000 req/s (90% of
the gaps between sends under 50 µs), so its p99 measures how a service drains a
burst. This client sends request i at start + i/rate over a pool of HTTP/1.1
keep-alive connections and times each response from the moment it was sent (a
stalled server cannot delay later sends: the loop is open and the pool large).

    .venv/bin/python -m bench.paced_load URL --rate 1000 --seconds 5 [-H 'name: value']
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

_POOL = 64  # connections: more than can be busy at once at the rates used here


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status


async def paced(
    url: str, headers: list[str], rate: float, seconds: float, warmup: float = 1.0
) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"host: {parts.netloc}", *headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(_POOL):
        idle.put_nowait(_Connection(*await asyncio.open_connection(host, port)))
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    total = int((warmup + seconds) * rate)
    first_measured = int(warmup * rate)
    start = loop.time() + 0.05
    done = asyncio.Event()
    finished = 0

    async def one(i: int) -> None:
        nonlocal finished
        sent = time.perf_counter()  # the loop's clock has 1 ms resolution on uvloop
        conn = await idle.get()
        status = await conn.exchange(request)
        elapsed = time.perf_counter() - sent
        idle.put_nowait(conn)
        if i >= first_measured:
            latencies.append(elapsed)
            statuses[status] = statuses.get(status, 0) + 1
        finished += 1
        if finished == total:
            done.set()

    tasks = set()
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.wait_for(done.wait(), timeout=30)
    sent_over = loop.time() - start
    while not idle.empty():
        idle.get_nowait().writer.close()
    latencies.sort()
    n = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(int(p * n), n - 1)] * 1000 if n else float("nan")

    return {"rps": total / sent_over, "requests": n, "p50": pct(0.5), "p99": pct(0.99),
            "p999": pct(0.999), "ok": statuses.get(200, 0) / n if n else 0.0}


def measure(url: str, headers: list[str], rate: float, seconds: float) -> dict[str, float]:
    """Run one paced load on uvloop (lower timer jitter than asyncio's default loop)."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return asyncio.run(paced(url, headers, rate, seconds))
    return uvloop.run(paced(url, headers, rate, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("-H", "--header", action="append", default=[])
    args = parser.parse_args()
    started = time.monotonic()
    result = measure(args.url, args.header, args.rate, args.seconds)
    result["wall_seconds"] = time.monotonic() - started
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
