"""`helios job`: enqueue, list, show, retry and cancel jobs, on a data directory or through a gateway.

Two ways to reach the queue, one set of commands (as `helios user`):

- ``--data DIR``: a `JobQueue` on the directory's store (embedded when the
  directory is free, through atlasd's socket when atlasd owns it; a gateway
  that owns it serves no socket, so the error names it and the ``--url`` to
  use instead), with the settings of the configuration's ``jobs`` section;
- ``--url URL --token TOKEN``: the gateway's jobs API (``HELIOS_URL`` and
  ``HELIOS_TOKEN`` work too; prefer the variable: a ``--token`` shows in ``ps``).

``enqueue`` prints only the new job's id, so scripts can capture it;
everything else prints rich tables, and ``--json`` prints JSON.  Exit status
is 0 on success, 1 on failure (reason on stderr), 2 on a usage error
(including a payload that is not JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from helios_cli import progress as bars
from helios_cli.context import CliContext, pass_cli
from helios_cli.target import open_data_store, run_on_target
from helios_cli.target import target_options as shared_target_options
from helios_core.clock import wall_ms
from helios_core.errors import HeliosError, InvalidInputError, NotFoundError
from helios_core.jobs.model import PRIORITY_MAX, PRIORITY_MIN, State, is_job_id
from helios_core.jobs.queue import EnqueueRequest, JobQueue, PayloadTooLargeError
from helios_core.worker.client import JobsClient
from helios_core.worker.config import parse_duration

__all__ = ["job", "Jobs", "StoreJobs", "ApiJobs", "parse_delay", "parse_payload", "read_payload_lines",
           "enqueue_many"]

T = TypeVar("T")
LIST_PAGE = 1000  # the API's largest page


class Jobs(Protocol):
    """What every command needs; implemented on a Store and over the jobs API.

    Jobs travel as their public JSON (`Job.public()`), whichever the backend.
    """

    async def enqueue(self, req: EnqueueRequest) -> tuple[dict[str, Any], bool]:
        """(job, created); created is False on a dedup hit (the job the dedup id first made)."""
    async def list_jobs(self, queue: str | None, state: State | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` jobs of `queue` (every queue when None), queue by queue in id order."""
    async def show(self, job_id: str) -> dict[str, Any]: ...
    async def retry(self, job_id: str) -> dict[str, Any]: ...
    async def retry_all(self, queue: str | None) -> int: ...
    async def cancel(self, job_id: str) -> dict[str, Any]: ...
    async def stats(self, queue: str | None) -> list[dict[str, Any]]: ...


def no_job(job_id: str) -> HeliosError:
    return NotFoundError(f"no job {job_id}", code="job_not_found")


class StoreJobs:
    """`JobQueue` on a store opened for the duration of one command."""

    def __init__(self, queue: JobQueue, max_payload_bytes: int) -> None:
        self.q = queue
        self.max_payload_bytes = max_payload_bytes

    async def enqueue(self, req: EnqueueRequest) -> tuple[dict[str, Any], bool]:
        try:
            job, created = await self.q.enqueue(req, wall_ms())
        except PayloadTooLargeError as e:
            size = len(orjson.dumps(req.payload))
            raise PayloadTooLargeError(f"payload is {size} bytes; the limit is {self.max_payload_bytes} bytes "
                                       f"(jobs.max_payload_bytes)") from e
        return job.public(), created

    async def list_jobs(self, queue: str | None, state: State | None, limit: int) -> list[dict[str, Any]]:
        queues = [queue] if queue is not None else await self.q.queues()
        out: list[dict[str, Any]] = []
        now = wall_ms()
        for name in queues:
            cursor: str | None = None
            while len(out) < limit:
                jobs, cursor = await self.q.list(name, state, now, cursor=cursor,
                                                 limit=min(LIST_PAGE, limit - len(out)))
                out += [j.public() for j in jobs]
                if cursor is None:
                    break
        return out

    async def _by_id(self, job_id: str, op: Callable[[str, int], Awaitable[Any]]) -> dict[str, Any]:
        if not is_job_id(job_id):
            raise no_job(job_id)
        try:
            return (await op(job_id, wall_ms())).public()  # type: ignore[no-any-return]
        except NotFoundError:
            raise no_job(job_id) from None

    async def show(self, job_id: str) -> dict[str, Any]:
        return await self._by_id(job_id, lambda i, _now: self.q.get(i))

    async def retry(self, job_id: str) -> dict[str, Any]:
        return await self._by_id(job_id, self.q.redrive)

    async def retry_all(self, queue: str | None) -> int:
        if queue is not None:
            await self.q.check_queue(queue)
        return await self.q.redrive_all(wall_ms(), queue)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._by_id(job_id, self.q.cancel)

    async def stats(self, queue: str | None) -> list[dict[str, Any]]:
        return [s.to_dict() for s in await self.q.stats(wall_ms(), queue)]


