"""`Worker`: lease jobs over the gateway's HTTP API, run them in slots, heartbeat, ack; stop gracefully.

Slots.  ``concurrency`` slots.  A slot is busy while its job's handler runs;
it frees when the handler returns, before the ack is sent, so acking never
holds back the next job.  A job costs one asyncio task (its run), which
also hands the result to the acker when the handler returns; nothing else
is made per job unless the job needs it (a timer for --timeout, a
heartbeat task once it has run for a third of its visibility, a nack).

Leases.  One lease request is out at a time.  While the queue has a
backlog and jobs are short, it goes out while the slots are still busy
("lease ahead"): it asks for the free slots plus one batch
(``min(concurrency, 100)``) beyond them, minus the jobs already held, so
that when the running jobs finish the next ones are here instead of a
round trip away.  Jobs that arrive with no slot free wait in a local queue
and start, in lease order, the moment a slot frees.  That queue is bounded
by the batch because a job waiting there is held by this worker (another
could run it) and its visibility timeout runs; the rest of the rules keep
that cost small:

- Lease ahead only while jobs are short: the worker keeps a moving average
  of its handlers' run time and leases ahead only while it is under
  `LEASE_AHEAD_MAX_RUN_S` (and not before a first job has finished).  With
  jobs of a second or more a round trip per batch is not worth holding
  jobs for.
- Lease ahead only while the last lease brought all it asked for: the
  queue has more.  Otherwise a lease asks for free slots only, and none
  goes out while every slot is busy (a trickle of jobs costs one lease
  each, not two).
- A job that has waited locally for a third of its visibility timeout (the
  moment a heartbeat would extend a running one) is given back unstarted
  (``release``: due at once, the delivery not counted as an attempt), and
  leasing ahead pauses until short jobs bring the average down again.
- While the local queue holds jobs, the next lease waits until it can ask
  for at least half a batch, so that short jobs do not turn into a stream
  of one-job leases.

A lease long-polls (``wait_s``, 20 s) only when the last answer was not
full; otherwise the queue most likely has more, so it asks without waiting,
and at a stop such a request is still awaited (it answers at once) and
what it brings is given back unstarted.  ``--burst`` never waits and exits
once a lease comes back empty with nothing running.  A gateway that
cannot be reached (or answers 5xx or 429) is retried with a capped,
jittered exponential backoff and logged; the worker never gives up on it.
Refused credentials (401/403) or a refused request (400) are fatal:
running jobs are finished, then `run` raises.

Heartbeats.  A job's lease is extended once a third of its visibility
timeout has passed since it was leased, and every third after that, so a
job may run far longer than the timeout; the timeout only bounds how long
a *dead* worker keeps its jobs.  Until then a job only has a share of a
timer (one ``loop.call_later`` per lease answer): most jobs finish long
before and never make a request or a task for it.  An extend that answers
409 lease_lost means another worker has the job: the run is cancelled and
its result will not be sent.  The heartbeat goes on until the job is acked
or nacked, so a finished job keeps its lease while its ack waits.

Acks are sent in groups: every job that finished while the previous ack
request was in flight goes in the next one (POST /api/v1/jobs/ack), like a
group commit.  409 lease_lost on an ack is logged and the job dropped.
Failures are nacked with the error text; the queue's backoff applies.

Shutdown, as a state machine driven by `request_stop` (signal handlers only
call it; it only sets events):

    RUNNING --stop--> DRAINING: no more leases (an outstanding long poll is
        abandoned, and the gateway stops waiting when its connection closes;
        a lease that does not wait is awaited for up to 5 s; jobs that
        arrive anyway, and those waiting locally for a slot, are given back
        at once, unstarted); running jobs get ``grace_s`` to finish and are
        acked as usual
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
import functools
import random
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson

from helios_core.errors import HeliosError, NotFoundError, RateLimitedError
from helios_core.jobs import LeaseLostError, QueueNotFoundError
from helios_core.observability import tracing
from helios_core.observability.logging import get_logger
from helios_core.worker.client import AckRequest, JobsClient, is_transient
from helios_core.worker.config import MAX_LEASE_BATCH, WorkerConfig, default_worker_name
from helios_core.worker.handlers import JobContext, Outcome, Runner, describe_exception
from helios_core.worker.metrics import DURATION, INFLIGHT_JOBS, JOBS

__all__ = ["Worker", "Backoff"]

log = get_logger("worker")
T = TypeVar("T")

ACK_BATCH_BYTES = 512 * 1024  # results per batch ack, well under the gateway's 1 MiB body limit
FLUSH_S = 10.0  # at shutdown, how long acks and nacks may still take
SHUTDOWN_ERROR = "worker shutting down: job given back unfinished"
LEASE_AHEAD_MAX_RUN_S = 1.0  # lease ahead only while handlers take less than this on average
RUN_AVG_WEIGHT = 0.1  # of the newest run time in that moving average
# With jobs.strict_queues the gateway answers a lease on a queue it does not know with 404 (without
# it, such a lease long-polls like any other until the queue's first enqueue).  The worker then asks
# again this often (not backed off like an unreachable gateway: the queue may be configured by a reload).
QUEUE_MISSING_POLL_S = 1.0
LEASE_STOP_GRACE_S = 5.0  # at a stop, how long a lease that does not wait (wait_seconds=0) may still take


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


class _Slot:
    """One started job, from its start to its ack/nack.

    Compared by identity: a job whose lease this worker lost may come back to it while the old run
    still winds down, and the two must not be confused.
    """

    __slots__ = ("job", "id", "queue", "token", "ctx", "visibility_s", "leased_at", "started", "task",
                 "abort_reason", "finished", "cohort", "deadline", "beat_task", "beat_now")

    def __init__(self, job: dict[str, Any], ctx: JobContext, visibility_s: int, leased_at: float,
                 started: float) -> None:
        self.job = job
        self.id = ctx.id
        self.queue = ctx.queue
        self.token = str((job.get("lease") or {}).get("token", ""))
        self.ctx = ctx
        self.visibility_s = visibility_s
        self.leased_at = leased_at
        self.started = started
        self.task: asyncio.Task[None] | None = None  # the run
        self.abort_reason: str | None = None  # set once the run is being stopped (timeout, lease_lost, shutdown)
        self.finished = False  # the handler returned and the outcome was taken
        self.cohort: _Cohort | None = None  # until the first heartbeat
        self.deadline: asyncio.TimerHandle | None = None  # --timeout
        self.beat_task: asyncio.Task[None] | None = None
        self.beat_now: asyncio.Event | None = None


class _Cohort:
    """The started jobs of one lease answer (and one visibility timeout): their first heartbeat is due at
    the same moment, so they share one timer instead of one each."""

    __slots__ = ("key", "slots", "timer")

    def __init__(self, key: tuple[float, int]) -> None:
        self.key = key
        self.slots: set[_Slot] = set()
        self.timer: asyncio.TimerHandle | None = None


def _no_heartbeat() -> None:
    pass


class _QueueMetrics:
    """A queue's labelled metrics, each looked up once instead of per job."""

    __slots__ = ("queue", "duration", "_outcomes")

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.duration = DURATION.labels(queue)
        self._outcomes: dict[str, Any] = {}

    def outcome(self, reason: str) -> Any:
        counter = self._outcomes.get(reason)
        if counter is None:
            counter = self._outcomes[reason] = JOBS.labels(self.queue, reason)
        return counter


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
        self._changed = asyncio.Event()  # a slot freed, or a stop: what the lease loop and the shutdown wait for
        self._drained = asyncio.Event()  # set while every job is acked or nacked
        self._drained.set()
        self._busy: set[_Slot] = set()  # jobs whose handler is running (or not yet stopped): the slots taken
        self._orphans: set[_Slot] = set()  # of those, runs whose job was given back already (a sync thread)
        self._slots: set[_Slot] = set()  # every started job not yet acked or nacked, and every give-back under way
        self._waiting: deque[tuple[dict[str, Any], float]] = deque()  # leased ahead, not started: (job, leased at)
        self._waiting_timer: asyncio.TimerHandle | None = None
        self._cohorts: dict[tuple[float, int], _Cohort] = {}  # (leased at, visibility) -> jobs not heartbeating yet
        self._run_avg: float | None = None  # moving average of handler run time, seconds
        self._last_full = False  # the last lease brought all it asked for: the queue has more
        self._batch = min(config.concurrency, MAX_LEASE_BATCH)
        self._acks: deque[tuple[_Slot, Any, int]] = deque()
        self._ack_wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()  # everything but the runs: nacks, stops, give-backs, heartbeats
        self._metrics: dict[str, _QueueMetrics] = {}
        self._fatal: HeliosError | None = None
        self.leased = 0  # jobs leased so far (for logs and tests)

    # -- control ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: drain (stop leasing, let running jobs finish within the grace period).
        Second call: abort (give the running jobs back now).  Safe to call from a signal handler."""
        if self._stopping.is_set():
            self._aborting.set()
        self._stopping.set()
        self._changed.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> int:
        """Jobs being worked on (not counting handler threads that outlived their job)."""
        return len(self._busy) - len(self._orphans)

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
            for slot in self._slots | self._busy:
                if slot.task is not None:
                    slot.task.cancel()
                self._stop_timers(slot)
            for task in list(self._tasks):
                task.cancel()
            for cohort in self._cohorts.values():
                if cohort.timer is not None:
                    cohort.timer.cancel()
            self._cohorts.clear()
            for sig in sigs:
                loop.remove_signal_handler(sig)
        log.info("worker stopped", worker=self.name, leased=self.leased)
        if self._fatal is not None:
            raise self._fatal

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A task for the less common paths (asyncio keeps only weak references to tasks: hold it)."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- leasing ------------------------------------------------------------------------------

    def _free(self) -> int:
        return self.config.concurrency - len(self._busy)

    def _leasing_ahead(self) -> bool:
        return self._last_full and self._run_avg is not None and self._run_avg < LEASE_AHEAD_MAX_RUN_S

    def _want(self) -> int:
        """How many jobs the next lease asks for (0: none now)."""
        ahead = self._batch if self._leasing_ahead() else 0
        want = min(MAX_LEASE_BATCH, self.config.concurrency + ahead - len(self._busy) - len(self._waiting))
        if self._waiting and want < (self._batch + 1) // 2:
            return 0  # jobs are waiting here already: ask when a fuller batch is worth a request
        return want

    async def _wait_any(self, *events: asyncio.Event, timeout: float | None = None) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _until_stopped(self, aw: Awaitable[T], grace_s: float = 0.0) -> tuple[bool, T | None]:
        """(True, value) when aw finished first, or within grace_s of a stop; (False, None) when a stop came
        first (aw is cancelled)."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done() and grace_s > 0:
            await asyncio.wait({task}, timeout=grace_s)
        if task.done():
            return True, task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False, None

    async def _lease_loop(self) -> None:
        c = self.config
        backoff = Backoff(c.backoff_initial_s, c.backoff_max_s, self.rng)
        while not self._stopping.is_set():
            want = self._want()
            if want <= 0:
                if c.burst and not self.running and not self._slots:
                    log.warning("every slot is held by a handler that outlived its job: exiting (burst)")
                    return
                self._changed.clear()
                if self._want() <= 0:
                    await self._changed.wait()
                continue
            asked = self.clock()
            # After a full answer the queue most likely has more: no need to wait on the gateway, and such a
            # request is not abandoned at a stop (it answers at once; what it brings is given back).  A
            # long poll is abandoned: it may wait for wait_s.
            wait_s = 0 if c.burst or self._last_full else c.wait_s
            try:
                finished, jobs = await self._until_stopped(self.client.lease(
                    c.queues, max_jobs=want, visibility_timeout=c.visibility_s, wait_seconds=wait_s,
                    worker=self.name), grace_s=0 if wait_s else LEASE_STOP_GRACE_S)
            except QueueNotFoundError as e:
                if c.burst and not self._slots:
                    log.warning("queue does not exist (yet): nothing to do", error=e.message)
                    return
                delay = min(backoff.next(), QUEUE_MISSING_POLL_S)
                if backoff.failures == 1:  # once, not every second
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
            self._last_full = len(jobs) >= want
            if self._stopping.is_set():  # they came as we were told to stop: never start them
                for job in jobs:
                    self._give_back_unstarted(job)
                return
            for job in jobs:
                if len(self._busy) < c.concurrency:
                    self._start(job, asked)
                else:
                    self._waiting.append((job, asked))
            if self._waiting:
                self._arm_waiting_timer()
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
                self._changed.clear()
                if self.running:
                    await self._changed.wait()
            elif wait_s and self.clock() - asked < 1.0:
                # An empty answer to a long poll should come after wait_s; one that comes at once would make
                # this loop spin, so pace it.
                await self._wait_any(self._stopping, timeout=1.0)

    async def _settle_reports(self) -> None:
        """Wait until every finished job is acked or nacked (a nack may make a job due again)."""
        if self._slots:
            await self._until_stopped(self._drained.wait())

    def _visibility(self, job: dict[str, Any]) -> int:
        return self.config.visibility_s or int(job.get("visibility_timeout_s") or 30)

    def _arm_waiting_timer(self) -> None:
        if self._waiting_timer is None and self._waiting:
            job, leased_at = self._waiting[0]
            due = leased_at + self._visibility(job) / 3 - self.clock()
            self._waiting_timer = asyncio.get_running_loop().call_later(max(0.0, due), self._expire_waiting)

    def _expire_waiting(self) -> None:
        """Give back the jobs that waited here for a slot for a third of their visibility (the slots are
        taken by jobs longer than the average said): another worker may be free for them."""
        self._waiting_timer = None
        now = self.clock()
        stale = 0
        while self._waiting and now - self._waiting[0][1] >= self._visibility(self._waiting[0][0]) / 3 - 0.01:
            job, leased_at = self._waiting.popleft()
            self._give_back_unstarted(job, "released")
            stale += 1
        if stale:
            waited = now - leased_at
            log.info("jobs leased ahead waited too long for a slot: given back unstarted", jobs=stale,
                     waited_s=round(waited, 2))
            # Jobs take longer than the average said: stop leasing ahead until short jobs bring it down.
            self._run_avg = max(self._run_avg or 0.0, waited, 2 * LEASE_AHEAD_MAX_RUN_S)
        self._arm_waiting_timer()

    # -- one job ------------------------------------------------------------------------------

    def _start(self, job: dict[str, Any], leased_at: float) -> None:
        loop = asyncio.get_running_loop()
        vis = self._visibility(job)
        ctx = JobContext(id=str(job["id"]), queue=str(job["queue"]), attempt=int(job.get("attempts") or 1),
                         max_attempts=int(job.get("max_attempts") or 1), worker=self.name,
                         traceparent=job.get("trace"))
        now = self.clock()
        slot = _Slot(job, ctx, vis, leased_at, now)
        ctx.on_heartbeat = functools.partial(self._heartbeat_from_anywhere, loop, slot)
        self._slots.add(slot)
        self._drained.clear()
        self._busy.add(slot)
        key = (leased_at, vis)
        cohort = self._cohorts.get(key)
        if cohort is None:
            cohort = self._cohorts[key] = _Cohort(key)
            cohort.timer = loop.call_later(max(0.0, leased_at + vis / 3 - now), self._beats_due, key)
        cohort.slots.add(slot)
        slot.cohort = cohort
        if self.config.timeout_s:
            slot.deadline = loop.call_later(self.config.timeout_s, self._abort, slot, "timeout")
        INFLIGHT_JOBS.n += 1
        slot.task = loop.create_task(self._run(slot), name=f"job-{slot.id}")

    async def _run(self, slot: _Slot) -> None:
        if tracing.state.on:
            await self._run_traced(slot)
        else:
            await self._run_job(slot)

    async def _run_traced(self, slot: _Slot) -> None:
        """The job's CONSUMER span ``job <queue>``, a child of the span that enqueued it (the job's
        ``trace``): the handler runs inside it, and TRACEPARENT (shell handlers) names it."""
        ctx = slot.ctx
        span = tracing.start_span(
            f"job {slot.queue}", kind=tracing.SpanKind.CONSUMER, parent=ctx.traceparent or None,
            attributes={"messaging.system": "helios", "messaging.operation.type": "process",
                        "messaging.destination.name": slot.queue, "messaging.message.id": slot.id,
                        "helios.job.attempt": ctx.attempt, "helios.worker": self.name})
        ctx.traceparent = tracing.traceparent_of(span) or ctx.traceparent
        with tracing.use(span, end_on_exit=True):
            await self._run_job(slot)

    async def _run_job(self, slot: _Slot) -> None:
        log.debug("job started", job=slot.id, queue=slot.queue, attempt=slot.ctx.attempt,
                  trace=slot.ctx.traceparent or "")
        try:
            outcome = await self.runner.run(slot.job.get("payload"), slot.ctx)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if slot.abort_reason is not None or me is None or me.cancelling():
                raise  # stopped by this worker (or the worker is exiting)
            # The handler's own await was cancelled (by something it started): a failure of the job, which
            # must still be reported like one, not a stop.
            outcome = Outcome.failure("the handler raised asyncio.CancelledError")
        except Exception as e:  # a runner bug, not the job's: still only this job fails
            log.opt(exception=e).error("runner failed", job=slot.id)
            outcome = Outcome.failure(describe_exception(e))
        if slot.abort_reason is not None:  # stopped meanwhile (a handler that swallowed the cancel): _stop reports
            return
        slot.finished = True
        if slot.deadline is not None:
            slot.deadline.cancel()
        self._run_ended(slot, completed=True)
        if outcome.ok:
            self._acks.append((slot, outcome.result, len(orjson.dumps(outcome.result))))
            self._ack_wake.set()
        else:
            log.warning("job failed", job=slot.id, queue=slot.queue, attempt=slot.ctx.attempt,
                        error=_summary(outcome.error or ""))
            tracing.set_error(tracing.current_span(), _summary(outcome.error or "failed"))
            self._spawn(self._nack_and_report(slot, outcome.error or "failed", None, "error"), f"nack-{slot.id}")

    def _run_ended(self, slot: _Slot, *, completed: bool) -> None:
        """The handler returned (completed), or was stopped and given its grace to end."""
        elapsed = self.clock() - slot.started
        INFLIGHT_JOBS.n -= 1
        self._queue_metrics(slot.queue).duration.observe(elapsed)
        avg = self._run_avg  # a run stopped at --timeout counts too: it says jobs are long
        self._run_avg = elapsed if avg is None else avg + (elapsed - avg) * RUN_AVG_WEIGHT
        if completed or (slot.task is not None and slot.task.done()):
            self._free_slot(slot)

    def _free_slot(self, slot: _Slot) -> None:
        self._orphans.discard(slot)
        if slot in self._busy:
            self._busy.discard(slot)
            self._changed.set()
            # The slot goes to the job that waited longest for one, at once: no round trip.
            if self._waiting and not self._stopping.is_set():
                job, leased_at = self._waiting.popleft()
                self._start(job, leased_at)

    def _abort(self, slot: _Slot, reason: str) -> None:
        """Stop a running job: its handler is cancelled, and its job nacked (or, lease_lost, dropped)."""
        if slot.finished or slot.abort_reason is not None or slot.task is None:
            return
        slot.abort_reason = reason
        if slot.deadline is not None:
            slot.deadline.cancel()
        slot.ctx.cancel()
        slot.task.cancel()
        self._spawn(self._stop(slot, reason), f"stop-{slot.id}")

    async def _stop(self, slot: _Slot, reason: str) -> None:
        run = slot.task
        if run is None:
            return
        try:
            # Let the run stop (an exec command's group is killed) before the job is given back, so that
            # two workers never run it at once.  A sync handler's thread cannot be stopped: it gets a while.
            await asyncio.wait({run}, timeout=self.runner.stop_grace_s)
        finally:
            self._run_ended(slot, completed=False)
        try:
            if reason == "timeout":
                log.warning("job timed out: stopped and given back", job=slot.id, queue=slot.queue,
                            timeout_s=self.config.timeout_s)
                self._stop_timers(slot)
                reason = await self._nack(slot, f"timed out after {self.config.timeout_s:g}s", None, reason)
            elif reason == "shutdown":
                self._stop_timers(slot)
                reason = await self._nack(slot, SHUTDOWN_ERROR, 0, reason)
            # lease_lost: the heartbeat found the job taken over; nothing to send.
        finally:
            self._report(slot, reason)
        if not run.done():
            log.warning("a handler still runs after its job was given back; its slot stays busy until it returns",
                        job=slot.id)
            self._orphans.add(slot)
            self._changed.set()  # not a free slot, but one job fewer to wait for (burst, shutdown)
            await asyncio.wait({run})
            self._free_slot(slot)

    def _report(self, slot: _Slot, reason: str, *, counted: bool = False) -> None:
        """The job has left this worker (acked, nacked, or found taken over).  `counted`: the caller counts
        it in worker_jobs_total (a batch of acks, with one increment)."""
        self._stop_timers(slot)
        slot.ctx.on_heartbeat = _no_heartbeat  # it points back at the slot: no cycle left for the GC to find
        if not counted:
            self._queue_metrics(slot.queue).outcome(reason).inc()
        self._slots.discard(slot)
        if not self._slots:
            self._drained.set()

    def _queue_metrics(self, queue: str) -> _QueueMetrics:
        m = self._metrics.get(queue)
        if m is None:
            m = self._metrics[queue] = _QueueMetrics(queue)
        return m

    def _give_back_unstarted(self, job: dict[str, Any], reason: str = "shutdown") -> None:
        ctx = JobContext(str(job["id"]), str(job["queue"]), int(job.get("attempts") or 1),
                         int(job.get("max_attempts") or 1))
        slot = _Slot(job, ctx, 0, self.clock(), self.clock())
        slot.finished = True
        self._slots.add(slot)
        self._drained.clear()
        # Never started: handed back without using up an attempt (the error text is not kept for a release).
        self._spawn(self._nack_and_report(slot, SHUTDOWN_ERROR, None, reason, release=True), f"giveback-{slot.id}")

    # -- heartbeats ---------------------------------------------------------------------------

    def _heartbeat_from_anywhere(self, loop: asyncio.AbstractEventLoop, slot: _Slot) -> None:
        """JobContext.heartbeat: may be called from a handler's thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the worker has exited
            loop.call_soon_threadsafe(self._beat_requested, slot)

    def _beats_due(self, key: tuple[float, int]) -> None:
        """A third of the visibility has passed since these jobs were leased: their heartbeats start."""
        cohort = self._cohorts.pop(key, None)
        if cohort is None:
            return
        for slot in cohort.slots:
            slot.cohort = None
            self._start_heartbeat(slot)

    def _start_heartbeat(self, slot: _Slot) -> None:
        if slot.beat_task is None and slot in self._slots:
            slot.beat_task = asyncio.get_running_loop().create_task(self._heartbeat(slot), name=f"heartbeat-{slot.id}")

    def _beat_requested(self, slot: _Slot) -> None:
        if slot not in self._slots:
            return
        if slot.beat_task is None:
            self._leave_cohort(slot)
            self._start_heartbeat(slot)
        elif slot.beat_now is not None:
            slot.beat_now.set()

    def _leave_cohort(self, slot: _Slot) -> None:
        cohort = slot.cohort
        if cohort is not None:
            slot.cohort = None
            cohort.slots.discard(slot)
            if not cohort.slots:
                if cohort.timer is not None:
                    cohort.timer.cancel()
                del self._cohorts[cohort.key]

    def _stop_timers(self, slot: _Slot) -> None:
        self._leave_cohort(slot)
        if slot.deadline is not None:
            slot.deadline.cancel()
        if slot.beat_task is not None:
            slot.beat_task.cancel()

    async def _heartbeat(self, slot: _Slot) -> None:
        """Extend now, then every third of the visibility timeout (or at once when the handler asks)."""
        interval = slot.visibility_s / 3
        beat_now = slot.beat_now = asyncio.Event()
        while True:
            beat_now.clear()
            try:
                await self.client.extend(slot.id, slot.token, visibility_timeout=slot.visibility_s)
                delay = interval
            except (LeaseLostError, NotFoundError) as e:
                log.warning("lease lost: the job was taken over; stopping it", job=slot.id, queue=slot.queue,
                            error=e.message)
                self._abort(slot, "lease_lost")
                return
            except HeliosError as e:
                # Two more tries fit before the lease lapses.
                delay = max(0.2, interval / 4)
                log.warning("cannot extend the lease", job=slot.id, error=e.message, retry_in_s=round(delay, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(beat_now.wait(), delay)

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

    async def _nack_and_report(self, slot: _Slot, error: str, retry_delay_s: float | None, reason: str, *,
                               release: bool = False) -> None:
        self._stop_timers(slot)
        try:
            reason = await self._nack(slot, error, retry_delay_s, reason, release=release)
        finally:
            self._report(slot, reason)

    def _acked(self, slot: _Slot, outcome: str, *, counted: bool = False) -> None:
        if outcome.startswith("nack:"):  # the gateway would not take the result (too large, ...)
            self._spawn(self._nack_and_report(slot, outcome[5:], None, "error"), f"nack-{slot.id}")
            return
        if outcome == "ok":
            log.info("job done", job=slot.id, queue=slot.queue, attempt=slot.ctx.attempt,
                     duration_s=round(self.clock() - slot.started, 3))
        self._report(slot, outcome, counted=counted)

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            self._ack_wake.clear()
            await asyncio.sleep(0)  # jobs finishing in this same loop pass join the batch
            while self._acks:
                batch: list[tuple[_Slot, Any, int]] = []
                size = 0
                while self._acks and len(batch) < MAX_LEASE_BATCH and (
                        not batch or size + self._acks[0][2] <= ACK_BATCH_BYTES):
                    item = self._acks.popleft()
                    batch.append(item)
                    size += item[2]
                await self._send_acks(batch)

    async def _send_acks(self, batch: list[tuple[_Slot, Any, int]]) -> None:
        if len(batch) == 1:
            await self._ack_one(batch[0][0], batch[0][1])
            return
        try:
            results = await self._retrying("ack", batch[0][0], lambda: self.client.ack_batch(
                [AckRequest(slot.id, slot.token, result) for slot, result, _ in batch]))
        except HeliosError as e:
            # The batch as a whole was refused (too large, or a gateway without batch acks): one by one.
            log.debug("batch ack refused; acking one by one", error=e.message)
            for slot, result, _ in batch:
                await self._ack_one(slot, result)
            return
        done: dict[str, int] = {}  # queue -> jobs acked
        for (slot, _, _), r in zip(batch, results, strict=False):
            if r.ok:
                self._acked(slot, "ok", counted=True)
                done[slot.queue] = done.get(slot.queue, 0) + 1
            else:
                self._acked(slot, self._ack_failed(slot, r.error))
        for queue, n in done.items():
            self._queue_metrics(queue).outcome("ok").inc(n)
        for slot, result, _ in batch[len(results):]:
            await self._ack_one(slot, result)

    async def _ack_one(self, slot: _Slot, result: Any) -> None:
        try:
            await self._retrying("ack", slot, lambda: self.client.ack(slot.id, slot.token, result))
        except HeliosError as e:
            self._acked(slot, self._ack_failed(slot, e))
        else:
            self._acked(slot, "ok")

    def _ack_failed(self, slot: _Slot, err: HeliosError | None) -> str:
        if err is None or isinstance(err, LeaseLostError | NotFoundError) or err.code == "lease_lost":
            log.warning("lease lost before the ack: the job was taken over; result dropped", job=slot.id,
                        queue=slot.queue, error=err.message if err else "")
            return "lease_lost"
        if err.status in (400, 413):  # the result itself was refused (too large, ...): fail the job with why
            return f"nack:result refused by the gateway: {err.message}"
        log.error("ack refused; the job returns after its visibility timeout", job=slot.id, error=err.message,
                  code=err.code)
        return "error"

    # -- shutdown -----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        self._stopping.set()
        if self._waiting_timer is not None:
            self._waiting_timer.cancel()
            self._waiting_timer = None
        while self._waiting:  # leased ahead, never started: back at once
            self._give_back_unstarted(self._waiting.popleft()[0])
        deadline = self.clock() + self.config.grace_s
        if self.running and not self._aborting.is_set():
            log.info("waiting for running jobs to finish", running=self.running, grace_s=self.config.grace_s)
        while self.running and not self._aborting.is_set():
            left = deadline - self.clock()
            if left <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        unfinished = [s for s in self._busy if s in self._slots and s.abort_reason is None]
        if unfinished:
            log.warning("grace period over: giving running jobs back", jobs=len(unfinished))
            for slot in unfinished:
                self._abort(slot, "shutdown")
        if self._slots:
            try:
                await asyncio.wait_for(self._drained.wait(), self.runner.stop_grace_s + FLUSH_S)
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
