"""What runs a job: a Python callable (`PythonRunner`) or a shell command (`ExecRunner`).

A runner turns a payload into an `Outcome` (a result to ack, or an error text
to nack with) and never raises for a failure of the job itself: a handler's
exception, a non-zero exit status, a result that is not JSON all become
``Outcome.failure``.  The one thing that escapes is `asyncio.CancelledError`:
the worker cancels a run at the job timeout, when the lease is lost, or when
the shutdown grace period is over.  An `ExecRunner` answers by killing the
command's process group; a sync Python handler cannot be interrupted, so its
run keeps its slot until the thread returns (`JobContext.cancelled` lets it
stop early).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import inspect
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson

from helios_core.errors import InvalidInputError

__all__ = [
    "JobContext", "Outcome", "Runner", "PythonRunner", "ExecRunner", "HandlerLoadError", "load_handler",
    "describe_exception", "ERROR_MAX_CHARS",
]

ERROR_MAX_CHARS = 4000  # of the error text sent with a nack (it becomes the job's last_error)
STDERR_TAIL_BYTES = 2000
STDOUT_MAX_BYTES = 1 << 20
KILL_GRACE_S = 5.0  # SIGTERM, then SIGKILL this long after, to a command's process group
T = TypeVar("T")


class HandlerLoadError(InvalidInputError):
    """--handler names nothing that can be called; the message says which part is wrong."""

    code = "bad_handler"


@dataclass
class JobContext:
    """What a handler gets besides the payload.

    ``heartbeat()`` extends the lease now (the worker does so on its own every
    third of the visibility timeout; call it after a step that may have taken
    longer).  It may be called from any thread and does not block.
    ``cancelled`` turns true once the worker has given the job up (timeout,
    lease lost, shutdown): a long handler may check it and return early.
    """

    id: str
    queue: str
    attempt: int
    max_attempts: int
    worker: str = ""
    traceparent: str | None = None  # W3C trace context of the request that enqueued the job
    on_heartbeat: Callable[[], None] = field(default=lambda: None, repr=False)
    # A plain flag, not a threading.Event: nothing ever waits on it, handlers only poll it, and a bool
    # written by one thread is seen by the others (one per job adds up at thousands of jobs a second).
    _cancelled: bool = field(default=False, repr=False)

    def heartbeat(self) -> None:
        self.on_heartbeat()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True


@dataclass(frozen=True)
class Outcome:
    ok: bool
    result: Any = None
    error: str | None = None

    @classmethod
    def success(cls, result: Any = None) -> Outcome:
        return cls(True, result=result)

    @classmethod
    def failure(cls, error: str) -> Outcome:
        return cls(False, error=_clip(error))


class Runner(Protocol):
    """Runs one job; several runs may be in flight at once (one per worker slot)."""

    description: str
    stop_grace_s: float  # how long a cancelled run may take to stop before its job is given back anyway

    async def run(self, payload: Any, ctx: JobContext) -> Outcome: ...


def _clip(text: str, limit: int = ERROR_MAX_CHARS) -> str:
    if len(text) <= limit:
        return text
    # Keep the head (the type and message) and the tail (where the traceback ends): the middle matters least.
    head = text.split("\n", 1)[0][: limit // 4]
    return f"{head}\n...\n{text[-(limit - len(head) - 5):]}"


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` then the traceback (without the worker's own frame), clipped to ERROR_MAX_CHARS."""
    first = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
    return _clip(first + "\n\n" + "".join(tb).rstrip())


def _check_result(result: Any) -> Outcome:
    try:
        orjson.dumps(result)
    except TypeError as e:
        return Outcome.failure(f"TypeError: the handler's result cannot be sent as JSON: {e}")
    return Outcome.success(result)


# -- Python callables -------------------------------------------------------------------------