class ApiJobs:
    """The gateway's /api/v1/jobs API, through the worker's `JobsClient`."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.client = JobsClient(self.url, token, timeout=60.0, user_agent="helios-job-cli")

    async def close(self) -> None:
        await self.client.close()

    @contextlib.asynccontextmanager
    async def _errors(self, job_id: str | None = None) -> AsyncIterator[None]:
        """The gateway's message, prefixed with where it came from and the status (as `helios user` does)."""
        try:
            yield
        except HeliosError as e:
            if job_id is not None and e.code in ("job_not_found", "not_found"):
                raise no_job(job_id) from None
            status = e.detail.get("status") if isinstance(e.detail, dict) else None
            if status is None:  # unreachable, timed out: the message says so already
                raise
            raise HeliosError(f"{self.url}: {status} {e.message}", code=e.code, status=e.status) from None

    async def enqueue(self, req: EnqueueRequest) -> tuple[dict[str, Any], bool]:
        delay = None
        if req.delay_ms:
            delay = req.delay_ms // 1000 if req.delay_ms % 1000 == 0 else req.delay_ms / 1000
        async with self._errors():
            out = await self.client.enqueue(req.queue, req.payload, dedup_id=req.dedup_id, delay_seconds=delay,
                                            priority=req.priority or None, max_attempts=req.max_attempts)
        return out.job, out.created

    async def list_jobs(self, queue: str | None, state: State | None, limit: int) -> list[dict[str, Any]]:
        queues = [queue] if queue is not None else [s["queue"] for s in await self.stats(None)]
        out: list[dict[str, Any]] = []
        async with self._errors():
            for name in queues:
                cursor: str | None = None
                while len(out) < limit:
                    page = await self.client.list(name, state=None if state is None else str(state), cursor=cursor,
                                                  limit=min(LIST_PAGE, limit - len(out)))
                    out += page.jobs
                    cursor = page.cursor
                    if not cursor:
                        break
        return out

    async def _by_id(self, job_id: str, op: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        if not is_job_id(job_id):
            raise no_job(job_id)  # never a path the gateway would route elsewhere ("stats", "dlq")
        async with self._errors(job_id):
            return await op(job_id)

    async def show(self, job_id: str) -> dict[str, Any]:
        return await self._by_id(job_id, self.client.get)

    async def retry(self, job_id: str) -> dict[str, Any]:
        return await self._by_id(job_id, self.client.retry)

    async def retry_all(self, queue: str | None) -> int:
        async with self._errors():
            return await self.client.redrive(queue)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return await self._by_id(job_id, self.client.cancel)

    async def stats(self, queue: str | None) -> list[dict[str, Any]]:
        async with self._errors():
            return await self.client.stats(queue)


# -- reaching the queue -------------------------------------------------------------------

TOKEN_HINT = "an access token"


async def _with_store(obj: CliContext, data_dir: Path, work: Callable[[Jobs], Awaitable[T]]) -> T:
    # A gateway's directory is refused (as by `helios user`): its queue has live leases and
    # long polls waiting on it; its API is the way in.
    cfg = obj.config
    store = await open_data_store(obj, data_dir, "helios job", TOKEN_HINT)
    try:
        return await work(StoreJobs(JobQueue(store, cfg.jobs), cfg.jobs.max_payload_bytes))
    finally:
        await store.close()


def _run(obj: CliContext, data_dir: Path | None, url: str | None, token: str | None,
         work: Callable[[Jobs], Awaitable[T]]) -> T:
    async def remote(url: str, token: str) -> T:
        api = ApiJobs(url, token)
        try:
            return await work(api)
        finally:
            await api.close()

    return run_on_target(data_dir, url, token, TOKEN_HINT, lambda d: _with_store(obj, d, work), remote)


target_options = shared_target_options("Data directory (free, or owned by atlasd).",
                                       "An access token for --url (env HELIOS_TOKEN).")


# -- parsing ------------------------------------------------------------------------------

def parse_delay(text: str) -> int:
    """The worker's duration syntax ('30s', '5m', '1h30m', '250ms', plain seconds) -> milliseconds."""
    try:
        return round(parse_duration(text) * 1000)
    except InvalidInputError as e:
        raise ValueError(e.message) from None


def parse_payload(spec: str) -> Any:
    """JSON text, @FILE or - (stdin) -> the decoded value; ValueError naming the position when invalid."""
    if spec == "-":
        raw, source = sys.stdin.buffer.read(), " on stdin"
    elif spec.startswith("@"):
        path = Path(spec[1:])
        try:
            raw, source = path.read_bytes(), f" in {path}"
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror}") from None
    else:
        raw, source = spec.encode(), ""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not valid JSON{source}: {e.msg} at line {e.lineno}, column {e.colno} "
                         f"(char {e.pos})") from None


