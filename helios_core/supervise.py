"""Keep N forked copies of a process body running: `--workers N` for any HELIOS daemon.

A `Supervisor` forks the children of one or more `Group`s (a group is a body
run in `count` children, each knowing its slot), then `run()`s until SIGTERM
or SIGINT: it forwards SIGHUP to the groups that want it, restarts a child
that died (with backoff), gives up on a slot that keeps dying at start (a crash
loop: something is wrong with every start, restarting harder will not help),
and on SIGTERM/SIGINT stops the groups in the reverse order they were started,
each with its own grace period before SIGKILL.  Groups started first are the
ones the later ones depend on (the gateway's atlasd child), so they stop last.

Why the parent stays bare: it never runs an event loop and never starts a
thread, so every fork copies a single-threaded process (forking a process with
threads copies their locks in whatever state they were).  Work the parent needs
done before the workers start (the gateway's first-admin bootstrap) runs in a
short-lived child through `call_in_child`.

Children are put in their own process group, so a terminal's Ctrl-C reaches
only the supervisor (which then stops the groups in order, rather than every
process at once), and they ask the kernel for SIGTERM should the supervisor
die (PR_SET_PDEATHSIG), so a `kill -9` of the parent leaves no orphans serving.

A child tells the supervisor it is ready (listening, say) by calling the
`ready` function its body receives; `wait_ready` waits for that.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from helios_core.errors import HeliosError
from helios_core.observability.logging import get_logger

__all__ = ["Body", "Group", "RestartPolicy", "Outcome", "Supervisor", "call_in_child", "reuse_port_socket"]

log = get_logger("supervise")

# A child's body: runs after fork with its slot (0..count-1) and a function to call once it is ready.
# Returning means a clean exit (status 0); raising logs the error and exits 1.
Body = Callable[[int, Callable[[], None]], None]
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead child is forked again, and when to stop trying."""

    backoff_initial: float = 0.1  # seconds before the first restart of a slot
    backoff_max: float = 5.0  # the delay doubles per consecutive quick death, up to this
    stable_after: float = 10.0  # a child that lived this long died for a new reason: backoff starts over
    crash_limit: int = 5  # this many quick deaths of one slot in a row: a crash loop, give up

    def delay(self, quick_deaths: int) -> float:
        if quick_deaths <= 0:
            return self.backoff_initial
        return min(self.backoff_max, self.backoff_initial * 2.0 ** (quick_deaths - 1))


@dataclass(frozen=True)
class Group:
    """`count` children running `body`; `grace` seconds between SIGTERM and SIGKILL at stop."""

    name: str
    body: Body
    count: int = 1
    grace: float = 30.0
    forward_hup: bool = True  # a body that does not handle SIGHUP would die of it

    def __post_init__(self) -> None:
        if self.count < 1:
            raise HeliosError(f"{self.name}: the number of processes must be 1 or more, not {self.count}",
                              code="bad_config")


@dataclass
class Outcome:
    """How `run()` ended: `clean` when every child exited 0 after the stop; `gave_up` on a crash loop."""

    clean: bool = True
    gave_up: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class _Slot:
    group: Group
    index: int
    pid: int = 0
    started: float = 0.0
    ready: bool = False
    quick_deaths: int = 0
    due: float | None = None  # when a dead slot is forked again


