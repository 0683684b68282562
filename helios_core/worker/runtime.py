"""`Worker`: lease jobs over the gateway's HTTP API, run them in slots, heartbeat, ack; stop gracefully.

Slots.  ``concurrency`` slots; a lease asks for as many jobs as there are
free slots (up to 100), so every leased job starts at once and nothing sits
leased on this worker while another could run it.  A slot is busy while its
job's handler runs; it frees when the handler returns, before the ack is
sent, so acking never holds back the next job.

Leases.  A long poll (``wait_s``, 20 s) when idle; ``--burst`` polls without
waiting and exits once a lease comes back empty with nothing running.  A
gateway that cannot be reached (or answers 5xx or 429) is retried with a
capped, jittered exponential backoff and logged; the worker never gives up
on it.  Refused credentials (401/403) or a refused request (400) are fatal:
running jobs are finished, then `run` raises.

Heartbeats.  While a job runs, its lease is extended every third of its
visibility timeout, so a job may run far longer than the timeout; the
timeout only bounds how long a *dead* worker keeps its jobs.  An extend that
answers 409 lease_lost means another worker has the job: the run is
cancelled and its result will not be sent.

Acks are sent in groups: every job that finished while the previous ack
request was in flight goes in the next one (POST /api/v1/jobs/ack), like a
group commit.  409 lease_lost on an ack is logged and the job dropped.
Failures are nacked with the error text; the queue's backoff applies.

Shutdown, as a state machine driven by `request_stop` (signal handlers only
call it; it only sets events):

    RUNNING --stop--> DRAINING: no more leases (an outstanding long poll is
        abandoned, and the gateway stops waiting when its connection closes;
        jobs that arrive anyway are nacked at once, unstarted);
        running jobs get ``grace_s`` to finish and are acked as usual
    DRAINING --grace over, or a second stop--> ABORTING: the runs still going
        are cancelled (an exec command's process group gets SIGTERM, then
        SIGKILL) and their jobs nacked with retry_delay 0, so another worker
        takes them at once
    then: pending acks/nacks are flushed (bounded), `run` returns.

A worker that is SIGKILLed does nothing at all: its leases lapse after their
visibility timeout and the jobs are delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from helios_core.errors import HeliosError, NotFoundError, RateLimitedError
from helios_core.jobs import LeaseLostError, QueueNotFoundError
from helios_core.observability.logging import get_logger
from helios_core.worker.client import AckRequest, JobsClient, is_transient
from helios_core.worker.config import MAX_LEASE_BATCH, WorkerConfig, default_worker_name
from helios_core.worker.handlers import JobContext, Outcome, Runner, describe_exception
from helios_core.worker.metrics import DURATION, INFLIGHT, JOBS

__all__ = ["Worker", "Backoff"]

log = get_logger("worker")
T = TypeVar("T")

ACK_BATCH_BYTES = 512 * 1024  # results per batch ack, well under the gateway's 1 MiB body limit
FLUSH_S = 10.0  # at shutdown, how long acks and nacks may still take
SHUTDOWN_ERROR = "worker shutting down: job given back unfinished"


class Backoff:
    """Capped exponential backoff with jitter: attempt n waits a random time in [d/2, d], d = min(cap, base*2^n)."""

    def __init__(self, base_s: float, cap_s: float, rng: random.Random | None = None) -> None:
        self.base_s, self.cap_s = base_s, cap_s
        self.rng = rng or random.Random()
        self.failures = 0

    def next(self) -> float:
        d = min(self.cap_s, self.base_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return self.rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.failures = 0


@dataclass(eq=False)
class _Slot:
    """One leased job, from lease to ack/nack."""

    job: dict[str, Any]
    token: str
    ctx: JobContext
    visibility_s: int
    started: float
    abort_reason: str | None = None
    aborted: asyncio.Event = field(default_factory=asyncio.Event)
    beat_now: asyncio.Event = field(default_factory=asyncio.Event)
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return str(self.job["id"])

    @property
    def queue(self) -> str:
        return str(self.job["queue"])

    @property
    def key(self) -> str:
        # Not the job id alone: a job whose lease this worker lost may come back to it while the old run
        # still winds down, and the two must not be confused.
        return f"{self.id}/{self.token}"

    def abort(self, reason: str) -> None:
        if self.abort_reason is None:
            self.abort_reason = reason
            self.aborted.set()


@dataclass(eq=False)
class _PendingAck:
    slot: _Slot
    result: Any
    size: int
    done: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Worker:
    """Runs `runner` on jobs of ``config.queues`` leased through `client` until stopped (or drained, in burst).

    ``clock`` (monotonic seconds) and ``rng`` (backoff jitter) can be replaced in tests.
    """

    def __init__(self, client: JobsClient, runner: Runner, config: WorkerConfig, *,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.client = client
        self.runner = runner
        self.config = config
        self.name = config.name or default_worker_name()
        self.clock = clock
        self.rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._aborting = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._busy: set[str] = set()  # keys of jobs whose handler is running (or not yet stopped): the slots taken
        self._orphans: set[str] = set()  # of those, runs whose job was given back already (a sync thread)
        self._slots: dict[str, _Slot] = {}  # every job not yet acked or nacked
        self._acks: list[_PendingAck] = []
        self._ack_wake = asyncio.Event()
        self._fatal: HeliosError | None = None
        self.leased = 0  # jobs leased so far (for logs and tests)

    # -- control ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: drain (stop leasing, let running jobs finish within the grace period).
        Second call: abort (give the running jobs back now).  Safe to call from a signal handler."""
        if self._stopping.is_set():
            self._aborting.set()
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> int:
        """Jobs being worked on (not counting handler threads that outlived their job)."""
        return len(self._busy - self._orphans)

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self._stopping.is_set():
            log.warning("second stop signal: giving running jobs back now", signal=name)
        else:
            log.info("stop signal: no more leases; running jobs may finish", signal=name,
                     running=self.running, grace_s=self.config.grace_s)
        self.request_stop()

    async def run(self, *, install_signals: bool = False) -> None:
        """Work until stopped (or, with burst, until the queues are drained).  Raises the fatal
        HeliosError (bad token, missing permission) after finishing what was running."""
        loop = asyncio.get_running_loop()
        sigs = (signal.SIGTERM, signal.SIGINT) if install_signals else ()
        for sig in sigs:
            loop.add_signal_handler(sig, self._on_signal, sig)
        acker = asyncio.create_task(self._ack_loop(), name="acks")
        c = self.config
        log.info("worker started", worker=self.name, queues=",".join(c.queues), handler=self.runner.description,
                 concurrency=c.concurrency, visibility_s=c.visibility_s or "job's", timeout_s=c.timeout_s or "none",
                 burst=c.burst)
        try:
            await self._lease_loop()
            await self._shutdown()
        finally:
            acker.cancel()
            for slot in list(self._slots.values()):
                if slot.task is not None:
                    slot.task.cancel()
            for sig in sigs:
                loop.remove_signal_handler(sig)
        log.info("worker stopped", worker=self.name, leased=self.leased)
        if self._fatal is not None:
            raise self._fatal

    # -- leasing ------------------------------------------------------------------------------

    def _free(self) -> int:
        return self.config.concurrency - len(self._busy)

    async def _wait_any(self, *events: asyncio.Event, timeout: float | None = None) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _until_stopped(self, aw: Awaitable[T]) -> tuple[bool, T | None]:
        """(True, value) when aw finished first; (False, None) when a stop came first (aw is cancelled)."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return True, task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False, None

    async def _lease_loop(self) -> None:
        c = self.config
        backoff = Backoff(c.backoff_initial_s, c.backoff_max_s, self.rng)
        wait_s = 0 if c.burst else c.wait_s
        while not self._stopping.is_set():
            free = self._free()
            if free <= 0:
                if c.burst and not self.running and not self._slots:
                    log.warning("every slot is held by a handler that outlived its job: exiting (burst)")
                    return
                self._slot_freed.clear()
                if self._free() <= 0:
                    await self._wait_any(self._slot_freed, self._stopping)
                continue
            asked = self.clock()
            try:
                finished, jobs = await self._until_stopped(self.client.lease(
                    c.queues, max_jobs=min(free, MAX_LEASE_BATCH), visibility_timeout=c.visibility_s,
                    wait_seconds=wait_s, worker=self.name))
            except QueueNotFoundError as e:
                if c.burst and not self._slots:
                    log.warning("queue does not exist (yet): nothing to do", error=e.message)
                    return
                delay = backoff.next()
                log.warning("queue does not exist yet; waiting for a first enqueue", error=e.message,
                            retry_in_s=round(delay, 2))
                await self._wait_any(self._stopping, timeout=delay)
                continue
            except HeliosError as e:
                if not is_transient(e):
                    log.error("the gateway refused to lease: stopping", error=e.message, code=e.code,
                              status=e.status)
                    self._fatal = e
                    self._stopping.set()
                    return
                delay = backoff.next()
                if isinstance(e, RateLimitedError):
                    delay = max(delay, e.retry_after_ms / 1000)
                log.warning("cannot lease: gateway unavailable", error=e.message, failures=backoff.failures,
                            retry_in_s=round(delay, 2))
                await self._wait_any(self._stopping, timeout=delay)
                continue
            if backoff.failures:
                log.info("gateway reachable again", after_failures=backoff.failures)
                backoff.reset()
            if not finished:
                return
            jobs = jobs or []
            self.leased += len(jobs)
            if self._stopping.is_set():  # they came as we were told to stop: never start them
                for job in jobs:
                    self._give_back_unstarted(job)
                return
            for job in jobs:
                self._start(job)
            if jobs:
                continue
            if c.burst:
                if not self.running:
                    if not self._slots:  # this empty answer came with every earlier job acked or nacked
                        log.info("queues drained (burst): exiting")
                        return
                    # A nack may have made a job due again: settle, then ask once more.
                    await self._settle_reports()
                    continue
                self._slot_freed.clear()
                if self.running:
                    await self._wait_any(self._slot_freed, self._stopping)
            elif self.clock() - asked < 1.0:
                # An empty answer to a long poll should come after wait_s; one that comes at once would make
                # this loop spin, so pace it.
                await self._wait_any(self._stopping, timeout=1.0)

    async def _settle_reports(self) -> None:
        """Wait until every finished job is acked or nacked (a nack may make a job due again)."""
        pending = [s.reported.wait() for s in self._slots.values()]
        if pending:
            await self._until_stopped(asyncio.gather(*pending))

    # -- one job ------------------------------------------------------------------------------

    def _start(self, job: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        lease = job.get("lease") or {}
        vis = self.config.visibility_s or int(job.get("visibility_timeout_s") or 30)
        slot: _Slot

        def beat() -> None:  # JobContext.heartbeat, from any thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(slot.beat_now.set)

        ctx = JobContext(id=str(job["id"]), queue=str(job["queue"]), attempt=int(job.get("attempts") or 1),
                         max_attempts=int(job.get("max_attempts") or 1), worker=self.name,
                         traceparent=job.get("trace"), on_heartbeat=beat)
        slot = _Slot(job, str(lease.get("token", "")), ctx, vis, self.clock())
        self._slots[slot.key] = slot
        self._busy.add(slot.key)
        slot.task = asyncio.create_task(self._process(slot), name=f"job-{slot.id}")

    def _free_slot(self, slot: _Slot) -> None:
        self._orphans.discard(slot.key)
        if slot.key in self._busy:
            self._busy.discard(slot.key)
            self._slot_freed.set()

    async def _process(self, slot: _Slot) -> None:
        log.debug("job started", job=slot.id, queue=slot.queue, attempt=slot.ctx.attempt,
                  trace=slot.ctx.traceparent or "")
        INFLIGHT.inc()
        run = asyncio.create_task(self._run_handler(slot), name=f"run-{slot.id}")
        heart = asyncio.create_task(self._heartbeat(slot), name=f"heartbeat-{slot.id}")
        reason: str
        outcome: Outcome | None = None
        try:
            abort = asyncio.ensure_future(slot.aborted.wait())
            try:
                await asyncio.wait({run, abort}, timeout=self.config.timeout_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                abort.cancel()
            if run.done():
                outcome = run.result()
                reason = "ok" if outcome.ok else "error"
            else:
                reason = slot.abort_reason or "timeout"
                slot.ctx.cancel()
                run.cancel()
                # Let the run stop (an exec command's group is killed) before the job is given back, so that
                # two workers never run it at once.  A sync handler's thread cannot be stopped: it gets a while.
                await asyncio.wait({run}, timeout=self.runner.stop_grace_s)
        finally:
            INFLIGHT.dec()
            DURATION.labels(slot.queue).observe(self.clock() - slot.started)
            if run.done():
                self._free_slot(slot)
        try:
            if reason == "ok" and outcome is not None:
                reason = await self._ack(slot, outcome.result)
            elif reason == "error" and outcome is not None:
                log.warning("job failed", job=slot.id, queue=slot.queue, attempt=slot.ctx.attempt,
                            error=_summary(outcome.error or ""))
                heart.cancel()
                reason = await self._nack(slot, outcome.error or "failed", None, reason)
            elif reason == "timeout":
                log.warning("job timed out: stopped and given back", job=slot.id, queue=slot.queue,
                            timeout_s=self.config.timeout_s)
                heart.cancel()
                reason = await self._nack(slot, f"timed out after {self.config.timeout_s:g}s", None, reason)
            elif reason == "shutdown":
                heart.cancel()
                reason = await self._nack(slot, SHUTDOWN_ERROR, 0, reason)
            # lease_lost: the heartbeat found the job taken over; nothing to send.
        finally:
            heart.cancel()
            JOBS.labels(slot.queue, reason).inc()
            slot.reported.set()
            self._slots.pop(slot.key, None)
        if not run.done():
            log.warning("a handler still runs after its job was given back; its slot stays busy until it returns",
                        job=slot.id)
            self._orphans.add(slot.key)
            self._slot_freed.set()  # not a free slot, but one job fewer to wait for (burst, shutdown)
            await asyncio.wait({run})
            self._free_slot(slot)

    async def _run_handler(self, slot: _Slot) -> Outcome:
        try:
            return await self.runner.run(slot.job.get("payload"), slot.ctx)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a runner bug, not the job's: still only this job fails
            log.opt(exception=e).error("runner failed", job=slot.id)
            return Outcome.failure(describe_exception(e))

    def _give_back_unstarted(self, job: dict[str, Any]) -> None:
        slot = _Slot(job, str((job.get("lease") or {}).get("token", "")),
                     JobContext(str(job["id"]), str(job["queue"]), int(job.get("attempts") or 1),
                                int(job.get("max_attempts") or 1)), 0, self.clock())
        self._slots[slot.key] = slot

        async def give_back() -> None:
            try:
                # Never started: handed back without using up an attempt.
                reason = await self._nack(slot, SHUTDOWN_ERROR, None, "shutdown", release=True)
                JOBS.labels(slot.queue, reason).inc()
            finally:
                slot.reported.set()
                self._slots.pop(slot.key, None)

        slot.task = asyncio.create_task(give_back(), name=f"giveback-{slot.id}")

    async def _heartbeat(self, slot: _Slot) -> None:
        interval = slot.visibility_s / 3
        delay = interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.beat_now.wait(), delay)
            slot.beat_now.clear()
            try:
                await self.client.extend(slot.id, slot.token, visibility_timeout=slot.visibility_s)
                delay = interval
            except (LeaseLostError, NotFoundError) as e:
                log.warning("lease lost: the job was taken over; stopping it", job=slot.id, queue=slot.queue,
                            error=e.message)
                slot.abort("lease_lost")
                return
            except HeliosError as e:
                # Two more tries fit before the lease lapses.
                delay = max(0.2, interval / 4)
                log.warning("cannot extend the lease", job=slot.id, error=e.message, retry_in_s=round(delay, 2))

    # -- reporting ----------------------------------------------------------------------------

    async def _retrying(self, what: str, slot: _Slot, call: Callable[[], Awaitable[T]]) -> T:
        """call() until it succeeds or fails for good; transient errors are retried with backoff (cancel to stop)."""
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s, self.rng)
        while True:
            try:
                return await call()
            except HeliosError as e:
                if not is_transient(e):
                    raise
                delay = backoff.next()
                if isinstance(e, RateLimitedError):
                    delay = max(delay, e.retry_after_ms / 1000)
                log.warning(f"cannot {what}: retrying", job=slot.id, error=e.message, retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def _nack(self, slot: _Slot, error: str, retry_delay_s: float | None, reason: str, *,
                    release: bool = False) -> str:
        try:
            await self._retrying("nack", slot, lambda: self.client.nack(
                slot.id, slot.token, error=error, retry_delay_seconds=retry_delay_s, release=release))
        except (LeaseLostError, NotFoundError) as e:
            log.warning("lease lost before the nack: the job was taken over; dropped", job=slot.id, error=e.message)
            return "lease_lost"
        except HeliosError as e:
            log.error("nack refused; the job returns after its visibility timeout", job=slot.id, error=e.message)
        return reason

    async def _ack(self, slot: _Slot, result: Any) -> str:
        pending = _PendingAck(slot, result, len(orjson.dumps(result)))
        self._acks.append(pending)
        self._ack_wake.set()
        outcome = await pending.done
        if outcome.startswith("nack:"):  # the gateway would not take the result (too large, ...)
            return await self._nack(slot, outcome[5:], None, "error")
        if outcome == "ok":
            log.info("job done", job=slot.id, queue=slot.queue, attempt=slot.ctx.attempt,
                     duration_s=round(self.clock() - slot.started, 3))
        return outcome

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await asyncio.sleep(0)  # jobs finishing in this same loop pass join the batch
            while self._acks:
                batch: list[_PendingAck] = []
                size = 0
                while self._acks and len(batch) < MAX_LEASE_BATCH and (
                        not batch or size + self._acks[0].size <= ACK_BATCH_BYTES):
                    item = self._acks.pop(0)
                    batch.append(item)
                    size += item.size
                await self._send_acks(batch)

    async def _send_acks(self, batch: list[_PendingAck]) -> None:
        try:
            if len(batch) == 1:
                await self._ack_one(batch[0])
                return
            try:
                results = await self._retrying("ack", batch[0].slot, lambda: self.client.ack_batch(
                    [AckRequest(p.slot.id, p.slot.token, p.result) for p in batch]))
            except HeliosError as e:
                # The batch as a whole was refused (too large, or a gateway without batch acks): one by one.
                log.debug("batch ack refused; acking one by one", error=e.message)
                for p in batch:
                    await self._ack_one(p)
                return
            for p, r in zip(batch, results, strict=False):
                if r.ok:
                    p.done.set_result("ok")
                else:
                    p.done.set_result(self._ack_failed(p, r.error))
            for p in batch[len(results):]:
                await self._ack_one(p)
        except asyncio.CancelledError:
            for p in batch:
                if not p.done.done():
                    p.done.cancel()
            raise

    async def _ack_one(self, p: _PendingAck) -> None:
        try:
            await self._retrying("ack", p.slot, lambda: self.client.ack(p.slot.id, p.slot.token, p.result))
        except HeliosError as e:
            p.done.set_result(self._ack_failed(p, e))
        else:
            p.done.set_result("ok")

    def _ack_failed(self, p: _PendingAck, err: HeliosError | None) -> str:
        if err is None or isinstance(err, LeaseLostError | NotFoundError) or err.code == "lease_lost":
            log.warning("lease lost before the ack: the job was taken over; result dropped", job=p.slot.id,
                        queue=p.slot.queue, error=err.message if err else "")
            return "lease_lost"
        if err.status in (400, 413):  # the result itself was refused (too large, ...): fail the job with why
            return f"nack:result refused by the gateway: {err.message}"
        log.error("ack refused; the job returns after its visibility timeout", job=p.slot.id, error=err.message,
                  code=err.code)
        return "error"

    # -- shutdown -----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._stopping.set()
        deadline = self.clock() + self.config.grace_s
        if self.running and not self._aborting.is_set():
            log.info("waiting for running jobs to finish", running=self.running, grace_s=self.config.grace_s)
        while self.running and not self._aborting.is_set():
            left = deadline - self.clock()
            if left <= 0:
                break
            self._slot_freed.clear()
            await self._wait_any(self._slot_freed, self._aborting, timeout=left)
        unfinished = [s for s in self._slots.values() if s.key in self._busy]
        if unfinished:
            log.warning("grace period over: giving running jobs back", jobs=len(unfinished))
            for slot in unfinished:
                slot.abort("shutdown")
        pending = [s.reported.wait() for s in self._slots.values()]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), self.runner.stop_grace_s + FLUSH_S)
            except TimeoutError:
                log.error("could not report every job in time; they return after their visibility timeout",
                          jobs=len(self._slots))


def _summary(error: str) -> str:
    """The first line of an error text, and its last when that says more (a command's last stderr line)."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    first, last = lines[0], lines[-1].strip()
    return first if last in first else f"{first} ... {last}"
