"""The job runners against real things: shell commands in real processes, Python handlers imported from files."""

from __future__ import annotations

import asyncio
import os
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helios_core.errors import InvalidInputError
from helios_core.worker.config import WorkerConfig, parse_duration
from helios_core.worker.handlers import (
    ERROR_MAX_CHARS,
    ExecRunner,
    HandlerLoadError,
    JobContext,
    Outcome,
    PythonRunner,
    load_handler,
)


def ctx(job_id: str = "01JOB", attempt: int = 1) -> JobContext:
    return JobContext(id=job_id, queue="q", attempt=attempt, max_attempts=3, worker="test")


def run(runner: Any, payload: Any, c: JobContext | None = None) -> Outcome:
    return asyncio.run(runner.run(payload, c or ctx()))


# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [
    ("30", 30.0), ("2.5", 2.5), ("0", 0.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0),
    ("1h30m", 5400.0), ("250ms", 0.25), (" 10S ", 10.0), ("1m30s", 90.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "-1", "5x", "1h 30m", "m5", "inf", "nan", "1.5.2s", "5m-", "ms"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(InvalidInputError, match="duration"):
        parse_duration(text)


def test_worker_config_validates() -> None:
    with pytest.raises(InvalidInputError, match="queue name"):
        WorkerConfig(queues=("a:b",))
    with pytest.raises(InvalidInputError, match="at least one"):
        WorkerConfig(queues=())
    with pytest.raises(InvalidInputError, match="at most"):
        WorkerConfig(queues=tuple(f"q{i}" for i in range(11)))
    with pytest.raises(InvalidInputError, match="concurrency"):
        WorkerConfig(queues=("q",), concurrency=0)
    assert WorkerConfig(queues=("q",)).visibility_s is None


# -- --exec -----------------------------------------------------------------------------------


def test_exec_acks_with_json_stdout_and_sees_the_payload_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELIOS_TOKEN", "secret-token")
    cmd = ("python3 -c 'import json,os,sys; p=json.load(sys.stdin); "
           "print(json.dumps({\"p\": p, \"id\": os.environ[\"HELIOS_JOB_ID\"], "
           "\"attempt\": os.environ[\"HELIOS_JOB_ATTEMPT\"], \"q\": os.environ[\"HELIOS_JOB_QUEUE\"], "
           "\"token\": os.environ.get(\"HELIOS_TOKEN\")}))'")
    c = ctx("01ABC", attempt=2)
    out = run(ExecRunner(cmd), {"n": 1, "s": "é"}, c)
    assert out == Outcome.success({"p": {"n": 1, "s": "é"}, "id": "01ABC", "attempt": "2", "q": "q", "token": None})
    c.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert run(ExecRunner("printf %s \"$TRACEPARENT\""), None, c).result == c.traceparent


@pytest.mark.parametrize("cmd, result", [
    ("echo hello world", "hello world"),
    ("printf '42'", 42),
    ("true", None),
    ("printf '[1, 2'", "[1, 2"),
    ("cat", {"x": [1, 2]}),  # the payload, echoed back
])
def test_exec_result_is_json_if_it_parses_else_text(cmd: str, result: Any) -> None:
    assert run(ExecRunner(cmd), {"x": [1, 2]}) == Outcome.success(result)


def test_exec_nonzero_exit_fails_with_the_tail_of_stderr() -> None:
    cmd = "python3 -c 'import sys; sys.stderr.write(\"x\" * 10000 + \"the end\\n\"); sys.exit(3)'"
    out = run(ExecRunner(cmd), None)
    assert not out.ok and out.error is not None
    assert out.error.startswith("command failed: exit status 3\n")
    assert out.error.endswith("the end") and len(out.error) < 2100


def test_exec_that_ignores_stdin_and_floods_stdout_does_not_hang() -> None:
    out = run(ExecRunner("head -c 3000000 /dev/zero"), {"big": "y" * 200000})
    assert not out.ok and "too large" in (out.error or "")


def test_exec_cancelled_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    # A shell with a child and a grandchild: all three must die.
    cmd = f"sh -c 'sleep 300 & echo $! >> {pidfile}; sleep 300' & echo $! >> {pidfile}; sleep 300"

    async def main() -> None:
        task = asyncio.create_task(ExecRunner(cmd, kill_grace_s=5).run({}, ctx()))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not pidfile.exists() or len(pidfile.read_text().split()) < 2):
            await asyncio.sleep(0.05)
        pids = [int(p) for p in pidfile.read_text().split()]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for pid in pids:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                await asyncio.sleep(0.05)
            assert not _alive(pid), pid

    asyncio.run(main())


