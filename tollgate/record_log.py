"""Records written off the hot path: a bounded queue the event loop fills, a thread drains.

The loop only appends a small tuple (`offer`, a length check and an append); a writer
thread turns each into a dict (the caller's `render`) and hands batches to every sink:
JSON lines on stdout or in a file, OpenTelemetry logs. A full queue drops the record
and counts it, it never waits: a stalled stdout pipe or a full disk slows the log,
never an answer. Records a sink fails to take are counted as dropped too.

The writer gives the GIL back between small batches (`time.sleep(0)`), so the loop
waits for at most one batch's rendering, not for a whole backlog.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any, Generic, Protocol, TypeVar

log = logging.getLogger("tollgate.record_log")

T = TypeVar("T")
Record = dict[str, Any]
STDOUT = "stdout"
_BATCH = 32  # records rendered between two GIL hand-backs
_ERROR_LOG_SECONDS = 10.0
# One encoder for every record: json.dumps with any argument builds a new one per call.
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


class RecordSink(Protocol):
    """Where rendered records go; `write` runs on the writer thread only."""

    def write(self, records: Sequence[Record]) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object per line, flushed after each batch."""

    def __init__(self, stream: IO[str], *, owned: bool = False) -> None:
        self.stream = stream
        self.owned = owned

    @classmethod
    def open(cls, target: str) -> JsonLinesSink:
        """`stdout`, or a file appended to (created when missing)."""
        if target == STDOUT:
            return cls(sys.stdout)
        return cls(open(target, "a", encoding="utf-8"), owned=True)  # kept open until close()

    def write(self, records: Sequence[Record]) -> None:
        self.stream.write("".join(_encode(r) + "\n" for r in records))
        self.stream.flush()

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class RecordQueue(Generic[T]):
    """`offer` on the loop; `start` runs the writer thread, `close` drains and stops it."""

    def __init__(
        self,
        render: Callable[[T], Record],
        sinks: Sequence[RecordSink],
        *,
        max_queued: int = 10_000,
        flush_seconds: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"a record queue holds at least 1 record, not {max_queued}")
        self.render = render
        self.sinks = tuple(sinks)
        self.max_queued = max_queued
        self.flush_seconds = flush_seconds
        self.clock = clock
        # Each counter has one writer thread (the loop, the writer), so no count is lost.
        self._dropped_full = 0
        self._dropped_writing = 0
        self.written = 0
        self._queue: deque[T] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._last_error: dict[str, float] = {}

    @property
    def dropped(self) -> int:
        """Records lost: the queue was full, or rendering or a sink failed."""
        return self._dropped_full + self._dropped_writing

    def offer(self, item: T) -> None:
        """Queue one record, or drop and count it when the queue is full. Never blocks."""
        if len(self._queue) >= self.max_queued:
            self._dropped_full += 1
            return
        self._queue.append(item)

    def start(self) -> RecordQueue[T]:
        self._thread = threading.Thread(target=self._run, name="record-writer", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then close the sinks."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self.drain()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing one sink must not stop the shutdown
                self._error("close", exc)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.flush_seconds)
            self.drain()
        self.drain()

    def drain(self) -> None:
        """Render and write everything queued now (the writer thread's step)."""
        queue = self._queue
        while queue:
            batch: list[Record] = []
            while queue and len(batch) < _BATCH:
                item = queue.popleft()
                try:
                    batch.append(self.render(item))
                except Exception as exc:  # one bad record must not stop the log
                    self._dropped_writing += 1
                    self._error("render", exc)
            if batch:
                self._write(batch)
            time.sleep(0)  # give the GIL back: the loop waits for one batch at most

    def _write(self, batch: list[Record]) -> None:
        for sink in self.sinks:
            try:
                sink.write(batch)
            except Exception as exc:  # a broken sink is counted, never fatal
                self._dropped_writing += len(batch)
                self._error(type(sink).__name__, exc)
        self.written += len(batch)

    def _error(self, where: str, exc: Exception) -> None:
        now = self.clock()
        last = self._last_error.get(where)
        if last is not None and now - last < _ERROR_LOG_SECONDS:
            return
        self._last_error[where] = now
        log.error("records not written", extra={"stage": where, "error": str(exc)[:200]})
