"""The job queue's errors: each maps to one HTTP status and a stable `code`."""

from __future__ import annotations

from helios_core.errors import ConflictError, HeliosError, NotFoundError

__all__ = ["LeaseLostError", "JobStateError", "QueueNotFoundError", "JobNotFoundError", "PayloadTooLargeError",
           "TooManyQueuesError"]


class LeaseLostError(ConflictError):
    """ack/nack/extend with a token that is not the job's current lease (409): nothing changed."""

    code = "lease_lost"


class JobStateError(ConflictError):
    """The job is not in a state that allows this (cancel a DONE job, redrive a PENDING one): 409."""

    code = "job_state"


class QueueNotFoundError(NotFoundError):
    code = "queue_not_found"


class JobNotFoundError(NotFoundError):
    """No job with this id (never made, or its record expired after the retention)."""

    code = "job_not_found"


class PayloadTooLargeError(HeliosError):
    code = "payload_too_large"
    status = 413


class TooManyQueuesError(HeliosError):
    """An enqueue would make one more live queue than jobs.max_queues allows (429)."""

    code = "too_many_queues"
    status = 429
