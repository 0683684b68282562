"""A tiny Celery app for the test against atlasd: broker and result backend both on the Redis transport.

The worker subprocess (`celery -A tests.integration.celery_app worker`) builds the
app from ATLAS_CELERY_URL; the test process builds its own with `make_app(url)`,
and both register the same task names.
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

__all__ = ["make_app", "app", "URL_ENV"]

URL_ENV = "ATLAS_CELERY_URL"


def make_app(url: str) -> Celery:
    app = Celery("helios_celery_test", broker=url, backend=url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # Fail fast instead of retrying for minutes when the broker is down: a test would hang.
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=3,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        result_expires=300,
    )

    @app.task(name="helios_test.add")
    def add(a: int, b: int) -> int:
        return a + b

    @app.task(name="helios_test.boom")
    def boom(reason: str) -> None:
        raise ValueError(reason)

    return app


app = make_app(os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"))
