"""A busy script on a real atlasd, from the attacker's side first: Redis 7.0's BUSY state.

Past busy-reply-threshold (200 ms here, by CONFIG SET) a running script lets
atlasd serve other clients from inside it (helios_core/atlas/busy.py).  What
that must not open: an unauthenticated client gets NOAUTH (never data, never
a kill or a shutdown), a client cannot SCRIPT KILL before AUTH, a failed AUTH
still slows its connection, and a flood of commands from many connections
does not grow memory without bound.  Then what it must do: connections
accepted while busy are served and keep their state afterwards, maxclients
holds, SHUTDOWN NOSAVE leaves the AOF without the script's writes, and the
hard cap (atlas.script_kill_after_ms) still kills a script that wrote.

Every wait polls for a state; no test asserts a duration.  The byte-for-byte
comparison with redis-server is test_differential_busy.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_atlasd_support import Daemon, running_daemon

pytestmark = pytest.mark.timeout(120)

SPIN = "while true do end"
BUSY = b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n"
NOAUTH = b"-NOAUTH Authentication required.\r\n"
KILLED = b"-ERR Script killed by user with SCRIPT KILL... script: "


def enc(*args: object) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


class Wire:
    """One raw connection (TCP, or the unix socket with `path`): replies as the bytes sent."""

    def __init__(self, port: int = 0, password: str | None = None, path: Path | None = None,
                 timeout: float = 20.0) -> None:
        if path is not None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(timeout)
            self.sock.connect(str(path))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        if password is not None:
            assert self.call("AUTH", password) == b"+OK\r\n"

    def close(self) -> None:
        self.sock.close()

    def send(self, *args: object) -> None:
        self.sock.sendall(enc(*args))

    def call(self, *args: object) -> bytes:
        self.send(*args)
        return self.reply()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError(self.buf)
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def reply(self) -> bytes:
        line = self._line()
        kind = line[:1]
        if kind in b"$=!":
            n = int(line[1:-2])
            return line if n < 0 else line + self._take(n + 2)
        if kind in b"*~>%|":
            n = int(line[1:-2])
            if n < 0:
                return line
            return line + b"".join(self.reply() for _ in range(2 * n if kind in b"%|" else n))
        return line

    def nothing_within(self, seconds: float) -> bool:
        """No reply arrives within `seconds` (only used where the reply must wait for the script's end)."""
        self.sock.settimeout(seconds)
        try:
            return not self.buf and not self.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(20.0)


def wait_busy(probe: Wire, expected: bytes = BUSY, tries: int = 1000) -> None:
    """Poll with PING until the server says it is busy."""
    for _ in range(tries):
        got = probe.call("PING")
        if got.startswith(b"-BUSY"):
            assert got == expected
            return
        time.sleep(0.01)
    raise AssertionError("the script never became busy")


@contextmanager
def busy_script(port: int, password: str | None, script: str = SPIN, *args: object) -> Iterator[tuple[Wire, Wire]]:
    """(the script's connection, an authenticated probe) while `script` runs busy; killed at the end."""
    caller, probe = Wire(port, password), Wire(port, password)
    try:
        assert probe.call("CONFIG", "SET", "busy-reply-threshold", "200") == b"+OK\r\n"
        caller.send("EVAL", script, 0, *args)
        wait_busy(probe)
        yield caller, probe
    finally:
        try:
            kill = probe.call("SCRIPT", "KILL")
            if kill == b"+OK\r\n":
                assert caller.reply().startswith(KILLED)
        except (OSError, EOFError):
            pass
        caller.close()
        probe.close()


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("busy")) as d:
        yield d


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- the attacker's side ---------------------------------------------------------------------

