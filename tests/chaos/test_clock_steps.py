"""Wall-clock steps, forward and back, injected into the clocks services are given (helios_core/clock.py).

In process: the job queue on an embedded store and the token bucket's pure
logic, with the clock jumping by an hour either way between calls, and a
gateway over HTTP whose reaper and handlers read a `ServiceClock` with fake
wall and monotonic sources.  Invariants:

- on the raw wall clock, a back step does not hand out a leased job a second
  time, and does not lose or duplicate a job; a job acked after the step is
  DONE once; a token bucket is never refilled past its capacity by a forward
  step, and a back step refills nothing;
- on the service clock (what the gateway runs on), a step of an hour either
  way expires no lease and delays none by more than 1/12: no job is delivered
  twice, acks after the step land, a lease whose worker died still runs out
  after about its visibility timeout, a token bucket gains no more than the
  real time that passed (plus 1/12), and the clock never goes back.  (A raw
  forward step longer than the visibility timeout expires every lease at once:
  the defect the service clock exists for.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from helios_core.clock import ServiceClock
from helios_core.config import AtlasConfig, JobsConfig
from helios_core.jobs.model import Job, State
from helios_core.jobs.queue import EnqueueRequest, JobQueue
from helios_core.ratelimit import Policy, take
from helios_core.store import EmbeddedStore
from tests.chaos.harness import record

T0 = 1_900_000_000_000
HOUR = 3_600_000


async def queue_on(tmp: Path) -> tuple[EmbeddedStore, JobQueue]:
    store = await EmbeddedStore.open(str(tmp / "data"), AtlasConfig(appendfsync="always", save=()))
    return store, JobQueue(store, JobsConfig())


def test_back_step_never_leases_a_job_twice(tmp_path: Path) -> None:
    async def run() -> None:
        store, q = await queue_on(tmp_path)
        try:
            for i in range(10):
                await q.enqueue(EnqueueRequest(queue="clk", payload=i, visibility_timeout_s=30), T0)
            first = await q.lease(["clk"], 5, T0 + 1000, worker="w1")
            assert len(first) == 5
            back = T0 - HOUR
            await q.expire(back)
            second = await q.lease(["clk"], 10, back, worker="w2")
            assert not {j.id for j in first} & {j.id for j in second}, "a leased job was handed out again"
            # Acks after the step land; nothing is done twice.
            for j in first:
                assert j.lease is not None
                await q.ack(j.id, j.lease.token, "ok", back + 10)
            later = await q.lease(["clk"], 10, T0 + 2000, worker="w3")
            assert not {j.id for j in first} & {j.id for j in later}
            got = {j.id for j in second} | {j.id for j in later}
            assert len(got) == 5, f"after the back step the other 5 jobs are delivered once: {len(got)}"
        finally:
            await store.close()

    asyncio.run(run())
    record("clock step back by 1 h (job queue, in process)",
           "no leased job handed out again; acks after the step apply; every job delivered once", 1)


class Sources:
    """Fake wall and monotonic sources (ns) for a ServiceClock: `run` lets real time pass, `step` sets the
    wall clock.  The wall starts at T0 unless told otherwise."""

    def __init__(self, wall_ns: int = T0 * 1_000_000) -> None:
        self.wall_ns, self.mono_ns = wall_ns, 777 * 1_000_000_000

    def wall(self) -> int:
        return self.wall_ns

    def mono(self) -> int:
        return self.mono_ns

    def run(self, ms: int) -> None:
        self.wall_ns += ms * 1_000_000
        self.mono_ns += ms * 1_000_000

    def step(self, ms: int) -> None:
        self.wall_ns += ms * 1_000_000


class Watched:
    """A ServiceClock whose every reading is checked against the one before: never back."""

    def __init__(self, src: Sources) -> None:
        self.clock = ServiceClock(src.wall, src.mono)
        self.last = self.clock()

    def __call__(self) -> int:
        now = self.clock()
        assert now >= self.last, f"the service clock went back by {self.last - now} ms"
        self.last = now
        return now


async def run_with_heartbeats(q: JobQueue, now: Watched, src: Sources, held: list[Job], seconds: int) -> None:
    """`seconds` of real time, a reaper tick each second, the worker extending its leases every 10 s
    (a third of the 30 s visibility, as helios_core/worker does); nothing of `held` may come back."""
    for s in range(1, seconds + 1):
        src.run(1000)
        await q.expire(now())
        if s % 10 == 0:
            for j in held:
                assert j.lease is not None
                await q.extend(j.id, j.lease.token, 30, now())
        again = await q.lease(["clk"], 100, now(), worker="w2")
        assert not {j.id for j in held} & {j.id for j in again}, f"a running job delivered again {s} s after the step"
        held.extend(again)  # anything else that was ready runs here once, and is tracked from now on


@pytest.mark.parametrize("step_ms", [HOUR, -HOUR], ids=["forward", "back"])
def test_wall_step_does_not_expire_or_freeze_leases(tmp_path: Path, step_ms: int) -> None:
    """The job queue on the gateway's service clock (helios_core/clock.py), its sources faked: a wall-clock
    step of an hour either way between two reaper ticks expires no lease, delivers no job twice, and the
    clock never goes back; acks after the step land, every job is DONE after one delivery."""

    async def run() -> None:
        store, q = await queue_on(tmp_path)
        src = Sources()
        now = Watched(src)
        try:
            for i in range(10):
                await q.enqueue(EnqueueRequest(queue="clk", payload=i, visibility_timeout_s=30), now())
            held = await q.lease(["clk"], 5, now(), worker="w1")
            assert len(held) == 5
            src.step(step_ms)  # the step, then the reaper's next tick one second later in real time
            src.run(1000)
            assert abs(now() - (T0 + 1000)) <= 1000, "the service clock followed the step"
            await run_with_heartbeats(q, now, src, held, 60)
            assert len(held) == 10, "the 5 ready jobs ran once, the 5 running ones were not handed out again"
            for j in held:
                assert j.lease is not None
                done = await q.ack(j.id, j.lease.token, "ok", now())
                assert done.state is State.DONE and done.attempts == 1
        finally:
            await store.close()

    asyncio.run(run())
    way = "forward" if step_ms > 0 else "back"
    record(f"clock step {way} by 1 h under the service clock (job queue, in process)",
           "no lease expired by the step, no job delivered twice, the clock never back, every job DONE once", 1)


def test_abandoned_lease_still_expires_while_a_back_step_is_slewed(tmp_path: Path) -> None:
    """The service clock runs at 11/12 speed at worst while it absorbs a back step: a lease whose worker
    died still runs out after its visibility timeout (30 s, give or take 1/12), not an hour later."""

    async def run() -> None:
        store, q = await queue_on(tmp_path)
        src = Sources()
        now = Watched(src)
        try:
            await q.enqueue(EnqueueRequest(queue="clk", payload=0, visibility_timeout_s=30), now())
            [job] = await q.lease(["clk"], 1, now(), worker="w1")
            src.step(-HOUR)
            waited = 0
            while not await q.expire(now()):
                src.run(100)
                waited += 100
                assert waited < 60_000, "the abandoned lease never ran out"
            assert 30_000 * 12 // 13 <= waited <= 30_000 * 12 // 11 + 100, waited
            [again] = await q.lease(["clk"], 1, now(), worker="w2")
            assert again.id == job.id and again.attempts == 2
        finally:
            await store.close()

    asyncio.run(run())


def test_gateway_reaper_on_its_service_clock(tmp_path: Path) -> None:
    """Over HTTP: a gateway given a ServiceClock (fake sources) leases a job, the wall clock steps an hour
    forward, the reaper ticks: no second worker gets the job, the first one's ack lands; then an hour back:
    the clock does not go back and the next job is delivered once."""
    from tests.unit.test_gateway_harness import gateway

    async def run() -> None:
        src = Sources(wall_ns=time.time_ns())  # near real time: the store's own TTLs run on it
        clock = ServiceClock(src.wall, src.mono)
        async with gateway(tmp_path, clock=clock) as api:  # type: ignore[arg-type]
            admin = await api.admin_token()
            worker = await api.make_user("runner", ["worker"])

            async def call(path: str, doc: dict[str, Any], token: str = worker) -> Any:
                r = await api.call("POST", f"/api/v1/jobs{path}", token=token, json=doc)
                assert r.code in (200, 201), r.body
                return r.json()

            first = (await call("", {"queue": "clk", "payload": 1, "visibility_timeout": 30}, admin))["job"]
            [got] = (await call("/lease", {"queues": ["clk"]}))["jobs"]
            assert got["id"] == first["id"]
            before = clock()
            src.step(HOUR)
            src.run(1000)
            await api.service.reaper.tick()
            assert (await call("/lease", {"queues": ["clk"]}))["jobs"] == [], "a forward step expired the lease"
            done = (await call(f"/{got['id']}/ack", {"lease_token": got["lease"]["token"], "result": "ok"}))["job"]
            assert done["state"] == "DONE" and done["attempts"] == 1
            assert 1000 <= clock() - before <= 1000 + 1000 // 12 + 1

            second = (await call("", {"queue": "clk", "payload": 2, "visibility_timeout": 30}, admin))["job"]
            mark = clock()
            src.step(-2 * HOUR)
            src.run(1000)
            await api.service.reaper.tick()
            assert clock() >= mark
            [got2] = (await call("/lease", {"queues": ["clk"]}))["jobs"]
            assert got2["id"] == second["id"] and got2["attempts"] == 1
            assert (await call("/lease", {"queues": ["clk"]}))["jobs"] == []

    asyncio.run(run())
    record("clock steps forward and back by 1 h (gateway over HTTP, its reaper on the service clock)",
           "no lease expired by the step, acks land, no job delivered twice", 1)


def test_tokens_stay_on_the_wall_clock_while_a_step_is_slewed(tmp_path: Path) -> None:
    """Two gateways share a store; this one's wall clock stepped an hour forward (its service clock now
    lags the wall), the peer's did not.  A token the peer mints at wall time is accepted here (checked
    on the wall clock, not as "issued in the future"), and this gateway's own login mints at wall time
    too, while its job deadlines stay on the service clock."""
    from helios_core.auth.audit import Actor
    from tests.unit.test_gateway_harness import gateway

    async def run() -> None:
        src = Sources(wall_ns=time.time_ns())
        clock = ServiceClock(src.wall, src.mono)
        wall = lambda: src.wall() // 1_000_000  # noqa: E731
        async with gateway(tmp_path, clock=clock, wall_clock=wall) as api:  # type: ignore[arg-type]
            src.step(HOUR)
            src.run(1000)
            assert wall() - clock() > HOUR // 2, "the service clock lags the stepped wall clock"
            r = await api.call("GET", "/metrics")
            [line] = [ln for ln in r.body.decode().splitlines()
                      if ln.startswith("helios_service_clock_behind_wall_seconds ")]
            assert HOUR / 2000 < float(line.split()[1]) <= HOUR / 1000, line  # what operators alert on
            peer = await api.service.gateway.auth.login("admin", api.admin_password, wall(), Actor(client="peer"))
            r = await api.call("GET", "/api/v1/auth/me", token=peer.access_token)
            assert r.code == 200, r.body
            login = {"username": "admin", "password": api.admin_password}
            mine = await api.call("POST", "/api/v1/auth/login", json=login)
            assert mine.code == 200, mine.body
            claims = jwt.decode(mine.json()["access_token"], options={"verify_signature": False})
            assert abs(claims["iat"] * 1000 - wall()) < 5000, "a login mints at wall time"

    asyncio.run(run())
    record("wall clock stepped 1 h forward on one of two gateways (tokens)",
           "tokens minted by either are accepted by both: auth reads the wall clock", 1)


def test_rate_limit_forward_and_back_steps() -> None:
    policy = Policy(limit=10, window_s=10)
    bucket = None
    for _ in range(10):  # drain at T0
        decision, bucket = take(bucket, policy, T0)
        assert decision.allowed
    drained = bucket
    # Back an hour: nothing refills, nothing is allowed.
    decision, new = take(drained, policy, T0 - HOUR)
    assert not decision.allowed and new is None
    # Forward a day: full, but only to capacity: 10 allowed, the 11th refused.
    b = drained
    allowed = 0
    for _ in range(20):
        decision, nb = take(b, policy, T0 + 24 * HOUR)
        if decision.allowed:
            allowed += 1
            b = nb
    assert allowed == policy.limit, f"a forward step allowed {allowed} > capacity {policy.limit}"
    # Back again after the forward step: no second refill.
    decision, _ = take(b, policy, T0 + 24 * HOUR - HOUR)
    assert not decision.allowed
    record("clock steps forward 1 day / back 1 h (token bucket)",
           "a forward step refills to capacity only; a back step refills nothing", 1)


def test_rate_limit_on_the_service_clock_refills_only_real_time() -> None:
    """A forward step of a day on the service clock refills what one real second refills, not the bucket."""
    policy = Policy(limit=600, window_s=60)  # 10 a second
    src = Sources()
    now = Watched(src)
    bucket = None
    for _ in range(600):
        decision, bucket = take(bucket, policy, now())
        assert decision.allowed
    for step in (24 * HOUR, -24 * HOUR):
        src.step(step)
        src.run(1000)
        allowed = 0
        for _ in range(600):
            decision, nb = take(bucket, policy, now())
            if decision.allowed:
                allowed += 1
                bucket = nb
        assert 9 <= allowed <= 11, f"one real second after a {step // HOUR} h step allowed {allowed}, not ~10"
    record("clock steps forward / back 1 day under the service clock (token bucket)",
           "a step refills only what the real time that passed refills (within 1/12)", 1)