class _Delay(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_delay(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


_STATES = click.Choice([str(s) for s in State], case_sensitive=False)


# -- output -------------------------------------------------------------------------------

def _out() -> Console:
    # Piped (`helios job list | grep`), rich would squeeze tables into 80 columns and cut job ids.
    return Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def _echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value).decode())


def _iso(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(value: Any, width: int = 40) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= width else text[:width - 1] + "…"


def _show_job(j: dict[str, Any], as_json: bool, note: str = "") -> None:
    if as_json:
        _echo_json(j)
        return
    c = _out()
    if note:
        c.print(note)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    lease = j.get("lease")
    rows = [
        ("id", j["id"]), ("queue", j["queue"]), ("state", j["state"]),
        ("attempts", f"{j['attempts']} of {j['max_attempts']}"), ("priority", str(j.get("priority", 0))),
        ("created", _iso(j.get("created_ms"))), ("available", _iso(j.get("available_ms"))),
        ("lease", f"{lease['worker']} until {_iso(lease['deadline_ms'])}" if lease else ""),
        ("finished", _iso(j.get("finished_ms"))), ("dedup id", j.get("dedup_id") or ""),
        ("last error", j.get("last_error") or ""), ("trace", j.get("trace") or ""),
    ]
    for name, value in rows:
        if value:
            table.add_row(name, value)
    table.add_row("payload", orjson.dumps(j.get("payload"), option=orjson.OPT_INDENT_2).decode())
    if j.get("result") is not None:
        table.add_row("result", orjson.dumps(j["result"], option=orjson.OPT_INDENT_2).decode())
    c.print(table)


# -- commands -----------------------------------------------------------------------------

@click.group("job", short_help="Manage jobs (enqueue, list, show, retry, cancel, stats).")
def job() -> None:
    """Enqueue and manage jobs through --data DIR (embedded) or --url URL --token TOKEN (jobs API)."""


@job.command("enqueue")
@click.option("--queue", "-q", required=True, metavar="QUEUE", help="Queue name (letters, digits, '_', '-').")
@click.option("--payload", "-p", "payload_spec", metavar="JSON|@FILE|-",
              help="The job's payload: JSON text, @FILE to read a file, or - for stdin.")
@click.option("--from-file", "from_file", metavar="PATH|-",
              help="Instead of --payload: many jobs, one JSON payload per line of PATH (- for stdin); "
                   "prints one id per line.")
@click.option("--dedup-id", metavar="ID",
              help="Enqueue at most once per dedup window (jobs.dedup_window_seconds) for this id on this queue.")
@click.option("--delay", type=_Delay(), default=0, metavar="DURATION",
              help="Run no sooner than this from now: 30s, 5m, 1h30m, 1d, 250ms (plain number: seconds).")
@click.option("--priority", type=click.IntRange(PRIORITY_MIN, PRIORITY_MAX), default=0, show_default=True,
              help=f"Higher runs first ({PRIORITY_MIN}..{PRIORITY_MAX}).")
@click.option("--max-attempts", type=click.IntRange(1, 1000), metavar="N",
              help="Deliveries before the job fails into the DLQ (default: the queue's).")
@target_options
@pass_cli
def enqueue(obj: CliContext, queue: str, payload_spec: str | None, from_file: str | None, dedup_id: str | None,
            delay: int, priority: int, max_attempts: int | None, data_dir: Path | None, url: str | None,
            token: str | None, as_json: bool) -> None:
    """Add a job to the --queue and print its id (--json: the whole job).

    With --dedup-id, a second enqueue of the same id within the dedup window
    adds nothing and prints the id of the job the first one made (and says so
    on stderr).  Dedup ids are per producer: through --url, per user.

    With --from-file, each non-blank line of the file is one job's payload
    (JSON); --delay, --priority and --max-attempts apply to every job.  The
    ids are printed in line order (--json: one job per line), and a progress
    bar shows on a terminal.  Every line is parsed before any job is added.
    """
    if (payload_spec is None) == (from_file is None):
        raise click.UsageError("give exactly one of --payload or --from-file")
    if from_file is not None:
        if dedup_id is not None:
            raise click.UsageError("--dedup-id applies to one job; it cannot go with --from-file")
        _enqueue_file(obj, from_file, EnqueueRequest(queue=queue, payload=None, delay_ms=delay, priority=priority,
                                                     max_attempts=max_attempts), data_dir, url, token, as_json)
        return
    assert payload_spec is not None
    try:
        payload = parse_payload(payload_spec)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--payload'") from None
    req = EnqueueRequest(queue=queue, payload=payload, dedup_id=dedup_id, delay_ms=delay, priority=priority,
                         max_attempts=max_attempts)
    j, created = _run(obj, data_dir, url, token, lambda jobs: jobs.enqueue(req))
    if not created:
        click.echo(f"dedup id {dedup_id!r} seen within the dedup window: existing job {j['id']} ({j['state']})",
                   err=True)
    if as_json:
        _echo_json(j)
    else:
        click.echo(j["id"])


# Enqueues in flight at once in a bulk enqueue: on a data directory they share fsyncs (group commit),
# through a gateway their requests overlap; a bounded window keeps memory and the gateway's load flat.
BULK_WINDOW = 64


def read_payload_lines(spec: str) -> list[tuple[int, Any]]:
    """--from-file PATH|-: (line number, payload) for each non-blank line; ValueError naming the bad line."""
    if spec == "-":
        raw, source = sys.stdin.buffer.read(), "stdin"
    else:
        try:
            raw, source = Path(spec).read_bytes(), spec
        except OSError as e:
            raise ValueError(f"cannot read {spec}: {e.strerror}") from None
    out: list[tuple[int, Any]] = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((n, orjson.loads(line)))
        except orjson.JSONDecodeError as e:
            raise ValueError(f"{source}:{n}: not valid JSON: {e.msg} at column {e.colno}") from None
    return out


async def enqueue_many(jobs: Jobs, template: EnqueueRequest, lines: list[tuple[int, Any]], bar: bars.Reporter,
                       emit: Callable[[dict[str, Any]], None]) -> int:
    """Enqueue one job per (line, payload) through `jobs`, in windows of BULK_WINDOW; `emit` each job in
    line order.  On a failure the window's other jobs are still emitted, then the error names the line."""
    done = 0
    for start in range(0, len(lines), BULK_WINDOW):
        window = lines[start:start + BULK_WINDOW]
        results = await asyncio.gather(
            *(jobs.enqueue(dataclasses.replace(template, payload=payload)) for _, payload in window),
            return_exceptions=True)
        failed: list[tuple[int, BaseException]] = []
        for (n, _), result in zip(window, results, strict=True):
            if isinstance(result, BaseException):
                failed.append((n, result))
                continue
            emit(result[0])
            done += 1
            bar.advance()
        if failed:
            n, err = failed[0]
            why = err.message if isinstance(err, HeliosError) else str(err)
            raise HeliosError(f"line {n}: {why} ({done} of {len(lines)} jobs enqueued, their ids printed; "
                              f"{len(failed)} failed in the last batch; nothing after it was tried)",
                              code=err.code if isinstance(err, HeliosError) else "enqueue_failed")
    return done


def _enqueue_file(obj: CliContext, spec: str, template: EnqueueRequest, data_dir: Path | None, url: str | None,
                  token: str | None, as_json: bool) -> None:
    try:
        lines = read_payload_lines(spec)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="'--from-file'") from None

    def emit(j: dict[str, Any]) -> None:
        click.echo(orjson.dumps(j).decode() if as_json else j["id"])

    with bars.progress(f"enqueueing to {template.queue}", len(lines),
                       show=bool(lines) and bars.enabled(as_json=as_json)) as bar:
        _run(obj, data_dir, url, token, lambda jobs: enqueue_many(jobs, template, lines, bar, emit))


