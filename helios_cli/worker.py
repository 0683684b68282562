"""`helios worker`: lease jobs from the gateway's queues over HTTP and run them.

The command only parses options into a `WorkerConfig`, picks a runner
(``--handler`` or ``--exec``) and runs `helios_core.worker.Worker`; the
design (slots, heartbeats, shutdown) is described in
helios_core/worker/runtime.py.

Why ``--timeout`` defaults to no limit: the visibility timeout and the job's
run time answer different questions.  The visibility timeout is how long a
*dead* worker keeps its jobs, so it should be short (seconds), and heartbeats
keep a live worker's lease for as long as the job runs.  How long a job may
run is a property of the work (a thumbnail: seconds; a report: an hour), and
killing work that is merely slow is destructive, so it is an explicit choice
(``--timeout 10m``), not a side effect of the lease length.  A hung job stays
visible (IN_PROGRESS, lease held by this worker's name) and SIGTERM still
hands it back after ``--grace``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import click

from helios_cli.context import CliContext, fail
from helios_cli.gateway import loop_factory
from helios_core.config import HeliosConfig, load_config
from helios_core.errors import AuthenticationError, HeliosError, InvalidInputError, PermissionDeniedError
from helios_core.jobs.model import QUEUE_NAME_RE
from helios_core.observability import tracing
from helios_core.worker.client import JobsClient
from helios_core.worker.config import MAX_QUEUES, WorkerConfig, parse_duration
from helios_core.worker.handlers import ExecRunner, HandlerLoadError, PythonRunner, Runner
from helios_core.worker.metrics import serve_metrics
from helios_core.worker.runtime import Worker

__all__ = ["worker", "Duration"]


class Duration(click.ParamType):
    """``30s``, ``5m``, ``1h``, ``1h30m``, ``250ms`` or plain seconds -> float seconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except InvalidInputError as e:
            self.fail(e.message, param, ctx)


