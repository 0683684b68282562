"""Metric label values for queue names, bounded.

Any authenticated producer may name a queue, and every label value is a time
series kept for the life of the process: 35,000 queue names once made
/metrics 15 MB.  Queues named in jobs.queues always keep their name; of the
others, the first `MAX_QUEUE_LABELS` this process sees keep theirs and the
rest share `OTHER`, ``(other)``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["QueueLabels", "MAX_QUEUE_LABELS", "OTHER"]

MAX_QUEUE_LABELS = 100
OTHER = "(other)"  # never a queue name (parentheses are not allowed in one)


class QueueLabels:
    def __init__(self, configured: Iterable[str], limit: int = MAX_QUEUE_LABELS) -> None:
        self._named = set(configured)
        self._seen: set[str] = set()
        self.limit = limit

    def __call__(self, queue: str) -> str:
        if queue in self._named or queue in self._seen:
            return queue
        if len(self._seen) < self.limit:
            self._seen.add(queue)
            return queue
        return OTHER
