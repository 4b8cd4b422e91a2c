"""The stop-increment rule, in one place: which counters a request is charged to.

envoyproxy/ratelimit's STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT, generalised to
groups of counters: within a group, when some counter would go over its limit only
the counters that go over are charged (a rejected request does not use up its other
limits), and when one is already known over (the local over-limit cache) none is.
A counter in no group (-1) is always charged. Stacked windows of one descriptor form
a group (unless the rule says `charge_all_windows`); with the reference's flag all
counters of a request form one.

Stores apply this function; the Redis request script (stores/scripts.py) applies the
same rule inside Redis, so it stays one round trip; tests hold both to it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ratelimit_service.models import CounterOp

ALONE = -1
EVERYTHING = 0


def groups_of(ops: Sequence[CounterOp], *, stop_when_over: bool) -> list[int]:
    """Each counter's group: its own, or one for the whole request under the flag."""
    if stop_when_over:
        return [EVERYTHING] * len(ops)
    return [op.group for op in ops]


def grouped(groups: Sequence[int]) -> set[int]:
    """The groups with more than one counter (the only ones the rule can change)."""
    seen: set[int] = set()
    many: set[int] = set()
    for group in groups:
        if group != ALONE:
            (many if group in seen else seen).add(group)
    return many


def charges(
    hits: Sequence[int],
    groups: Sequence[int],
    over: Sequence[bool],
    known_over: Sequence[bool] = (),
) -> list[int]:
    """Hits to charge per counter.

    `over`: the counter would go over with its hits; `known_over`: it is already known
    over (it is not sent to the store at all; its group is charged nothing).
    """
    many = grouped(groups)
    known = {g for g, k in zip(groups, known_over, strict=False) if k and g in many}
    going = {g for g, o in zip(groups, over, strict=True) if o and g in many}
    out = []
    for h, g, o in zip(hits, groups, over, strict=True):
        if g in known or (g in going and not o):
            out.append(0)
        else:
            out.append(h)
    return out
