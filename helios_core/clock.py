"""Wall-clock time in milliseconds: the one default clock every service is given (and tests replace)."""

from __future__ import annotations

import time

__all__ = ["wall_ms"]


def wall_ms() -> int:
    return int(time.time() * 1000)
