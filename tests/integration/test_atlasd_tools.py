"""atlasd with Redis's own tools (redis-cli, redis-benchmark) and with raw protocol garbage."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_atlasd_support import Daemon, running_daemon

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed"),
]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path) as d:
        yield d


def cli(d: Daemon, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(["redis-cli", "-p", str(d.port), "-a", d.password or "", "--no-auth-warning", *args],
                         input=stdin, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def raw(d: Daemon, data: bytes, wait: float = 0.3) -> bytes:
    """Send `data` on the unix socket (no AUTH needed), read until the server closes or goes quiet;
    b'<EOF>' marks a close."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(d.socket_path))
        s.sendall(data)
        s.settimeout(wait)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out + b"<EOF>"
                out += chunk
        except TimeoutError:
            return out
        except ConnectionResetError:
            return out + b"<RST>"


def test_redis_cli(daemon: Daemon) -> None:
    assert cli(daemon, "set", "a", "b").strip() == "OK"
    assert cli(daemon, "get", "a").strip() == "b"
    assert cli(daemon, "ping").strip() == "PONG"
    assert cli(daemon, "-3", "hello", "3").count("proto") == 1
    assert cli(daemon, "zadd", "z", "1.5", "m").strip() == "1"
    assert cli(daemon, "zrange", "z", "0", "-1", "withscores").split() == ["m", "1.5"]
    assert "atlas_version" in cli(daemon, "info", "server")
    # Piped commands go through the same parser (one connection, several commands).
    assert cli(daemon, stdin="set p 1\nincr p\nget p\n").split() == ["OK", "2", "2"]
    # The unix socket.
    out = subprocess.run(["redis-cli", "-s", str(daemon.socket_path), "get", "a"], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "b"
    # redis-cli builds its help from COMMAND DOCS (it asserts on malformed docs).
    assert "sorted-set" in cli(daemon, "help", "zadd") or cli(daemon, "command", "docs", "zadd")


def test_redis_benchmark_without_errors(daemon: Daemon) -> None:
    if shutil.which("redis-benchmark") is None:
        pytest.skip("redis-benchmark is not installed")
    out = subprocess.run(
        ["redis-benchmark", "-p", str(daemon.port), "-a", daemon.password or "",
         "-t", "ping,set,get,incr,mset,zadd,zpopmin", "-n", "10000",
         "-q"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    lines = [ln.split("\r")[-1] for ln in out.stdout.splitlines() if "requests per second" in ln]
    names = {ln.split(":")[0] for ln in lines}
    assert {"PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "ZADD", "ZPOPMIN"} <= names, out.stdout
    assert "MSET (10 keys)" in names
    assert "error" not in (out.stdout + out.stderr).lower()


def test_redis_benchmark_pipelined(daemon: Daemon) -> None:
    if shutil.which("redis-benchmark") is None:
        pytest.skip("redis-benchmark is not installed")
    out = subprocess.run(["redis-benchmark", "-p", str(daemon.port), "-a", daemon.password or "",
                          "-t", "set,get", "-n", "20000", "-P", "16", "-q"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0 and "error" not in out.stdout.lower(), out.stdout + out.stderr
    with daemon.client() as r:
        assert len(r.get("key:__rand_int__")) == 3  # the value redis-benchmark wrote


@pytest.mark.parametrize("data,reply", [
    (b"*x\r\n", b"-ERR Protocol error: invalid multibulk length\r\n<EOF>"),
    (b"*1\r\nx\r\n", b"-ERR Protocol error: expected '$', got 'x'\r\n<EOF>"),
    (b"*2\r\n$3\r\nGET\r\n$-1\r\n", b"-ERR Protocol error: invalid bulk length\r\n<EOF>"),
    (b'set "a b\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n<EOF>"),
    (b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", b"+PONG\r\n+OK\r\n"),
    (b"PING\r\n*1\r\n$4\r\nPING\r\n*y\r\n",
     b"+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n<EOF>"),
])
def test_protocol_errors_close_the_connection(daemon: Daemon, data: bytes, reply: bytes) -> None:
    assert raw(daemon, data) == reply


def test_oversized_inline_and_bulk(daemon: Daemon) -> None:
    assert raw(daemon, b"x" * (70 * 1024)).startswith(b"-ERR Protocol error: too big inline request")
    with daemon.client() as r:
        r.config_set("max-value-bytes", "1000")
    assert raw(daemon, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1001\r\n").startswith(
        b"-ERR Protocol error: invalid bulk length")


def test_garbage_never_crashes_the_daemon(daemon: Daemon) -> None:
    rng = random.Random(1234)
    samples = [b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", b"PING\r\n", b"*1\r\n$4\r\nPING\r\n",
               b"HELLO 3\r\n", b"SUBSCRIBE c\r\n", b"MULTI\r\n", b"EXEC\r\n"]
    for i in range(150):
        kind = i % 3
        if kind == 0:
            data = os.urandom(rng.randint(1, 400))
        elif kind == 1:
            s = rng.choice(samples)
            data = s[:rng.randint(0, len(s))]  # truncated
        else:
            s = bytearray(b"".join(rng.choice(samples) for _ in range(4)))
            for _ in range(3):
                s[rng.randrange(len(s))] = rng.randrange(256)
            data = bytes(s)
        raw(daemon, data, wait=0.02)
    with daemon.client() as r:
        assert r.ping()
        r.set("still", "alive")
        assert r.get("still") == b"alive"
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_subscriber_that_never_reads_is_dropped_past_the_pubsub_limit(daemon: Daemon) -> None:
    """client-output-buffer-limit's pubsub hard limit, set at run time, is the one in force: a subscriber
    that does not read is disconnected once its unsent messages pass it (and the publisher goes on)."""
    with daemon.client() as r:
        r.config_set("client-output-buffer-limit", "pubsub 64kb 0 0")
        assert r.config_get("client-output-buffer-limit")["client-output-buffer-limit"].endswith(
            "pubsub 65536 0 0")
        try:
            with socket.create_connection(("127.0.0.1", daemon.port)) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                password = (daemon.password or "").encode()
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password))
                assert s.recv(5) == b"+OK\r\n"
                s.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n")
                deadline = time.monotonic() + 30
                while r.pubsub_numsub("ch")[0][1] != 1:  # (subscribed; the reply is left unread)
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                message = b"m" * 16384
                receivers = 1
                while receivers and time.monotonic() < deadline:  # until it is dropped
                    receivers = r.publish("ch", message)
                assert receivers == 0
                assert not any(c["cmd"] == "subscribe" for c in r.client_list())
        finally:
            r.config_set("client-output-buffer-limit", "pubsub 32mb 0 0")


def test_client_that_never_reads_is_bounded(daemon: Daemon) -> None:
    """A pipelining client that does not read its replies is paused, not buffered without bound."""
    with socket.create_connection(("127.0.0.1", daemon.port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # An authenticated client: a stranger's buffers have their own, smaller caps.
        password = (daemon.password or "").encode()
        s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password))
        assert s.recv(5) == b"+OK\r\n"
        s.setblocking(False)
        cmd = b"*2\r\n$4\r\nECHO\r\n$1000\r\n" + b"x" * 1000 + b"\r\n"
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                sent += s.send(cmd * 64)
            except BlockingIOError:
                time.sleep(0.01)
        with daemon.client() as r:
            assert r.ping()  # the daemon still serves others
            line = next(c for c in r.client_list() if c["cmd"] == "echo")
            assert int(line["omem"]) < 64 * 1024 * 1024