def load_handler(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (``module:Class.method`` too).  HandlerLoadError says what is wrong.

    The current directory is searched after PYTHONPATH and the installed packages, so
    ``helios worker --handler tasks:resize`` finds ./tasks.py as ``python -m`` would.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerLoadError(f"{spec!r} is not MODULE:FUNCTION (e.g. myapp.tasks:resize)")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise HandlerLoadError(f"cannot import module {module_name!r}: no module named {e.name!r} "
                                   "(is its directory on PYTHONPATH?)") from None
        raise HandlerLoadError(f"importing module {module_name!r} failed: {type(e).__name__}: {e}") from None
    except (Exception, SystemExit) as e:
        raise HandlerLoadError(f"importing module {module_name!r} failed: {type(e).__name__}: {e}") from None
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = module_name if i == 0 else f"{module_name}:{'.'.join(attr.split('.')[:i])}"
            raise HandlerLoadError(f"{owner!r} has no attribute {part!r} (from --handler {spec})") from None
    if not callable(obj):
        raise HandlerLoadError(f"{spec} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _arity(fn: Callable[..., Any], spec: str) -> int:
    """2 if fn takes (payload, ctx), 1 if only (payload); HandlerLoadError otherwise."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: assume the documented form
        return 2
    for n in (2, 1):
        try:
            sig.bind(*range(n))
        except TypeError:
            continue
        return n
    raise HandlerLoadError(f"{spec} must accept (payload, ctx) or (payload); its signature is {sig}")


class _DaemonThreads:
    """Threads for sync handlers, reused from one job to the next, started as needed and never more
    than were busy at once (the worker's slots bound that); idle ones wait for the next job.

    Not `concurrent.futures.ThreadPoolExecutor`: its threads are joined at interpreter exit (and
    asyncio's default executor at loop shutdown), so a handler that never returns would keep the
    worker from exiting.  These are daemon threads, as a thread per job was before: the process can
    always exit.
    """

    def __init__(self, prefix: str = "job-thread") -> None:
        self.prefix = prefix
        self._work: queue.SimpleQueue[tuple[Callable[[], Any], Callable[[Any], None]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work that no submitted item has claimed yet
        self.started = 0

    def submit(self, fn: Callable[[], T], then: Callable[[T], None]) -> None:
        """Run fn() in one of the threads, then then(its result) there (neither may raise)."""
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self.started += 1
            else:
                self._idle -= 1  # that thread is this item's
        self._work.put((fn, then))
        if spawn:
            threading.Thread(target=self._serve, name=f"{self.prefix}-{self.started}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            fn, then = self._work.get()
            result = fn()
            with self._lock:
                # Idle before the result is handed on: the next job, submitted as soon as it is, finds this thread.
                self._idle += 1
            then(result)


class PythonRunner:
    """A callable ``fn(payload, ctx)`` (or ``fn(payload)``): async ones run on the worker's loop, sync ones
    in a thread (daemon threads, reused between jobs, so a handler that never returns cannot stop the
    process from exiting).  While a sync handler runs, its thread is named ``job-<id>``."""

    def __init__(self, fn: Callable[..., Any], description: str = "") -> None:
        self.fn = fn
        self.description = description or getattr(fn, "__qualname__", repr(fn))
        self.is_async = _is_async(fn)
        self.arity = _arity(fn, self.description)
        # An async handler stops at once when cancelled; a sync one only if it checks ctx.cancelled.
        self.stop_grace_s = 2.0
        self._threads = _DaemonThreads()

    @classmethod
    def from_spec(cls, spec: str) -> PythonRunner:
        return cls(load_handler(spec), spec)

    def _args(self, payload: Any, ctx: JobContext) -> tuple[Any, ...]:
        return (payload, ctx) if self.arity == 2 else (payload,)

    async def run(self, payload: Any, ctx: JobContext) -> Outcome:
        if self.is_async:
            try:
                result = await self.fn(*self._args(payload, ctx))
            except Exception as e:
                return Outcome.failure(describe_exception(e))
            return _check_result(result)
        return await self._run_in_thread(payload, ctx)

    async def _run_in_thread(self, payload: Any, ctx: JobContext) -> Outcome:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome] = loop.create_future()

        def settle(outcome: Outcome) -> None:
            if not done.done():
                done.set_result(outcome)

        def target() -> Outcome:
            me = threading.current_thread()
            idle_name, me.name = me.name, f"job-{ctx.id}"
            try:
                outcome = _check_result(self.fn(*self._args(payload, ctx)))
            except BaseException as e:  # noqa: BLE001 - whatever it raised, the job failed; the thread goes on
                outcome = Outcome.failure(describe_exception(e))
            me.name = idle_name
            return outcome

        def report(outcome: Outcome) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the worker has exited
                loop.call_soon_threadsafe(settle, outcome)

        # The thread runs in a copy of this task's context: the job's span (and whatever else is
        # bound to it) is current in a sync handler as in an async one.
        job_context = contextvars.copy_context()
        self._threads.submit(lambda: job_context.run(target), report)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            # A thread cannot be interrupted: tell the handler, and hold the slot until it returns.
            ctx.cancel()
            await done
            raise


# -- shell commands ---------------------------------------------------------------------------


class ExecRunner:
    """``sh -c COMMAND`` per job: the payload as JSON on stdin; HELIOS_JOB_ID, HELIOS_JOB_ATTEMPT,
    HELIOS_JOB_QUEUE, HELIOS_JOB_MAX_ATTEMPTS and TRACEPARENT (when the job has one) in the
    environment (HELIOS_TOKEN is removed: a job's command does not get the worker's credentials).

    Exit 0: success with stdout as the result (JSON when it parses, else the text, stripped; None when
    empty).  Non-zero: failure with the exit status and the tail of stderr.  The command runs in a
    process group of its own; a cancelled run (timeout, lost lease, shutdown) sends the group SIGTERM,
    then SIGKILL after ``kill_grace_s``.
    """

    def __init__(self, command: str, *, kill_grace_s: float = KILL_GRACE_S, stdout_max: int = STDOUT_MAX_BYTES,
                 stderr_tail: int = STDERR_TAIL_BYTES) -> None:
        if not command.strip():
            raise InvalidInputError("the command to run is empty")
        self.command = command
        self.description = f"exec {command!r}"
        self.kill_grace_s = kill_grace_s
        self.stop_grace_s = kill_grace_s + 5.0  # SIGTERM, the grace, SIGKILL, the wait for it
        self.stdout_max = stdout_max
        self.stderr_tail = stderr_tail

    def _env(self, ctx: JobContext) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "HELIOS_TOKEN"}
        env.update(HELIOS_JOB_ID=ctx.id, HELIOS_JOB_ATTEMPT=str(ctx.attempt), HELIOS_JOB_QUEUE=ctx.queue,
                   HELIOS_JOB_MAX_ATTEMPTS=str(ctx.max_attempts))
        if ctx.traceparent:
            env["TRACEPARENT"] = ctx.traceparent  # the environment-variable carrier OpenTelemetry SDKs read
        return env

    async def run(self, payload: Any, ctx: JobContext) -> Outcome:
        # The spawn is shielded: asyncio forks the command first and connects its pipes after, and a
        # cancel landing in between would have asyncio SIGKILL the group leader alone, leaving whatever
        # the command already started alive in its group (seen under load).  So a cancel waits for
        # the spawn to finish and then kills the whole group, as a cancel during the run does.
        spawn = asyncio.ensure_future(asyncio.create_subprocess_shell(
            self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self._env(ctx), start_new_session=True))
        try:
            proc = await asyncio.shield(spawn)
        except OSError as e:
            return Outcome.failure(f"cannot start the command: {e}")
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._kill(await spawn)
            raise
        if proc.stdin is None or proc.stdout is None or proc.stderr is None:  # not with PIPE; for the type checker
            raise RuntimeError("subprocess pipes missing")
        feed = asyncio.create_task(_feed(proc.stdin, orjson.dumps(payload) + b"\n"))
        head = asyncio.create_task(_read_head(proc.stdout, self.stdout_max))
        tail = asyncio.create_task(_read_tail(proc.stderr, self.stderr_tail))
        io: list[asyncio.Task[Any]] = [feed, head, tail]
        try:
            status = await proc.wait()
            # A background child may hold the pipes open after the command exits: do not wait for it long.
            await asyncio.wait(io, timeout=2.0)
        except asyncio.CancelledError:
            await self._kill(proc)
            raise
        finally:
            for t in io:
                t.cancel()
        out, truncated = head.result() if head.done() and not head.cancelled() else (b"", False)
        err = tail.result() if tail.done() and not tail.cancelled() else b""
        if status != 0:
            return Outcome.failure(_exit_text(status, err))
        if truncated:
            return Outcome.failure(f"the command's output is over {self.stdout_max} bytes: too large for a result")
        return Outcome.success(_parse_output(out))

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        for sig, wait in ((signal.SIGTERM, self.kill_grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), wait)
                # The leader is gone; anything left in its group goes too.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return
            except TimeoutError:
                continue


def _exit_text(status: int, stderr: bytes) -> str:
    if status < 0:
        try:
            what = f"killed by {signal.Signals(-status).name}"
        except ValueError:
            what = f"killed by signal {-status}"
    else:
        what = f"exit status {status}"
    tail = stderr.decode(errors="replace").strip()
    return f"command failed: {what}" + (f"\n{tail}" if tail else "")


def _parse_output(out: bytes) -> Any:
    text = out.decode(errors="replace").strip()
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stdin.write(data)
        await stdin.drain()
        stdin.close()
        await stdin.wait_closed()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command does not read its input: fine


async def _read_head(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    """The first `limit` bytes; the rest is drained (so the command never blocks on a full pipe)."""
    buf = bytearray()
    truncated = False
    while chunk := await stream.read(65536):
        room = limit - len(buf)
        if len(chunk) > room:
            truncated = True
        buf += chunk[:max(room, 0)]
    return bytes(buf), truncated


async def _read_tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(65536):
        buf += chunk
        if len(buf) > keep:
            del buf[: len(buf) - keep]
    return bytes(buf)
