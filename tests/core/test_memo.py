"""KeptText: formatted strings kept by key, bounded by characters."""

from __future__ import annotations

from tollgate.memo import KeptText


def test_kept_text_is_bounded_by_characters_and_starts_afresh_when_full() -> None:
    kept = KeptText(max_chars=10)
    assert kept.put("a", "aaaa", 4) == "aaaa"
    kept.put("b", "bbbb", 4)
    assert kept.entries == {"a": "aaaa", "b": "bbbb"} and kept.chars == 8
    kept.put("c", "cccc", 4)  # 12 > 10: everything else goes
    assert kept.entries == {"c": "cccc"} and kept.chars == 4
