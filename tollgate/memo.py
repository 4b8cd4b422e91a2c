"""Values derived from long-lived objects, kept beside them instead of inside them.

A verified token's Identity lives in the token cache and is handed out again and
again; what is built from it (the Allow for a route, the bytes a door sends for that
Allow) is worth keeping. Value types stay values: the memo holds the derived value
keyed by the owner's identity, and keeps the owner alive with it, so an id is never
reused while its entry exists. Bounded: the oldest entries go first.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(0, max_entries)
        self._entries: dict[tuple[int, Hashable], tuple[object, V]] = {}

    def get(self, owner: object, key: Hashable) -> V | None:
        entry = self._entries.get((id(owner), key))
        if entry is None or entry[0] is not owner:
            return None
        return entry[1]

    def put(self, owner: object, key: Hashable, value: V) -> V:
        if self.max_entries == 0:
            return value
        entries = self._entries
        if len(entries) >= self.max_entries:
            del entries[next(iter(entries))]  # dicts keep insertion order: the oldest
        entries[(id(owner), key)] = (owner, value)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class KeptText:
    """Strings formatted from a hashable key (a counter's key, a stats name), kept so a
    busy one is formatted once, not per request. Bounded by characters, not entries:
    keys may hold client-chosen values of any length, and what is kept must stay small
    beside the byte budget of the counters themselves. When full, everything goes."""

    __slots__ = ("chars", "entries", "max_chars")

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.chars = 0
        # Read it directly on a hot path (`entries.get(key)`); add through `put`.
        self.entries: dict[Hashable, str] = {}

    def put(self, key: Hashable, text: str, chars: int) -> str:
        """Keep `text` for `key`; `chars`: what both hold (the key's strings and text)."""
        self.chars += chars
        if self.chars > self.max_chars:
            self.entries.clear()
            self.chars = chars
        self.entries[key] = text
        return text
