"""The no-op jobs of bench/jobs.py, one handler per system, each recording that it ran.

Every execution appends the job's index to a file of its own process,
``$BENCH_JOBS_OUT/exec-<pid>.log``, opened O_APPEND: one fixed-width line per
execution, written with a single write(2), so a SIGKILL never leaves half a
line and the bench can count finished jobs from file sizes alone (no extra
round trip to any server, the same cost for every system).  After a run the
files say how often each job ran, and in which process.

- HELIOS: ``helios worker --handler bench_noop:run`` (the payload is ``{"i": N}``;
  ``bench_noop:run_sync`` is the same as a thread-run handler);
- RQ: ``bench_noop.rq_noop(i)``;
- Dramatiq: the actor ``noop`` on queue ``bench``, declared only when
  ``BENCH_DRAMATIQ_URL`` names the broker (``dramatiq bench_noop`` in a worker).
"""

from __future__ import annotations

import os
from typing import Any

LINE = 10  # "%09d\n"
_fd: int | None = None
_fd_pid = 0


def record(i: int) -> None:
    global _fd, _fd_pid
    if _fd is None or _fd_pid != os.getpid():  # dramatiq forks its workers: one file per process
        path = os.path.join(os.environ["BENCH_JOBS_OUT"], f"exec-{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fd_pid = os.getpid()
    os.write(_fd, b"%09d\n" % i)


async def run(payload: dict[str, Any]) -> None:
    """HELIOS handler.  Async, so the worker runs it on its loop: a sync one would get a thread per
    run, which a handler that only writes 10 bytes to a file does not need."""
    record(payload["i"])


def run_sync(payload: dict[str, Any]) -> None:
    """The same as a sync handler (the worker runs each call in a thread), for comparison."""
    record(payload["i"])


def rq_noop(i: int) -> None:
    record(i)


if os.environ.get("BENCH_DRAMATIQ_URL"):
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=os.environ["BENCH_DRAMATIQ_URL"])
    dramatiq.set_broker(broker)

    @dramatiq.actor(actor_name="noop", queue_name="bench", max_retries=0)
    def dramatiq_noop(i: int) -> None:
        record(i)