def _queue(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    names: list[str] = []
    for v in value:
        names.extend(n for n in v.replace(",", " ").split() if n)
    for n in names:
        if not QUEUE_NAME_RE.fullmatch(n):
            raise click.BadParameter(f"{n!r}: a queue name is 1-80 characters of A-Z a-z 0-9 _ -")
    if len(names) > MAX_QUEUES:
        raise click.BadParameter(f"at most {MAX_QUEUES} queues per worker")
    return tuple(dict.fromkeys(names))


def _whole_seconds(what: str, seconds: float | None) -> int | None:
    if seconds is None:
        return None
    if seconds < 1:
        raise click.BadParameter("must be at least 1s", param_hint=f"'{what}'")
    return math.ceil(seconds)


@click.command("worker", short_help="Run jobs from the gateway's queues (Python handler or shell command).")
@click.option("--url", envvar="HELIOS_URL", metavar="URL",
              help="The gateway, e.g. http://127.0.0.1:8080 (env HELIOS_URL).")
@click.option("--token", envvar="HELIOS_TOKEN", metavar="TOKEN",
              help="Access token of a user with jobs:work, e.g. from `helios user token NAME --ttl 30d`. "
                   "Prefer the env HELIOS_TOKEN: the command line is visible to every user in `ps`.")
@click.option("--queue", "-q", "queues", multiple=True, required=True, callback=_queue, metavar="Q",
              help="Queue to work on (repeatable, or comma-separated; earlier queues first).")
@click.option("--handler", metavar="MODULE:FUNCTION",
              help="Python callable fn(payload, ctx) (sync: run in a thread; async: on the loop); "
                   "its return value is the result, an exception fails the job.")
@click.option("--exec", "command", metavar="COMMAND",
              help="Shell command per job: payload JSON on stdin, HELIOS_JOB_ID / HELIOS_JOB_ATTEMPT / "
                   "HELIOS_JOB_QUEUE in its environment; exit 0 = done (stdout is the result, JSON if it "
                   "parses), non-zero = failed (with the tail of stderr).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Jobs run at once. While jobs are short and the queue has a backlog, the worker also "
                   "leases up to as many more (at most 100) ahead, to start as slots free.")
@click.option("--visibility", type=Duration(), metavar="DURATION",
              help="Lease length asked for [default: the job's own: set at enqueue, else its queue's, 30s "
                   "by default]. Leases of running jobs are extended every third of it, so it only bounds "
                   "how long a crashed worker keeps its jobs.")
@click.option("--timeout", type=Duration(), default="0", metavar="DURATION",
              help="Longest run of one job, then it is stopped (a command's process group killed) and "
                   "failed  [default: 0 = no limit; heartbeats keep long jobs leased].")
@click.option("--grace", type=Duration(), default="30s", show_default=True, metavar="DURATION",
              help="On SIGTERM/SIGINT, how long running jobs may take to finish before they are given back "
                   "for immediate redelivery (a second signal gives them back at once).")
@click.option("--burst", is_flag=True,
              help="Exit (status 0) once no job is due and nothing runs (jobs waiting out a retry delay are "
                   "left for later).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), metavar="PORT",
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (0: any free port, logged).")
@click.option("--name", metavar="NAME", help="Worker name shown in leases [default: HOST:PID].")
def worker(url: str | None, token: str | None, queues: tuple[str, ...], handler: str | None, command: str | None,
           concurrency: int, visibility: float | None, timeout: float, grace: float, burst: bool,
           metrics_port: int | None, name: str | None) -> None:
    """Lease jobs from the gateway's queues and run them with --handler or --exec.

    \b
    Examples:
      export HELIOS_URL=http://127.0.0.1:8080 HELIOS_TOKEN=...
      helios worker -q emails --handler myapp.tasks:send_email --concurrency 8
      helios worker -q thumbs --exec './make-thumb.sh' --timeout 5m

    Stop with SIGTERM or Ctrl-C: no more jobs are leased, running ones get
    --grace to finish, the rest are given back for another worker; exit
    status 0.  A lost gateway is retried (with backoff) until it is back.
    Exit status 1: the gateway refused the token or its permissions; 2: a
    usage error (bad option, --handler that cannot be imported).
    """
    if not url:
        raise click.UsageError("Missing the gateway's URL: export HELIOS_URL=http://127.0.0.1:8080 (or --url URL)")
    if not token:
        raise click.UsageError("Missing an access token with jobs:work: export HELIOS_TOKEN=... "
                               "(from `helios user token NAME --ttl 30d`; or --token TOKEN)")
    if (handler is None) == (command is None):
        raise click.UsageError("give exactly one of --handler MODULE:FUNCTION or --exec COMMAND")
    runner: Runner
    try:
        runner = PythonRunner.from_spec(handler) if handler is not None else ExecRunner(command or "")
    except HandlerLoadError as e:
        raise click.BadParameter(e.message, param_hint="'--handler'") from None
    except InvalidInputError as e:
        raise click.BadParameter(e.message, param_hint="'--exec'") from None
    try:
        config = WorkerConfig(queues=queues, concurrency=concurrency,
                              visibility_s=_whole_seconds("--visibility", visibility),
                              timeout_s=timeout or None, grace_s=grace, burst=burst, name=name or "")
    except InvalidInputError as e:
        raise click.UsageError(e.message) from None
    if metrics_port is not None:
        try:
            port = serve_metrics(metrics_port)
        except OSError as e:
            fail(HeliosError(f"cannot serve metrics on 127.0.0.1:{metrics_port}: {e.strerror or e}", code="io"))
        click.echo(f"helios worker metrics on http://127.0.0.1:{port}/metrics", err=True)
    try:
        tracing.configure(_config(), "helios-worker")  # flushed and shut down at exit
        # uvloop where installed, like the gateway: a cheaper loop and sockets (~5% of the CPU a no-op job takes).
        with asyncio.Runner(loop_factory=loop_factory()) as loop:
            loop.run(_work(url, token, runner, config))
    except (AuthenticationError, PermissionDeniedError) as e:
        fail(HeliosError(f"the gateway at {url} refused the worker's token: {e.message}", code=e.code))
    except HeliosError as e:
        fail(e)


def _config() -> HeliosConfig:
    # `helios worker` takes no --config of its own: the helios group's (file and HELIOS_* variables).
    obj = click.get_current_context().find_object(CliContext)
    return obj.config if obj is not None else load_config()


async def _work(url: str, token: str, runner: Runner, config: WorkerConfig) -> None:
    async with JobsClient(url, token, user_agent="helios-worker") as client:
        await Worker(client, runner, config).run(install_signals=True)
