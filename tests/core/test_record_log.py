"""The record queue: bounded, drained off the hot path, every lost record counted."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.kits.processes import wait_for
from tollgate.record_log import STDOUT, JsonLinesSink, Record, RecordQueue


class Collected:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.closed = False

    def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        self.closed = True


class Broken:
    def write(self, records: Sequence[Record]) -> None:
        raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass


def test_a_full_queue_drops_the_record_and_counts_it_without_waiting() -> None:
    sink = Collected()
    queue: RecordQueue[int] = RecordQueue(lambda n: {"n": n}, [sink], max_queued=3)
    for n in range(5):
        queue.offer(n)  # nothing drains: no writer thread started
    assert queue.dropped == 2
    queue.close()
    assert [r["n"] for r in sink.records] == [0, 1, 2]
    assert queue.dropped == 2 and queue.written == 3 and sink.closed


def test_the_writer_thread_writes_what_the_loop_offers() -> None:
    sink = Collected()
    queue: RecordQueue[int] = RecordQueue(lambda n: {"n": n}, [sink], flush_seconds=0.01).start()
    try:
        for n in range(100):
            queue.offer(n)
        wait_for(lambda: len(sink.records) == 100, what="100 records written")
        assert [r["n"] for r in sink.records] == list(range(100))
        assert threading.current_thread().name != "record-writer"
    finally:
        queue.close()
    assert queue.dropped == 0


def test_close_writes_what_is_still_queued() -> None:
    sink = Collected()
    queue: RecordQueue[int] = RecordQueue(lambda n: {"n": n}, [sink], flush_seconds=60).start()
    for n in range(10):
        queue.offer(n)
    queue.close()
    assert len(sink.records) == 10


def test_a_sink_that_fails_loses_records_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = Collected()
    queue: RecordQueue[int] = RecordQueue(lambda n: {"n": n}, [Broken(), good])
    for n in range(40):
        queue.offer(n)
    queue.drain()
    queue.drain()
    assert queue.dropped == 40  # the broken sink's share; the other one got every record
    assert len(good.records) == 40
    failures = [r for r in caplog.records if r.getMessage() == "records not written"]
    assert len(failures) == 1 and "No space left" in failures[0].error  # type: ignore[attr-defined]


def test_a_record_that_cannot_be_rendered_is_counted_and_the_rest_written() -> None:
    sink = Collected()

    def render(n: int) -> Record:
        if n == 1:
            raise ValueError("bad")
        return {"n": n}

    queue: RecordQueue[int] = RecordQueue(render, [sink])
    for n in range(3):
        queue.offer(n)
    queue.drain()
    assert [r["n"] for r in sink.records] == [0, 2] and queue.dropped == 1


def test_json_lines_go_one_object_per_line_to_a_file(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    sink = JsonLinesSink.open(str(path))
    sink.write([{"a": 1, "path": "/x\ny"}, {"b": [1, 2]}])
    sink.close()
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"a": 1, "path": "/x\ny"}, {"b": [1, 2]}]


def test_stdout_is_not_closed_by_its_sink(capsys: pytest.CaptureFixture[str]) -> None:
    sink = JsonLinesSink.open(STDOUT)
    sink.write([{"a": 1}])
    sink.close()
    print("still open")
    assert capsys.readouterr().out == '{"a":1}\nstill open\n'


def test_a_queue_of_no_records_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecordQueue(lambda n: {}, [JsonLinesSink(io.StringIO())], max_queued=0)
