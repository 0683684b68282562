"""plain_int: the whole numbers callers may send, ASCII digits only."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from helios_core.digits import plain_int


def test_what_str_isdigit_takes_and_int_refuses_is_not_a_number() -> None:
    for text in ("³", "²5", "٣", "１", "", " 1", "1 ", "+1", "-1", "1_000", "0x1", None, "1" * 20):
        assert plain_int(text) is None, text
    assert plain_int("0") == 0 and plain_int("007") == 7 and plain_int("1" * 19) == int("1" * 19)
    assert plain_int("12345", 4) is None


@given(st.text(max_size=25))
def test_any_text_gives_none_or_its_ascii_value(text: str) -> None:
    n = plain_int(text)
    if n is None:
        assert not (text.isascii() and text.isdigit() and 0 < len(text) <= 19)
    else:
        assert str(n) == text.lstrip("0") or (n == 0 and set(text) == {"0"})