@job.command("list")
@click.option("--queue", "-q", metavar="QUEUE", help="Only this queue (default: every queue).")
@click.option("--state", "-s", type=_STATES, help="Only jobs in this state.")
@click.option("--limit", "-n", type=click.IntRange(1, 100_000), default=100, show_default=True,
              help="At most this many jobs.")
@target_options
@pass_cli
def list_(obj: CliContext, queue: str | None, state: str | None, limit: int, data_dir: Path | None,
          url: str | None, token: str | None, as_json: bool) -> None:
    """List jobs, queue by queue, oldest first."""
    st = State(state.upper()) if state else None
    jobs = _run(obj, data_dir, url, token, lambda j: j.list_jobs(queue, st, limit))
    if as_json:
        _echo_json(jobs)
        return
    table = Table("id", "queue", "state", "attempts", "priority", "created", "payload", "last error")
    table.columns[0].no_wrap = True
    now_ms = int(time.time() * 1000)
    for j in jobs:
        table.add_row(j["id"], j["queue"], _state_shown(j, now_ms), f"{j['attempts']}/{j['max_attempts']}",
                      str(j.get("priority", 0)), _iso(j.get("created_ms")), _short(j.get("payload")),
                      (j.get("last_error") or "")[:60])
    c = _out()
    c.print(table)
    if len(jobs) == limit:
        c.print(f"(first {limit}; --limit N for more)")


