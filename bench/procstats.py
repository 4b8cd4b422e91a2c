"""What a benchmark reads of a process from /proc: CPU time, peak memory, context switches.

The one place bench/ parses /proc, so every script counts CPU the same way.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live children of pid (a supervisor's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]


def own_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of pid itself (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """CPU seconds of pid and of its children still alive."""
    return sum(own_cpu_seconds(one) for one in (pid, *children(pid)))


def context_switches(pid: int) -> int:
    """Voluntary plus involuntary context switches of every thread of pid."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    return total


def memory_mb(pid: int | str = "self") -> tuple[float, float]:
    """(peak RSS, current RSS) in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


def peak_rss_mb(pid: int) -> float:
    return memory_mb(pid)[0]
