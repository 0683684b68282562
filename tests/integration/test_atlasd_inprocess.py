"""AtlasServer in this process: durability ordering, a failing disk, WATCH, CONFIG SET appendfsync.

The server runs on the test's own loop and clients speak raw RESP over the
unix socket, so the engine's I/O seam (AofFile.os_write / os_fsync) can make
the disk fail under a live connection.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from helios_core.atlas.daemon import AUTH_FAILURES_PER_SECOND, AtlasServer
from helios_core.atlas.engine import Engine
from helios_core.atlas.fsops import FaultyFs, Fs
from helios_core.clock import wall_ms
from helios_core.config import load_config

pytestmark = pytest.mark.timeout(60)


def wire(*args: bytes | str) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


class Raw:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, *cmds: bytes) -> None:
        self.writer.write(b"".join(cmds))
        await self.writer.drain()

    async def reply(self) -> Any:
        """One RESP2 reply as Python (errors as ('ERR', text))."""
        line = (await asyncio.wait_for(self.reader.readline(), 10))[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return ("ERR", rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            return (await self.reader.readexactly(n + 2))[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [await self.reply() for _ in range(n)]
        raise AssertionError(f"unexpected reply line {line!r}")

    async def call(self, *args: bytes | str) -> Any:
        await self.send(wire(*args))
        return await self.reply()


def run(tmp_path: Path, body: Callable[[AtlasServer, Callable[[], Awaitable[Raw]]], Awaitable[None]],
        appendfsync: str = "always", clock: Callable[[], int] | None = None, fs: Fs | None = None,
        **overrides: Any) -> None:
    config = load_config(None, env={}, overrides={"atlasd.port": 0, "atlas.appendfsync": appendfsync, **overrides})

    async def main() -> None:
        if clock is None and fs is None:
            server = AtlasServer.open(tmp_path / "data", config)
        else:
            data = tmp_path / "data"
            engine = Engine.open(data, config.atlas, clock=clock or wall_ms, component="test", fs=fs or Fs())
            server = AtlasServer(engine, config, data / "atlas.sock")
        await server.start()
        writers: list[asyncio.StreamWriter] = []

        async def connect() -> Raw:
            r, w = await asyncio.open_unix_connection(str(server.socket_path))
            writers.append(w)
            return Raw(r, w)

        try:
            await body(server, connect)
        finally:
            for w in writers:
                w.close()
            await server.stop()

    asyncio.run(main())


def test_pipelined_replies_keep_order_across_durability_waits(tmp_path: Path) -> None:
    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        cmds = []
        for i in range(200):
            cmds += [wire("SET", f"k{i}", str(i)), wire("GET", f"k{i}"), wire("PING"), wire("INCR", "n")]
        await c.send(*cmds)
        for i in range(200):
            assert await c.reply() == "OK"
            assert await c.reply() == str(i).encode()
            assert await c.reply() == "PONG"
            assert await c.reply() == i + 1

    run(tmp_path, body)


def test_failing_disk_turns_waiting_replies_into_errors(tmp_path: Path) -> None:
    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        assert await c.call("SET", "a", "1") == "OK"
        aof = server.engine.aof
        assert aof is not None

        def full(fd: int, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        aof.os_write = full  # type: ignore[method-assign]
        kind, text = await c.call("SET", "b", "2")
        assert kind == "ERR" and text.startswith("MISCONF") and "No space left" in text
        assert await c.call("GET", "b") is None  # undone: memory never got ahead of the disk
        kind, text = await c.call("SET", "c", "3")
        assert text.startswith("MISCONF")  # refused while the disk is bad
        assert await c.call("GET", "a") == b"1"  # reads go on
        info = (await c.call("INFO", "persistence")).decode()
        assert "aof_last_write_status:err" in info
        del aof.os_write  # the disk recovers; the engine's probe notices within a second or so
        for _ in range(60):
            await asyncio.sleep(0.1)
            if server.engine.aof_error is None:
                break
        assert await c.call("SET", "c", "3") == "OK"

    run(tmp_path, body)


def test_watch_multi_exec_in_process(tmp_path: Path) -> None:
    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        a, b = await connect(), await connect()
        assert await a.call("WATCH", "w") == "OK"
        assert await a.call("MULTI") == "OK"
        assert await a.call("SET", "w", "from-a") == "QUEUED"
        assert await b.call("SET", "w", "from-b") == "OK"
        assert await a.call("EXEC") is None  # nil array: the watched key changed
        assert server.watches._touch not in server.engine.commit_hooks  # nothing watched: no hook
        assert await a.call("MULTI") == "OK"
        assert await a.call("INCR", "n") == "QUEUED"
        assert await a.call("INCR", "n") == "QUEUED"
        seq_before = server.engine.seq
        assert await a.call("EXEC") == [1, 2]
        assert server.engine.seq == seq_before + 1  # one atomic AOF record
        assert await a.call("DISCARD") == ("ERR", "ERR DISCARD without MULTI")

    run(tmp_path, body)


def test_config_set_appendfsync_switches_policy(tmp_path: Path) -> None:
    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        engine = server.engine
        for policy in ("everysec", "always", "no", "everysec"):
            assert await c.call("CONFIG", "SET", "appendfsync", policy) == "OK"
            assert engine.policy == policy and engine.config.appendfsync == policy
            assert await c.call("SET", f"p-{policy}", "1") == "OK"
        await asyncio.sleep(1.3)  # the everysec timer runs again after the switch back
        assert engine.synced_seq == engine.written_seq == engine.seq

    run(tmp_path, body, appendfsync="always")


def test_pubsub_messages_follow_pending_replies(tmp_path: Path) -> None:
    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        sub, pub = await connect(), await connect()
        assert await sub.call("SUBSCRIBE", "c") == [b"subscribe", b"c", 1]
        assert await sub.call("GET", "x") == ("ERR", "ERR Can't execute 'get': only (P|S)SUBSCRIBE / "
                                               "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
        assert await pub.call("PUBLISH", "c", "hello") == 1
        assert await sub.reply() == [b"message", b"c", b"hello"]
        assert await sub.call("PING") == [b"pong", b""]
        assert await sub.call("UNSUBSCRIBE") == [b"unsubscribe", b"c", 0]
        assert await sub.call("GET", "x") is None  # back to normal mode
        assert not server.channels

    run(tmp_path, body)


def test_watch_fails_when_a_watched_key_expires(tmp_path: Path) -> None:
    """A TTL running out counts as a change even before anything deletes the key (the clock is ours)."""
    now = [1_700_000_000_000]

    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        c = await connect()
        assert await c.call("SET", "e", "1", "PX", "100") == "OK"
        assert await c.call("WATCH", "e") == "OK"
        now[0] += 150
        assert await c.call("MULTI") == "OK"
        assert await c.call("SET", "x", "1") == "QUEUED"
        assert await c.call("EXEC") is None
        # Already expired when watched: it is simply absent, and its removal (lazy here) is no change.
        assert await c.call("SET", "g", "1", "PX", "100") == "OK"
        now[0] += 150
        assert await c.call("WATCH", "g") == "OK"
        assert await c.call("GET", "g") is None  # deletes the expired key: a logged DEL
        assert await c.call("MULTI") == "OK"
        assert await c.call("SET", "x", "2") == "QUEUED"
        assert await c.call("EXEC") == ["OK"]

    run(tmp_path, body, clock=lambda: now[0])


def test_a_reply_waits_only_for_the_writes_it_observed(tmp_path: Path) -> None:
    """The reveal rule atlasd shares with the embedded Store: while one client's write waits on a
    slow fsync, another client's read of other keys (and a lazy-expiry DEL) is answered at once;
    a read of the written key waits until that write is durable."""
    now = [1_700_000_000_000]
    fs = FaultyFs()

    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        a, b = await connect(), await connect()
        assert await a.call("SET", "other", "1") == "OK"
        assert await a.call("SET", "old", "1", "PX", "100") == "OK"
        now[0] += 150
        gate = fs.block("fsync")
        await a.send(wire("SET", "k", "v"))
        try:
            assert await asyncio.wait_for(b.call("GET", "other"), 5) == b"1"
            assert await asyncio.wait_for(b.call("GET", "old"), 5) is None  # a lazy-expiry DEL: no wait
            await b.send(wire("GET", "k"))
            waiting = asyncio.ensure_future(b.reply())
            done, _ = await asyncio.wait([waiting], timeout=0.3)
            assert not done, "a read revealed a write whose fsync had not finished"
        finally:
            gate.set()
        assert await asyncio.wait_for(waiting, 5) == b"v"
        assert await a.reply() == "OK"

    run(tmp_path, body, clock=lambda: now[0], fs=fs)


def test_failed_auths_are_capped_server_wide(tmp_path: Path) -> None:
    """Many connections guessing at once: after AUTH_FAILURES_PER_SECOND failures in a second the
    server refuses AUTH without looking until the second is over (the per-connection delay alone
    would let a guesser with many connections go on)."""
    async def body(server: AtlasServer, connect: Callable[[], Awaitable[Raw]]) -> None:
        guessers = [await connect() for _ in range(AUTH_FAILURES_PER_SECOND)]
        for c in guessers:
            kind, text = await c.call("AUTH", "guess")
            assert text.startswith("WRONGPASS")
        late = await connect()
        kind, text = await late.call("AUTH", "pw")  # the right password, in the same second
        assert kind == "ERR" and "too many failed AUTH attempts on this server" in text
        start, n = server._auth_window
        server._auth_window = (start - 1.0, n)  # the second is over (without sleeping through it)
        fresh = await connect()
        assert await fresh.call("AUTH", "pw") == "OK"

    run(tmp_path, body, **{"atlasd.requirepass": "pw"})


def test_a_service_lends_its_engine_a_socket(tmp_path: Path) -> None:
    """The gateway's way of letting `helios user --data DIR` in while it runs: the socket only,
    SHUTDOWN refused (the owner stops), the engine left open when the socket stops."""
    config = load_config(None, env={}, overrides={"atlasd.port": 0})

    async def main() -> None:
        data = tmp_path / "data"
        engine = Engine.open(data, config.atlas, component="test")
        engine.attach()
        server = AtlasServer(engine, config, data / "atlas.sock", owner="helios gateway")
        await server.serve_socket()
        assert oct((data / "atlas.sock").stat().st_mode & 0o777) == "0o600"
        r, w = await asyncio.open_unix_connection(str(data / "atlas.sock"))
        c = Raw(r, w)
        assert await c.call("SET", "a", "1") == "OK"  # no AUTH on the socket
        kind, text = await c.call("SHUTDOWN", "NOSAVE")
        assert kind == "ERR" and "served by helios gateway" in text
        await server.stop_serving()
        assert await r.read() == b""  # closed
        w.close()
        assert not (data / "atlas.sock").exists()
        assert engine.execute([b"GET", b"a"]) == b"1"  # the owner's engine goes on
        await engine.aclose()

    asyncio.run(main())
