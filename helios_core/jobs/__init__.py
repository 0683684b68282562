"""The job queue: leases with fencing tokens, retries with backoff, a DLQ, dedup (see model.py)."""

from helios_core.jobs.model import Job, Lease, State, new_job_id
from helios_core.jobs.queue import (
    MAX_ENQUEUE_BATCH,
    MAX_LEASE_BATCH,
    MAX_LEASE_QUEUES,
    MAX_LIST_LIMIT,
    MAX_WAIT_SECONDS,
    AckItem,
    EnqueueRequest,
    JobNotFoundError,
    JobQueue,
    JobStateError,
    LeaseLostError,
    PayloadTooLargeError,
    QueueNotFoundError,
    QueuePolicy,
    QueueStats,
    TooManyQueuesError,
    parse_queue_policies,
)

__all__ = [
    "Job", "Lease", "State", "new_job_id", "JobQueue", "EnqueueRequest", "AckItem", "QueuePolicy", "QueueStats",
    "LeaseLostError", "JobStateError", "QueueNotFoundError", "JobNotFoundError", "PayloadTooLargeError",
    "TooManyQueuesError", "MAX_LEASE_BATCH", "MAX_ENQUEUE_BATCH", "MAX_WAIT_SECONDS", "MAX_LEASE_QUEUES",
    "MAX_LIST_LIMIT", "parse_queue_policies",
]
