"""Shared by the authz/core fault tests: a steady caller that records every answer."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

OPEN_CONFIG = """realm: t
routes:
  - name: open
    match: {path: {prefix: /open}}
    anonymous: true
"""


@dataclass
class Caller:
    """One thread calling `call()` back to back: answers, failures and the gaps.

    `call()` makes one or more RPCs and says whether every answer was right.
    """

    call: Callable[[], bool]
    answers: list[tuple[float, bool]] = field(default_factory=list)  # (time, right)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (time, gRPC code)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                right = self.call()
            except grpc.RpcError as exc:
                self.failures.append((time.monotonic(), exc.code().name))
                continue
            self.answers.append((time.monotonic(), right))

    def count(self) -> int:
        return len(self.answers) + len(self.failures)

    def wrong(self) -> int:
        return sum(1 for _, right in self.answers if not right)

    def worst_gap(self, start: float, end: float) -> float:
        """The longest time without an answer between start and end."""
        times = [start, *(t for t, _ in self.answers if start <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(times))


@contextmanager
def calling(call: Callable[[], bool]) -> Iterator[Caller]:
    caller = Caller(call)
    thread = threading.Thread(target=caller.run, daemon=True)
    thread.start()
    try:
        yield caller
    finally:
        caller.stop.set()
        thread.join(30)


def large_invalid_config(size: int = 1_000_000) -> str:
    """A document near the loader's size limit: seconds of parsing, then refused."""
    rows = []
    total = len(OPEN_CONFIG) + len("bogus:\n")
    n = 0
    while total < size:
        row = f"  - {{k: v{n}, n: {n}}}\n"
        rows.append(row)
        total += len(row)
        n += 1
    return OPEN_CONFIG + "bogus:\n" + "".join(rows)


def atomic_write(path: Path, text: str) -> None:
    """What a careful deploy does: write beside, then rename over."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