def _state_shown(j: dict[str, Any], now_ms: int) -> str:
    """A PENDING job that is not due yet says when it runs (it waits for --delay or a retry back-off)."""
    due = j.get("available_ms")
    if j["state"] == "PENDING" and isinstance(due, int) and due > now_ms:
        return f"DELAYED until {_iso(due)}"
    return str(j["state"])


@job.command("show")
@click.argument("job_id", metavar="ID")
@target_options
@pass_cli
def show(obj: CliContext, job_id: str, data_dir: Path | None, url: str | None, token: str | None,
         as_json: bool) -> None:
    """Show job ID: state, attempts, lease, payload, result, last error."""
    _show_job(_run(obj, data_dir, url, token, lambda jobs: jobs.show(job_id)), as_json)


@job.command("retry")
@click.argument("job_id", metavar="ID", required=False)
@click.option("--all-dlq", is_flag=True, help="Every job in the dead-letter queue (of --queue, or of all queues).")
@click.option("--queue", "-q", metavar="QUEUE", help="With --all-dlq: only this queue's DLQ.")
@target_options
@pass_cli
def retry(obj: CliContext, job_id: str | None, all_dlq: bool, queue: str | None, data_dir: Path | None,
          url: str | None, token: str | None, as_json: bool) -> None:
    """Put failed job ID (or, with --all-dlq, every failed job) back on its queue, attempts reset."""
    if (job_id is None) == (not all_dlq):
        raise click.UsageError("give a job ID or --all-dlq")
    if queue is not None and not all_dlq:
        raise click.UsageError("--queue goes with --all-dlq")
    if all_dlq:
        n = _run(obj, data_dir, url, token, lambda jobs: jobs.retry_all(queue))
        if as_json:
            _echo_json({"redriven": n})
        else:
            _out().print(f"{n} job{'' if n == 1 else 's'} back from the dead-letter queue"
                         + (f" of {queue}" if queue else ""))
        return
    assert job_id is not None
    j = _run(obj, data_dir, url, token, lambda jobs: jobs.retry(job_id))
    _show_job(j, as_json, f"job {j['id']} is back on queue {j['queue']}")


@job.command("cancel")
@click.argument("job_id", metavar="ID")
@target_options
@pass_cli
def cancel(obj: CliContext, job_id: str, data_dir: Path | None, url: str | None, token: str | None,
           as_json: bool) -> None:
    """Cancel job ID (only a PENDING job: one a worker holds runs to its end)."""
    j = _run(obj, data_dir, url, token, lambda jobs: jobs.cancel(job_id))
    _show_job(j, as_json, f"cancelled job {j['id']}")


@job.command("stats")
@click.option("--queue", "-q", metavar="QUEUE", help="Only this queue.")
@target_options
@pass_cli
def stats(obj: CliContext, queue: str | None, data_dir: Path | None, url: str | None, token: str | None,
          as_json: bool) -> None:
    """Jobs per queue and state, and the age of the oldest pending job."""
    rows = _run(obj, data_dir, url, token, lambda jobs: jobs.stats(queue))
    if as_json:
        _echo_json(rows)
        return
    table = Table("queue", "pending", "delayed", "in progress", "done", "failed", "oldest pending")
    for s in rows:
        age = s.get("oldest_pending_age_seconds")
        table.add_row(s["queue"], str(s["pending"]), str(s["delayed"]), str(s["in_progress"]), str(s["done"]),
                      str(s["failed"]), "" if age is None else f"{age:.0f} s")
    _out().print(table)
