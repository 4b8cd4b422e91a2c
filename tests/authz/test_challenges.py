"""What a WWW-Authenticate challenge quotes is safe for any text a denial carries (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from authz_service.policy.denials import _challenge, _quote


@given(st.text())
def test_a_quoted_value_is_printable_ascii_without_quote_or_backslash(text: str) -> None:
    quoted = _quote(text)
    assert all(0x20 <= ord(c) < 0x7F and c not in '"\\' for c in quoted)
    # Only what could not be sent is dropped, in order.
    assert quoted == "".join(c for c in text if 0x20 <= ord(c) < 0x7F and c not in '"\\')


def test_a_hostile_description_cannot_close_the_quoted_string() -> None:
    challenge = _challenge("tollgate", error="invalid_token",
                           error_description='bad", error="none\r\nX-Injected: 1\\')
    assert challenge == ('Bearer realm="tollgate", error="invalid_token", '
                         'error_description="bad, error=noneX-Injected: 1"')