def test_an_unauthenticated_client_gets_noauth_never_data(atlasd: Daemon) -> None:
    with atlasd.client() as r:
        r.set("secret", "s3cr3t")
    before = Wire(atlasd.port)  # connected before the script started
    try:
        with busy_script(atlasd.port, atlasd.password) as (_, probe):
            during = Wire(atlasd.port)  # accepted while busy
            json_line = Wire(atlasd.port)
            for c in (before, during):
                for cmd in (("GET", "secret"), ("KEYS", "*"), ("SCRIPT", "KILL"), ("FUNCTION", "KILL"),
                            ("FUNCTION", "STATS"), ("SHUTDOWN", "NOSAVE"), ("CLIENT", "LIST"), ("MULTI",),
                            ("WATCH", "secret"), ("CONFIG", "GET", "requirepass"), ("EVAL", "return 1", "0")):
                    assert c.call(*cmd) == NOAUTH, cmd
                # Redis's own refusals before NOAUTH show the command table, nothing else.
                assert c.call("NOPE").startswith(b"-ERR unknown command 'NOPE'")
                assert c.call("HELLO", "3").startswith(b"-NOAUTH HELLO must be called")
            json_line.sock.sendall(b'{"cmd":"GET","key":"secret"}\n')
            while b"\n" not in json_line.buf:
                json_line._fill()
            assert b"NOAUTH" in json_line.buf and b"s3cr3t" not in json_line.buf
            # The script still runs (no kill went through) and the server is up.
            assert probe.call("PING") == BUSY
            during.close()
            json_line.close()
    finally:
        before.close()
    with atlasd.client() as r:
        assert r.get("secret") == b"s3cr3t"


def test_no_script_kill_before_auth_and_a_failed_auth_still_slows(atlasd: Daemon) -> None:
    with busy_script(atlasd.port, atlasd.password) as (caller, probe):
        guesser = Wire(atlasd.port)
        assert guesser.call("SCRIPT", "KILL") == NOAUTH
        assert guesser.call("AUTH", "wrong") == b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        # After a failed AUTH the connection is not read until its delay is over, which needs the
        # loop: pipelined guesses wait for the script's end.
        guesser.send("AUTH", atlasd.password)
        guesser.send("SCRIPT", "KILL")
        assert guesser.nothing_within(0.5)
        assert probe.call("PING") == BUSY  # still running
        assert probe.call("SCRIPT", "KILL") == b"+OK\r\n"
        assert caller.reply().startswith(KILLED)
        assert guesser.reply() == b"+OK\r\n"
        assert guesser.reply() == b"-NOTBUSY No scripts in execution right now.\r\n"
        guesser.close()


