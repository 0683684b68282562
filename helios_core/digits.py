"""Whole numbers from text that callers send (query parameters, headers): ASCII digits only.

`str.isdigit()` alone is not a validator: it accepts "³" (which `int()` refuses: a 500 where a
400 belongs) and "٣" (which `int()` reads as 3), and `int()` refuses more than 4,300 digits.
"""

from __future__ import annotations

__all__ = ["plain_int"]


def plain_int(text: str | None, max_digits: int = 19) -> int | None:
    """The value of `text` when it is 1..`max_digits` ASCII digits (no sign, no space), else None."""
    if text is None or not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)
