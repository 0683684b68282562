"""Property-based tests of the gateway against its own OpenAPI document (schemathesis).

Every documented operation gets generated requests, authenticated as the
admin (a fresh session per request, so logout and password changes do not
spoil the next one).  Checked: no 5xx, status codes, content types, headers
and bodies as documented.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from helios_core.gateway.openapi import build
from helios_core.gateway.routes import HANDLERS
from tests.unit.test_gateway_harness import gateway

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_logging")]

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    box: dict[str, Any] = {}
    ready, stop = threading.Event(), threading.Event()

    async def main() -> None:
        # Generated wrong current passwords count as failed logins of "admin": do not let
        # them (or the per-address budget) throttle the logins every case starts with.
        async with gateway(tmp, **{"gateway.max_body_bytes": 65536,
                                   "auth.login_failures_per_user": (1000000, 1),
                                   "auth.login_failures_per_client": (1000000, 1)}) as api:
            box.update(base=api.base, password=api.admin_password)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(30)
    yield box
    stop.set()
    t.join(30)


# The document is built from the route table, so no server is needed to load it.  Changing
# the rate-limit settings to random values would throttle the rest of the run (including the
# logins each case needs); tests/unit/test_gateway_api.py covers that operation.
schema = schemathesis.openapi.from_dict(build(HANDLERS)).exclude(method="PUT", path="/admin/ratelimit")


def fresh_token(live: dict[str, Any], session: requests.Session) -> str:
    r = session.post(live["base"] + "/api/v1/auth/login", json={"username": "admin", "password": live["password"]})
    r.raise_for_status()
    return str(r.json()["access_token"])


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: Any, live: dict[str, Any]) -> None:
    session = requests.Session()
    headers = {"Authorization": f"Bearer {fresh_token(live, session)}"}
    body = case.body
    if case.path == "/api/v1/jobs/lease" and isinstance(body, dict):
        # A lease on a queue with no jobs long-polls for its whole wait_seconds (up to 20):
        # keep each wait short so 40 cases fit the run; tests/unit/test_gateway_jobs.py
        # covers the long poll itself.
        wait = body.get("wait_seconds")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 0.2:
            body["wait_seconds"] = 0.2
    # Generated headers (a malformed Host among them) go out as they are: what Tornado's
    # HTTP layer refuses is answered in the same JSON error shape (gateway/limits.py).
    case.call_and_validate(base_url=live["base"], session=session, headers=headers, checks=CHECKS,
                         timeout=30)
