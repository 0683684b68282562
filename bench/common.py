"""Shared pieces of the ATLAS benchmarks: data, redis-server, subprocesses, tables.

Every benchmark runs HELIOS and a real redis-server side by side, on the same
data, in the same run, and reports the RATIO: this machine is small (2 cores)
and shared, so absolute times drift from run to run while ratios taken a
few seconds apart hold much better.

The data is deterministic: key i is ``key:%012d`` (16 bytes, the shape
redis-benchmark's ``-r`` keys have) and its value is 100 ASCII bytes cut from
a fixed pseudo-random pool, so both systems store exactly the same bytes and
the AOF of each holds them as plain text (HELIOS would fall back to base64
for bytes that are not UTF-8).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "HIDDEN", "ROOT", "PYTHON", "REDIS_BENCHMARK", "KEY_BYTES", "VALUE_BYTES", "key", "value", "pairs",
    "resp_set", "RedisServer", "PythonFloor", "PYTHON_FLOOR_SERVER", "wait_ping",
    "scratch_dir", "dir_bytes", "fill_helios", "snapshot_helios", "run_child",
    "child_result", "rss_bytes", "percentiles", "fmt_ms", "print_table", "make_parser", "parse_count",
    "emit_json", "quiet_helios_logs", "machine_note",
]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
REDIS_BENCHMARK = shutil.which("redis-benchmark") or "/usr/bin/redis-benchmark"

if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

# -- deterministic data ------------------------------------------------------------

KEY_BYTES = 16
VALUE_BYTES = 100
_POOL_SIZE = 8192
_POOL = bytes(random.Random(20261127).choices(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                                              k=_POOL_SIZE + VALUE_BYTES))


def key(i: int) -> bytes:
    return b"key:%012d" % i


def value(i: int, gen: int = 0) -> bytes:
    """Value of key i in generation `gen` (an overwrite uses gen 1, 2, ...)."""
    at = (i * 131 + gen * 4099) % _POOL_SIZE
    return _POOL[at:at + VALUE_BYTES]


def pairs(start: int, stop: int, gen: int = 0, step: int = 1) -> Iterator[tuple[bytes, bytes]]:
    for i in range(start, stop, step):
        yield key(i), value(i, gen)


def resp_set(batch: Iterable[tuple[bytes, bytes]]) -> bytes:
    """RESP-encoded SET commands, for `redis-cli --pipe`."""
    out = bytearray()
    for k, v in batch:
        out += b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v)
    return bytes(out)


# -- scratch space -----------------------------------------------------------------

@contextlib.contextmanager
def scratch_dir(label: str) -> Iterator[Path]:
    """A fresh directory under /tmp, removed afterwards whatever happens."""
    path = Path(tempfile.mkdtemp(prefix=f"helios-bench-{label}-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- redis-server ------------------------------------------------------------------

def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server on an unused loopback port, its files in `data_dir`.

    `config` items become command-line options (``appendonly="yes"`` becomes
    ``--appendonly yes``).  Automatic RDB saves and automatic AOF rewrites are
    off unless asked for, so nothing but what a benchmark does touches the
    disk, and an AOF holds the commands as they were sent.
    """

    def __init__(self, data_dir: Path, **config: str) -> None:
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = {"save": "", "appendonly": "no", "auto_aof_rewrite_percentage": "0", **config}
        self.logfile = self.dir / "redis.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self._log_mark = 0

    def start(self, *, wait: bool = True, timeout: float = 300.0) -> float:
        """Spawn the server; if `wait`, return seconds from spawn until loading is over."""
        for _attempt in range(5):
            self.port = unused_port()
            args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                    "--logfile", str(self.logfile), "--daemonize", "no"]
            for name, val in self.config.items():
                args += [f"--{name.replace('_', '-')}", str(val)]
            self._log_mark = self.logfile.stat().st_size if self.logfile.exists() else 0
            self.spawned_at = time.perf_counter()
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            try:
                return self.wait_loaded(timeout) if wait else 0.0
            except _PortTaken:
                self.proc.wait()
        raise RuntimeError("redis-server could not bind an unused port five times")

    def client(self, **kw: Any) -> redis.Redis:
        # No retries: redis-py's default backoff would hide (and slow down) a server still
        # starting or already gone.
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=600,
                           retry=Retry(NoBackoff(), 0), **kw)

    def wait_loaded(self, timeout: float = 300.0) -> float:
        """Poll `INFO persistence` until `loading:0`; seconds since spawn."""
        assert self.proc is not None
        deadline = time.perf_counter() + timeout
        c = self.client(socket_connect_timeout=1)
        try:
            while True:
                if self.proc.poll() is not None:
                    if "Address already in use" in self.log_since_start():
                        raise _PortTaken()
                    raise RuntimeError(f"redis-server exited ({self.proc.returncode}):\n"
                                       + self.log_since_start()[-2000:])
                try:
                    if c.info("persistence")["loading"] == 0:
                        return time.perf_counter() - self.spawned_at
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"redis-server still loading after {timeout}s")
                time.sleep(0.002)
        finally:
            c.close()

    def log_since_start(self) -> str:
        try:
            with open(self.logfile, "rb") as f:
                f.seek(self._log_mark)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def loaded_seconds(self) -> float | None:
        """Redis's own 'DB loaded from ...: X seconds' for this start (the whole load).

        With an AOF, redis 7 logs one line per AOF file and then one for the
        whole AOF ("append only file"); with an RDB alone, "disk".
        """
        text = self.log_since_start()
        whole = re.findall(r"DB loaded from (?:append only file|disk): ([0-9.]+) seconds", text)
        return float(whole[-1]) if whole else None

    def load_pairs(self, data: Iterable[tuple[bytes, bytes]], chunk: int = 100_000) -> None:
        """SET every pair through `redis-cli --pipe` (fast bulk load, same path as clients)."""
        proc = subprocess.Popen([REDIS_CLI, "-p", str(self.port), "--pipe"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdin is not None
        batch: list[tuple[bytes, bytes]] = []
        for p in data:
            batch.append(p)
            if len(batch) == chunk:
                proc.stdin.write(resp_set(batch))
                batch = []
        if batch:
            proc.stdin.write(resp_set(batch))
        proc.stdin.close()
        out = proc.stdout.read().decode() if proc.stdout else ""
        if proc.wait() != 0 or "errors: 0" not in out:
            raise RuntimeError(f"redis-cli --pipe failed: {out}")

    def wait_aof_rewrite(self, timeout: float = 300.0) -> None:
        c = self.client()
        deadline = time.perf_counter() + timeout
        while True:
            info = c.info("persistence")
            if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError("AOF rewrite did not finish")
            time.sleep(0.01)
        if info.get("aof_last_bgrewrite_status") != "ok":
            raise RuntimeError(f"AOF rewrite failed: {info}")
        c.close()

    def stop(self) -> None:
        """SHUTDOWN without an RDB save (an AOF is still flushed and fsynced)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:  # a raw SHUTDOWN: the server closes the connection instead of replying
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                    s.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n")
                    s.recv(100)
            except OSError:
                pass
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if exc[0] is not None:  # a failing benchmark: no need for a clean shutdown
                self.proc.kill()
                self.proc.wait()
            else:
                self.stop()
        self.proc = None


def wait_ping(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    """Until the server `proc` started answers PING on 127.0.0.1:port (NOAUTH counts: atlasd's TCP
    needs its password); an error if it exits first or does not answer within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer PING within {timeout}s")


# -- the python floor ----------------------------------------------------------------

# The least per request a Python server on asyncio/uvloop pays: a transport's read and write, one
# pass over the bytes, a dict.  No AUTH, persistence, command table, expiry or type checks.  It
# answers what the benchmarks send (SET GET HSET HGET LPUSH RPUSH LRANGE SADD PING; +OK to the
# rest), so a run shows how close any interpreted request path can come to redis-server on this
# machine, and atlasd's own share of the gap.
PYTHON_FLOOR_SERVER = r"""
import asyncio, sys
import uvloop

db = {}


def bulk(v):
    return b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v)


def run(a):
    name = a[0].upper()
    if name == b"SET":
        db[a[1]] = a[2]
        return b"+OK\r\n"
    if name == b"GET":
        return bulk(db.get(a[1]))
    if name == b"HSET":
        h = db.setdefault(a[1], {})
        n = len(h)
        for i in range(2, len(a) - 1, 2):
            h[a[i]] = a[i + 1]
        return b":%d\r\n" % (len(h) - n)
    if name == b"HGET":
        return bulk(db.get(a[1], {}).get(a[2]))
    if name in (b"LPUSH", b"RPUSH"):
        items = db.setdefault(a[1], [])
        if name == b"LPUSH":
            items[:0] = a[:1:-1]
        else:
            items.extend(a[2:])
        return b":%d\r\n" % len(items)
    if name == b"LRANGE":
        got = db.get(a[1], [])[int(a[2]):int(a[3]) + 1 or None]
        return b"*%d\r\n" % len(got) + b"".join(bulk(v) for v in got)
    if name == b"SADD":
        s = db.setdefault(a[1], set())
        n = len(s)
        s.update(a[2:])
        return b":%d\r\n" % (len(s) - n)
    if name == b"PING":
        return b"+PONG\r\n"
    return b"+OK\r\n"


class Resp(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        buf, out = self.buf + data, []
        while buf[:1] == b"*":
            end = buf.find(b"\r\n")
            if end < 0:
                break
            pos, args = end + 2, []
            for _ in range(int(buf[1:end])):
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                start = end + 2
                stop = start + int(buf[pos + 1:end])
                if len(buf) < stop + 2:
                    break
                args.append(buf[start:stop])
                pos = stop + 2
            else:
                buf = buf[pos:]
                out.append(run(args))
                continue
            break
        self.buf = buf
        if out:
            self.transport.write(b"".join(out))


async def main():
    server = await asyncio.get_running_loop().create_server(Resp, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()

uvloop.run(main())
"""


class PythonFloor:
    """PYTHON_FLOOR_SERVER in a fresh interpreter on an unused loopback port."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> PythonFloor:
        self.port = unused_port()
        self.proc = subprocess.Popen([PYTHON, "-c", PYTHON_FLOOR_SERVER, str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ping(self.port, self.proc, "the python floor", timeout)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _PortTaken(Exception):
    pass


# -- HELIOS data -------------------------------------------------------------------

def quiet_helios_logs() -> None:
    """Only warnings and errors from the engine: its info lines would garble the tables."""
    from helios_core.observability.logging import setup_logging
    setup_logging("warn")


def fill_helios(data_dir: Path, data: Iterable[tuple[bytes, bytes]], *, flush_every: int = 10_000) -> int:
    """SET every pair in an engine on `data_dir` (synchronously, appendfsync no: set-up only)."""
    from helios_core.atlas.engine import Engine
    from helios_core.config import AtlasConfig

    eng = Engine.open(data_dir, AtlasConfig(appendfsync="no", save=(), snapshot_on_aof_bytes=0))
    n = 0
    try:
        execute = eng.execute
        for k, v in data:
            execute([b"SET", k, v])
            n += 1
            if n % flush_every == 0:
                eng.flush_sync()
        eng.flush_sync()
    finally:
        eng.close()
    return n


def snapshot_helios(data_dir: Path) -> None:
    from helios_core.atlas.engine import Engine
    from helios_core.config import AtlasConfig

    eng = Engine.open(data_dir, AtlasConfig(appendfsync="no", save=(), snapshot_on_aof_bytes=0))
    try:
        eng.snapshot_sync()
    finally:
        eng.close()


# -- child processes ---------------------------------------------------------------

_RESULT = "BENCH-RESULT "


def run_child(script: Path, args: Sequence[str], timeout: float = 900.0) -> dict[str, Any]:
    """Run `python script args` (a fresh interpreter) and return the dict it reported."""
    proc = subprocess.run([PYTHON, str(script), *args], capture_output=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"})
    out = proc.stdout.decode(errors="replace")
    for line in reversed(out.splitlines()):
        if line.startswith(_RESULT):
            return dict(json.loads(line[len(_RESULT):]))
    raise RuntimeError(f"{script.name} {' '.join(args)} failed ({proc.returncode}):\n"
                       f"{out[-2000:]}\n{proc.stderr.decode(errors='replace')[-4000:]}")


def child_result(result: dict[str, Any]) -> None:
    """Report from a child process (read back by `run_child`)."""
    print(_RESULT + json.dumps(result), flush=True)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


# -- statistics and output ---------------------------------------------------------

def percentiles(samples: Sequence[float], ps: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles plus max and count (samples in any unit)."""
    s = sorted(samples)
    out: dict[str, float] = {"count": len(s)}
    if not s:
        return out
    for p in ps:
        rank = max(1, -(-len(s) * p // 100))  # ceil(len * p / 100)
        out[f"p{p:g}"] = s[int(rank) - 1]
    out["max"] = s[-1]
    return out


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.3f} s"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, r in enumerate(cells):
        line = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        print("  " + "  ".join(line))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


HIDDEN = argparse.SUPPRESS  # help text of the options a script passes to its own child processes


def parse_count(text: str) -> int:
    n = int(text.replace("_", ""))
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def make_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--keys", type=parse_count, default=1_000_000, metavar="N",
                   help="number of keys (default 1_000_000; use e.g. 100_000 for a quick run)")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    return p


def machine_note() -> dict[str, Any]:
    import platform
    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(),
            "python": platform.python_version(), "redis": out.split()[2] if out else "?"}


def emit_json(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2, sort_keys=True))
