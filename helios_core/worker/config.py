"""What a worker is told to do: `WorkerConfig`, and the duration syntax of its options."""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass

from helios_core.errors import InvalidInputError
from helios_core.jobs.model import QUEUE_NAME_RE

__all__ = ["WorkerConfig", "parse_duration", "default_worker_name", "MAX_QUEUES", "MAX_LEASE_BATCH"]

MAX_QUEUES = 10  # the lease endpoint's limit
MAX_LEASE_BATCH = 100  # the lease endpoint's largest "max"
MAX_WAIT_SECONDS = 20  # the lease endpoint's longest long poll

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``1h``, ``1h30m``, ``250ms`` or plain seconds (``30``, ``2.5``) -> seconds.

    InvalidInputError (naming what is accepted) for anything else, negative values included.
    """
    s = text.strip().lower()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise InvalidInputError(f"invalid duration {text!r}: must be 0 or more seconds")
        return value
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(s):
        raise InvalidInputError(f"invalid duration {text!r}: use seconds (30, 2.5) or a number with a unit, "
                                "e.g. 250ms, 30s, 5m, 1h, 1h30m")
    return total


def default_worker_name() -> str:
    """host:pid, so an operator can tell from a job's lease which process holds it."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything `Worker` needs besides a client and a runner.

    - ``visibility_s``: the lease length asked for (None: each job's own); a
      running job's lease is extended every third of it, so it only bounds
      how long a *dead* worker keeps its jobs.
    - ``timeout_s``: how long one job may run; None means no limit (see
      `helios_cli.worker` for why that is the default).
    - ``grace_s``: after SIGTERM, how long running jobs may take to finish
      before they are given back.
    """

    queues: tuple[str, ...]
    concurrency: int = 1
    visibility_s: int | None = None
    timeout_s: float | None = None
    grace_s: float = 30.0
    burst: bool = False
    name: str = ""
    wait_s: int = MAX_WAIT_SECONDS
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.queues:
            raise InvalidInputError("give at least one queue")
        if len(self.queues) > MAX_QUEUES:
            raise InvalidInputError(f"at most {MAX_QUEUES} queues per worker")
        for q in self.queues:
            if not QUEUE_NAME_RE.fullmatch(q):
                raise InvalidInputError(f"invalid queue name {q!r}: 1-80 characters of A-Z a-z 0-9 _ -")
        if self.concurrency < 1:
            raise InvalidInputError("concurrency must be at least 1")
        if self.visibility_s is not None and self.visibility_s < 1:
            raise InvalidInputError("the visibility timeout must be at least 1 second")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise InvalidInputError("the job timeout must be positive (or None for no limit)")
        if self.grace_s < 0:
            raise InvalidInputError("the grace period cannot be negative")
        if not 0 <= self.wait_s <= MAX_WAIT_SECONDS:
            raise InvalidInputError(f"wait_s must be within 0..{MAX_WAIT_SECONDS}")