def test_a_flood_from_many_connections_while_busy_stays_bounded(atlasd: Daemon) -> None:
    assert atlasd.proc is not None
    pid = atlasd.proc.pid
    flooders = [Wire(atlasd.port, atlasd.password, timeout=1) for _ in range(24)]
    chunk = enc("PING") * 20_000  # 280 KB of PINGs: ~1.8 MB of BUSY replies each, never read
    sent = [0] * len(flooders)

    def flood(i: int) -> None:
        sock = flooders[i].sock
        for _ in range(20):  # 5.6 MB each, 134 MB in all, if atlasd kept reading
            try:
                sock.sendall(chunk)
            except OSError:  # (timeout: atlasd stopped reading this one)
                return
            sent[i] += len(chunk)

    with busy_script(atlasd.port, atlasd.password) as (_, probe):
        base = rss_kb(pid)
        threads = [threading.Thread(target=flood, args=(i,)) for i in range(len(flooders))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert probe.call("PING") == BUSY  # still serving
        grown_mb = (rss_kb(pid) - base) / 1024
        # Unbounded, atlasd would hold ~870 MB of replies here; bounded, well under 1 MB per connection.
        assert grown_mb < 200, (grown_mb, sum(sent))
        assert all(n < 20 * len(chunk) for n in sent), sent  # it stopped reading each client that does not read
    for f in flooders:
        f.close()
    with atlasd.client() as r:
        assert r.ping()


# -- what it must do ---------------------------------------------------------------------------

def test_connections_accepted_while_busy_keep_their_state(atlasd: Daemon) -> None:
    with busy_script(atlasd.port, atlasd.password) as (caller, probe):
        tcp = Wire(atlasd.port)
        unix = Wire(path=atlasd.socket_path)  # the socket's mode is its password
        assert tcp.call("PING") == NOAUTH and unix.call("PING") == BUSY
        hello = tcp.call("HELLO", "3", "AUTH", "default", atlasd.password, "SETNAME", "late")
        assert hello.startswith(b"%7\r\n")
        assert tcp.call("GET", "k") == BUSY
        assert probe.call("SCRIPT", "KILL") == b"+OK\r\n"
        assert caller.reply().startswith(KILLED)
        assert unix.call("PING") == b"+PONG\r\n"  # now served by the loop
        assert tcp.call("CLIENT", "GETNAME") == b"$4\r\nlate\r\n"
        assert tcp.call("HSET", "h", "f", "v") == b":1\r\n"
        assert tcp.call("HGETALL", "h") == b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"  # still RESP3
        tcp.close()
        unix.close()


def test_a_client_accepted_as_the_script_starts_is_served(atlasd: Daemon) -> None:
    """A connection the loop accepts in the same step as a script's EVAL (uvloop makes it a client
    one step later) is served while the script is busy, not left waiting for its end."""
    setup = Wire(path=atlasd.socket_path)
    assert setup.call("CONFIG", "SET", "busy-reply-threshold", "100") == b"+OK\r\n"
    try:
        for _ in range(5):
            caller = Wire(path=atlasd.socket_path)
            caller.send("EVAL", SPIN, 0)
            late = Wire(path=atlasd.socket_path, timeout=30.0)  # (connects while the EVAL is read)
            late.send("PING")
            assert late.reply() == BUSY
            assert setup.call("SCRIPT", "KILL") == b"+OK\r\n"
            assert caller.reply().startswith(KILLED)
            caller.close()
            late.close()
    finally:
        setup.call("CONFIG", "SET", "busy-reply-threshold", "5000")
        setup.close()


def test_maxclients_holds_for_connections_accepted_while_busy(atlasd: Daemon) -> None:
    caller, probe = Wire(atlasd.port, atlasd.password), Wire(atlasd.port, atlasd.password)
    n = probe.call("CLIENT", "LIST").count(b"id=")
    try:
        assert probe.call("CONFIG", "SET", "maxclients", n + 1) == b"+OK\r\n"  # room for one more
        assert probe.call("CONFIG", "SET", "busy-reply-threshold", "200") == b"+OK\r\n"
        caller.send("EVAL", SPIN, 0)
        wait_busy(probe)
        first = Wire(atlasd.port)
        assert first.call("PING") == NOAUTH
        second = Wire(atlasd.port)
        assert second.reply() == b"-ERR max number of clients reached\r\n"
        with pytest.raises((EOFError, OSError)):
            second.reply()
        first.close()
        second.close()
        assert probe.call("SCRIPT", "KILL") == b"+OK\r\n"
        assert caller.reply().startswith(KILLED)
    finally:
        probe.call("CONFIG", "SET", "maxclients", "10000")
        caller.close()
        probe.close()


def test_shutdown_nosave_kills_the_script_and_the_aof_keeps_only_acknowledged_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert r.set("before", "1")
            assert r.eval("return redis.call('set', 'by_script', '1')", 0) == b"OK"
        caller, probe = Wire(d.port, d.password), Wire(d.port, d.password)
        assert probe.call("CONFIG", "SET", "busy-reply-threshold", "200") == b"+OK\r\n"
        caller.send("EVAL", "redis.call('set', 'during', '1') redis.call('del', 'before') " + SPIN, 0)
        wait_busy(probe)
        assert probe.call("SCRIPT", "KILL").startswith(b"-UNKILLABLE Sorry the script already executed write")
        probe.send("SHUTDOWN", "NOSAVE")
        with pytest.raises((EOFError, OSError)):  # as Redis: no reply, the connection closes
            probe.reply()
        with pytest.raises((EOFError, OSError)):  # and the script's caller gets none either
            caller.reply()
        assert d.proc is not None and d.proc.wait(20) == 0
    finally:
        d.kill()
    d = Daemon(data, "--appendfsync", "always").start()
    try:
        with d.client() as r:
            assert r.get("before") == b"1" and r.get("by_script") == b"1"
            assert r.get("during") is None
    finally:
        d.kill()


def test_the_hard_cap_kills_a_script_that_wrote_and_undoes_its_writes(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--appendfsync", "everysec",
               env={"HELIOS_ATLAS__SCRIPT_KILL_AFTER_MS": "1500"}).start()
    try:
        caller, probe = Wire(d.port, d.password), Wire(d.port, d.password)
        assert probe.call("CONFIG", "SET", "busy-reply-threshold", "100") == b"+OK\r\n"
        caller.send("EVAL", "redis.call('set', 'runaway', '1') " + SPIN, 0)
        wait_busy(probe)
        assert probe.call("SCRIPT", "KILL").startswith(b"-UNKILLABLE")
        got = caller.reply()
        assert got.startswith(b"-ERR Script killed: it ran longer than atlas.script_kill_after_ms (1500 ms)"), got
        assert probe.call("GET", "runaway") == b"$-1\r\n"
        assert probe.call("PING") == b"+PONG\r\n"
        caller.close()
        probe.close()
    finally:
        d.kill()


def test_json_lines_get_busy_in_their_own_encoding(atlasd: Daemon) -> None:
    with busy_script(atlasd.port, atlasd.password):
        jl = Wire(path=atlasd.socket_path)
        jl.sock.sendall(b'{"cmd":"GET","key":"k"}\n')
        while b"\n" not in jl.buf:
            jl._fill()
        assert jl.buf == b'{"error":"' + BUSY[1:-2] + b'"}\n'
        jl.close()


def test_tls_clients_wait_for_the_script_to_end(tmp_path: Path) -> None:
    """TLS bytes need the loop's TLS layer: a TLS client is not served while busy, only after."""
    from tests.integration.test_atlasd_tls import make_cert

    cert, key = make_cert(tmp_path)
    d = Daemon(tmp_path / "data", "--appendfsync", "everysec", "--tls-cert", str(cert), "--tls-key", str(key)).start()
    try:
        tls = d.client()
        assert tls.ping()
        caller, probe = Wire(path=d.socket_path), Wire(path=d.socket_path)  # the unix socket stays plain
        assert probe.call("CONFIG", "SET", "busy-reply-threshold", "200") == b"+OK\r\n"
        caller.send("EVAL", SPIN, 0)
        wait_busy(probe)
        answers: list[object] = []
        t = threading.Thread(target=lambda: answers.append(tls.ping()))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not answers  # waiting, not BUSY: its bytes are the loop's to read
        assert probe.call("SCRIPT", "KILL") == b"+OK\r\n"
        assert caller.reply().startswith(KILLED)
        t.join(30)
        assert answers == [True]
        tls.close()
        caller.close()
        probe.close()
    finally:
        d.kill()


def test_protected_mode_holds_for_connections_accepted_while_busy(tmp_path: Path) -> None:
    from tests.integration.test_atlasd_clients import _external_ip

    ip = _external_ip()
    if ip is None:
        pytest.skip("no non-loopback address to connect from")
    d = Daemon(tmp_path / "data", "--appendfsync", "everysec", "--bind", f"127.0.0.1 {ip}").start()
    try:
        with busy_script(d.port, d.password):
            with socket.create_connection((ip, d.port), timeout=5) as s:
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            assert data.startswith(b"-DENIED") and b"protected mode" in data
    finally:
        d.kill()