def test_exec_that_ignores_sigterm_gets_sigkill(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    cmd = f"trap '' TERM; touch {ready}; while true; do sleep 0.1; done"

    async def main() -> None:
        task = asyncio.create_task(ExecRunner(cmd, kill_grace_s=0.3).run({}, ctx()))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not ready.exists():
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)

    asyncio.run(main())


def test_exec_killed_by_a_signal_says_so() -> None:
    out = run(ExecRunner("kill -9 $$"), None)
    assert out == Outcome.failure("command failed: killed by SIGKILL")


def test_exec_empty_command_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        ExecRunner("  ")


def _processes_of(job_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries HELIOS_JOB_ID=job_id."""
    marker = f"HELIOS_JOB_ID={job_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0") and _alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_exec_cancelled_while_it_is_being_started_leaves_no_process_behind() -> None:
    """A cancel can land between the fork and the pipes being connected (asyncio awaits in between):
    asyncio would then SIGKILL the group leader alone and the command's children would live on (seen
    in a full run under load).  Cancel after 0, 1, 2, ... loop passes: nothing of the command stays."""
    cmd = "sleep 300 & sh -c 'sleep 300 & sleep 300' & sleep 300"

    async def main() -> None:
        for passes in range(12):
            job_id = f"01CANCEL{os.getpid()}X{passes}"
            task = asyncio.create_task(ExecRunner(cmd, kill_grace_s=5).run({}, ctx(job_id)))
            for _ in range(passes):
                await asyncio.sleep(0)
            task.cancel()
            # Without the fix the cancel itself hangs: asyncio waits for pipes the orphans hold.
            done, _ = await asyncio.wait({task}, timeout=30)
            assert done, f"cancelled after {passes} loop passes: the cancel did not finish in 30 s"
            with pytest.raises(asyncio.CancelledError):
                task.result()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _processes_of(job_id):
                await asyncio.sleep(0.05)
            assert _processes_of(job_id) == [], f"cancelled after {passes} loop passes: processes left"

    asyncio.run(main())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


# -- --handler --------------------------------------------------------------------------------


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module `wtasks_<n>` written to tmp_path, importable; returns its name."""
    name = f"wtasks_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent('''
        import asyncio, threading

        def double(payload, ctx):
            return {"doubled": payload["n"] * 2, "job": ctx.id, "attempt": ctx.attempt,
                    "thread": threading.current_thread().name}

        async def adouble(payload, ctx):
            await asyncio.sleep(0)
            return payload["n"] * 2

        def payload_only(payload):
            return payload

        def boom(payload, ctx):
            def inner():
                raise ValueError("bad input: " + str(payload))
            inner()

        async def aboom(payload, ctx):
            raise KeyError("missing")

        def unserialisable(payload, ctx):
            return object()

        def waits_for_cancel(payload, ctx):
            import time
            while not ctx.cancelled:
                time.sleep(0.01)
            return "stopped"

        class Tasks:
            @staticmethod
            def run(payload, ctx):
                return "static"

        class Callable:
            async def __call__(self, payload, ctx):
                return "acall"

        acallable = Callable()
        not_callable = 42

        def three(a, b, c):
            pass
    '''))
    (tmp_path / "wbroken.py").write_text("def f(:\n")
    (tmp_path / "wraises.py").write_text("import does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_sync_handler_runs_in_a_thread(handlers: str) -> None:
    out = run(PythonRunner.from_spec(f"{handlers}:double"), {"n": 21}, ctx("01X", 3))
    assert out.ok and out.result["doubled"] == 42 and out.result["job"] == "01X" and out.result["attempt"] == 3
    assert out.result["thread"] == "job-01X"


def test_sync_handlers_reuse_daemon_threads(handlers: str) -> None:
    async def main() -> None:
        runner = PythonRunner.from_spec(f"{handlers}:double")
        for i in range(10):  # one after the other: one thread, named after the job it runs
            out = await runner.run({"n": i}, ctx(f"01J{i}"))
            assert out.result["thread"] == f"job-01J{i}"
        assert runner._threads.started == 1
        outs = await asyncio.gather(*(runner.run({"n": i}, ctx(f"02J{i}")) for i in range(5)))
        assert [o.result["doubled"] for o in outs] == [0, 2, 4, 6, 8]
        assert 1 <= runner._threads.started <= 5
        # Daemon threads: a handler that never returns cannot keep the process from exiting.
        assert all(t.daemon for t in threading.enumerate() if t.name.startswith("job-"))

    asyncio.run(main())


@pytest.mark.parametrize("fn, result", [
    ("adouble", 42), ("payload_only", {"n": 21}), ("Tasks.run", "static"), ("acallable", "acall"),
])
def test_handler_forms(handlers: str, fn: str, result: Any) -> None:
    assert run(PythonRunner.from_spec(f"{handlers}:{fn}"), {"n": 21}) == Outcome.success(result)


def test_handler_exception_fails_with_type_message_and_traceback(handlers: str) -> None:
    out = run(PythonRunner.from_spec(f"{handlers}:boom"), 7)
    assert not out.ok and out.error is not None
    first, rest = out.error.split("\n", 1)
    assert first == "ValueError: bad input: 7"
    assert "Traceback" in rest and "in inner" in rest and "handlers.py" not in rest
    out = run(PythonRunner.from_spec(f"{handlers}:aboom"), None)
    assert out.error is not None and out.error.startswith("KeyError: 'missing'")


def test_long_errors_keep_head_and_tail() -> None:
    err = Outcome.failure("E: head\n" + "x" * 10000 + "the end").error or ""
    assert len(err) <= ERROR_MAX_CHARS and err.startswith("E: head") and err.endswith("the end")


def test_result_that_is_not_json_fails_the_job(handlers: str) -> None:
    out = run(PythonRunner.from_spec(f"{handlers}:unserialisable"), None)
    assert not out.ok and "JSON" in (out.error or "")


def test_cancelled_sync_handler_is_told_and_holds_its_run_until_it_returns(handlers: str) -> None:
    async def main() -> None:
        c = ctx()
        task = asyncio.create_task(PythonRunner.from_spec(f"{handlers}:waits_for_cancel").run(None, c))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert c.cancelled

    asyncio.run(main())


@pytest.mark.parametrize("spec, message", [
    ("nocolon", "is not MODULE:FUNCTION"),
    (":f", "is not MODULE:FUNCTION"),
    ("m:", "is not MODULE:FUNCTION"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("wbroken:f", "importing module 'wbroken' failed: SyntaxError"),
    ("wraises:f", "importing module 'wraises' failed: ModuleNotFoundError"),
    ("{m}:nope", "'{m}' has no attribute 'nope'"),
    ("{m}:Tasks.nope", "'{m}:Tasks' has no attribute 'nope'"),
    ("{m}:not_callable", "is a int, not a function"),
])
def test_bad_handler_names_what_is_wrong(handlers: str, spec: str, message: str) -> None:
    with pytest.raises(HandlerLoadError, match=message.format(m=handlers).replace("(", r"\(")):
        load_handler(spec.format(m=handlers))


def test_handler_with_a_wrong_signature_is_refused(handlers: str) -> None:
    with pytest.raises(HandlerLoadError, match="must accept"):
        PythonRunner.from_spec(f"{handlers}:three")


def test_heartbeat_from_a_thread_calls_back() -> None:
    seen: list[int] = []
    c = JobContext("j", "q", 1, 1, on_heartbeat=lambda: seen.append(1))
    c.heartbeat()
    assert seen == [1]