class Supervisor:
    """Fork, watch, restart and stop the children of some `Group`s.  Use as a context manager: the
    signal handlers are installed on entry (a SIGTERM during start-up is remembered, not lost) and
    the previous ones put back on exit, after every child was stopped."""

    def __init__(self, name: str, policy: RestartPolicy = RestartPolicy(), *, poll: float = 0.25) -> None:
        self.name = name
        self.policy = policy
        self.poll = poll  # longest sleep between looks at the children (signals wake it at once)
        self.slots: list[_Slot] = []
        self.groups: list[Group] = []
        self.stop_requested = False
        self._pending: list[int] = []
        self._old: dict[int, Any] = {}
        self._wake_r = self._wake_w = -1
        self._ready_r = self._ready_w = -1
        self._ready_buf = b""
        self._old_wakeup = -1

    # --- lifecycle ---

    def __enter__(self) -> Supervisor:
        self._wake_r, self._wake_w = os.pipe()
        self._ready_r, self._ready_w = os.pipe()
        for fd in (self._wake_r, self._wake_w, self._ready_r):
            os.set_blocking(fd, False)
        # The wakeup fd gets a byte for every signal: the loop sleeps in select() on it instead of polling.
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w)
        self._old = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if any(s.pid for s in self.slots):
                self.stop_all(Outcome())
        finally:
            for sig, handler in self._old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(self._old_wakeup)
            for fd in (self._wake_r, self._wake_w, self._ready_r, self._ready_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only remember it: the loop acts on it (a handler must not fork or wait).
        self._pending.append(signum)

    def start(self, group: Group) -> list[int]:
        """Fork `group`'s children now; returns their pids."""
        self.groups.append(group)
        slots = [_Slot(group, i) for i in range(group.count)]
        self.slots.extend(slots)
        for slot in slots:
            self._spawn(slot)
        log.info("started", supervisor=self.name, group=group.name, pids=[s.pid for s in slots])
        return [s.pid for s in slots]

    def pids(self, group: str | None = None) -> list[int]:
        return [s.pid for s in self.slots if s.pid and (group is None or s.group.name == group)]

    def request_stop(self) -> None:
        self._pending.append(signal.SIGTERM)

    def wait_ready(self, group: str, timeout: float) -> None:
        """Wait until every child of `group` called its `ready`; raise HeliosError if one of them died
        first, the time ran out, a stop was requested or another group fell into a crash loop."""
        deadline = time.monotonic() + timeout
        while True:
            self._handle_signals(forward=False)
            if self.stop_requested:
                raise HeliosError(f"{self.name}: stopped while {group} was starting", code="stopped")
            problem = self._tick(waiting_for=group)
            if problem:
                raise HeliosError(f"{self.name}: {problem} (see the log above)", code="workers")
            if all(s.ready for s in self.slots if s.group.name == group):
                return
            if time.monotonic() >= deadline:
                raise HeliosError(f"{self.name}: {group} not ready after {timeout:g} s", code="workers")
            self._sleep(min(self._next_wait(), max(0.0, deadline - time.monotonic())))

    def run(self) -> Outcome:
        """Watch the children until SIGTERM/SIGINT (or a crash loop), then stop them all in order."""
        outcome = Outcome()
        while True:
            self._handle_signals(forward=True)
            if self.stop_requested:
                break
            problem = self._tick()
            if problem:
                outcome.gave_up, outcome.clean = True, False
                outcome.problems.append(problem)
                break
            self._sleep(self._next_wait())
        self.stop_all(outcome)
        return outcome

    def stop_all(self, outcome: Outcome) -> None:
        """SIGTERM each group's children, the last started group first; SIGKILL what outlives its grace."""
        for group in reversed(self.groups):
            slots = [s for s in self.slots if s.group is group]
            for slot in slots:
                slot.due = None  # nothing is restarted any more
                if slot.pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.pid, signal.SIGTERM)
            deadline = time.monotonic() + group.grace
            while any(s.pid for s in slots):
                self._handle_signals(forward=False)
                for slot, status in self._reap():
                    code = os.waitstatus_to_exitcode(status)
                    if code != 0:
                        outcome.clean = False
                        outcome.problems.append(f"{slot.group.name}[{slot.index}] exited with status {code}")
                if not any(s.pid for s in slots):
                    break
                if time.monotonic() >= deadline:
                    for slot in slots:
                        if slot.pid:
                            log.error("did not stop within its grace period; killing", supervisor=self.name,
                                      group=group.name, pid=slot.pid, grace=group.grace)
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(slot.pid, signal.SIGKILL)
                    deadline = float("inf")  # SIGKILL cannot be ignored: wait for the reaping
                self._sleep(0.05)
            log.info("stopped", supervisor=self.name, group=group.name)

    # --- inside ---

    def _handle_signals(self, *, forward: bool) -> None:
        while self._pending:
            signum = self._pending.pop(0)
            if signum == signal.SIGCHLD:
                continue  # only a wake-up: _reap looks
            if signum in (signal.SIGTERM, signal.SIGINT):
                if not self.stop_requested:
                    log.info("stop requested", supervisor=self.name, signal=signal.Signals(signum).name)
                self.stop_requested = True
            elif signum == signal.SIGHUP and forward:
                for slot in self.slots:
                    if slot.pid and slot.group.forward_hup:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(slot.pid, signal.SIGHUP)

    def _tick(self, waiting_for: str | None = None) -> str | None:
        """Reap dead children, schedule and fork restarts, note who is ready.  Returns a problem that
        ends the supervision: a crash loop, or a death in the group `waiting_for` (still starting)."""
        now = time.monotonic()
        for slot, status in self._reap():
            code = os.waitstatus_to_exitcode(status)
            if slot.group.name == waiting_for:
                return f"the {slot.group.name} process exited with status {code} before it was ready"
            if self._died(slot, code, now):
                return f"{slot.group.name} kept dying at start (last status {code}); gave up"
        self._read_ready()
        for slot in self.slots:
            if slot.pid == 0 and slot.due is not None and slot.due <= now:
                self._spawn(slot)
                log.info("restarted", supervisor=self.name, group=slot.group.name, slot=slot.index, pid=slot.pid)
        return None

    def _next_wait(self) -> float:
        now = time.monotonic()
        due = [s.due - now for s in self.slots if s.pid == 0 and s.due is not None]
        return max(0.0, min([self.poll, *due]))

    def _reap(self) -> Iterator[tuple[_Slot, int]]:
        for slot in self.slots:
            if not slot.pid:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: count it as gone
                pid, status = slot.pid, 0
            if pid == 0:
                continue
            slot.pid = 0
            slot.ready = False
            yield slot, status

    def _died(self, slot: _Slot, code: int, now: float) -> bool:
        """Schedule a restart of `slot`; True when it is a crash loop."""
        lived = now - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if lived < self.policy.stable_after else 0
        if slot.quick_deaths >= self.policy.crash_limit:
            log.error("keeps dying at start; giving up", supervisor=self.name, group=slot.group.name,
                      slot=slot.index, status=code, deaths=slot.quick_deaths)
            return True
        delay = self.policy.delay(slot.quick_deaths)
        slot.due = now + delay
        log.warning("child died; restarting", supervisor=self.name, group=slot.group.name, slot=slot.index,
                    status=code, lived_s=round(lived, 3), restart_in_s=round(delay, 3))
        return False

    def _read_ready(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._ready_r, 4096):
                self._ready_buf += chunk
        *lines, self._ready_buf = self._ready_buf.split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                pid = int(line)
                for slot in self.slots:
                    if slot.pid == pid:
                        slot.ready = True

    def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(InterruptedError):
            if select.select([self._wake_r], [], [], seconds)[0]:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 4096):
                        pass

    def _spawn(self, slot: _Slot) -> None:
        slot.due = None
        slot.ready = False
        slot.started = time.monotonic()
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(slot, parent)
        slot.pid = pid

    def _child(self, slot: _Slot, parent: int) -> None:
        """After fork: become a plain process running the body; never return into the parent's code."""
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            for sig in _SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            # A SIGHUP passed on while the body is still starting must not kill it (the default
            # action): ignored until the body installs its own handler.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            for fd in (self._wake_r, self._wake_w, self._ready_r):
                with contextlib.suppress(OSError):
                    os.close(fd)
            os.setpgid(0, 0)
            _die_with_parent(parent)
            ready_fd = self._ready_w

            def ready() -> None:
                with contextlib.suppress(OSError):
                    os.write(ready_fd, f"{os.getpid()}\n".encode())

            slot.group.body(slot.index, ready)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except KeyboardInterrupt:
            pass
        except BaseException as e:  # noqa: BLE001 - whatever happens, the child exits here
            log.opt(exception=e).error("child failed", supervisor=self.name, group=slot.group.name,
                                       slot=slot.index)
            code = 1
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this process when the supervisor dies (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def call_in_child(work: Callable[[], Any], what: str) -> Any:
    """Run `work()` in a forked child and return its JSON-able result; its HeliosError is raised here.

    For start-up work that needs an event loop or threads, which the supervisor must not have
    (see the module's note).  The child is waited for; nothing of it outlives the call.
    """
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            # Not the caller's handlers (a supervisor's only note signals down for a loop that does
            # not run here); its own process group, so a terminal's Ctrl-C goes to the caller alone.
            signal.set_wakeup_fd(-1)
            for sig in _SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            os.setpgid(0, 0)
            _die_with_parent(os.getppid())
            reply: dict[str, Any] = {"ok": work()}
        except HeliosError as e:
            reply = {"error": e.message, "code": e.code}
        except BaseException as e:  # noqa: BLE001 - the child must exit here
            log.opt(exception=e).error(f"{what} failed")
            reply = {"error": f"{what} failed: {type(e).__name__}: {e}", "code": "internal"}
            code = 1
        try:
            data = json.dumps(reply).encode()
            while data:
                data = data[os.write(w, data):]
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
    os.close(w)
    chunks = []
    try:
        while chunk := _read_retrying(r):
            chunks.append(chunk)
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    try:
        reply = json.loads(b"".join(chunks))
    except ValueError:
        raise HeliosError(f"{what} failed: the helper process exited with status "
                          f"{os.waitstatus_to_exitcode(status)} and no answer", code="internal") from None
    if "error" in reply:
        raise HeliosError(reply["error"], code=reply.get("code") or "internal")
    return reply["ok"]


def _read_retrying(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 65536)
        except InterruptedError:  # pragma: no cover - PEP 475 retries, but a handler may raise
            continue


def reuse_port_socket(host: str, port: int, *, listen: bool = True, backlog: int = 1024) -> socket.socket:
    """A non-blocking TCP socket bound with SO_REUSEPORT, so several processes share the port.

    The supervisor binds one with ``listen=False`` to learn the port (``port=0``) and keep it
    reserved; each worker binds its own on that port and listens.  A parent socket that listened
    too would be handed connections nobody accepts.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
