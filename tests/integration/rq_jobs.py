"""Job functions for the RQ test against atlasd: module-level, so the `rq worker` subprocess imports them."""

from __future__ import annotations

__all__ = ["add", "shout", "fail"]


def add(a: int, b: int) -> int:
    return a + b


def shout(word: str) -> str:
    return word.upper() + "!"


def fail(reason: str) -> None:
    # The failed registry is what RQ users look at; the message must travel with the job.
    raise ValueError(reason)
