"""atlasd's data types against redis-server: memory per element and unpipelined ops/s (issue 15).

Both servers are real processes on unused loopback ports, in the same run:

  atlasd        `helios atlasd --appendfsync everysec`, automatic snapshots off
  redis-server  `appendonly yes`, `appendfsync everysec`, RDB saves and AOF rewrites off

Memory: for each of hashes, lists and sets, a fresh pair of servers is filled
with --elements elements (16-byte fields/members, 16-byte values), --per-key
of them in each key, by the same pipelined HSET/RPUSH/SADD batches.  Two
shapes by default: 16 per key (Redis keeps these as a listpack/intset-free
listpack, its compact encoding) and 1000 per key (hashtable / quicklist).
atlasd: RSS growth of its process (VmRSS, allocator overhead included), plus
its INFO used_memory growth when it reports one; redis-server: used_memory
growth (what its allocator handed out) and RSS growth.  The ratio is atlasd
RSS / redis used_memory, as in bench/memory.py.  Goal: <= 2x per element.

Ops/s: `redis-benchmark -c 50 -n --requests` without pipelining, one custom
command at a time: HSET, LPUSH, SADD (-r 100000: mostly new keys, so each
creates a small hash, list or set), EVALSHA of a one-line INCR script, and
reads of small collections filled beforehand on both servers: HGET of one of
16 fields in one of 16 hashes (listpack) and LRANGE 0 15 of one of 16 lists
of 16 items (-r 16).  atlasd and redis-server alternate (which goes first
alternates by round) for --rounds rounds; each cell is the median, the ratio
the median of per-round ratios.  Goal: >= 0.8x redis-server.  The python floor
(common.PythonFloor: a bare RESP Protocol on uvloop, no AUTH, persistence or
command table) runs beside them for every command but EVALSHA (it has no Lua),
unless --no-floor: how close any interpreted request path can come here.  Each server's CPU time per request is
shown too (median over rounds; from /proc, threads included): on a shared machine ops/s
moves with everyone else's load, the server's own cost much less.

The machine is small (2 cores, shared): redis-benchmark takes one core, the
server the other.  Read the ratios, not the absolute numbers.

    .venv/bin/python bench/atlasd_types.py [--elements 100000] [--requests 50000] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from common import (  # noqa: E402
    PYTHON,
    REDIS_BENCHMARK,
    ROOT,
    PythonFloor,
    RedisServer,
    emit_json,
    machine_note,
    parse_count,
    print_table,
    rss_bytes,
    scratch_dir,
    unused_port,
)

__all__ = ["main"]

HELIOS = str(Path(PYTHON).with_name("helios"))
TYPES = ("hash", "list", "set")
SCRIPT = "return redis.call('INCR', KEYS[1])"


class Atlasd:
    """`helios atlasd` as an operator starts it (a password on TCP, automatic snapshots off)."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.port = 0
        self.password = secrets.token_hex(24)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Atlasd:
        self.port = unused_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        env.update(HELIOS_ATLAS__SAVE="", HELIOS_ATLAS__SNAPSHOT_ON_AOF_BYTES="0",
                   HELIOS_ATLASD__REQUIREPASS=self.password)
        self.log = open(self.dir.parent / f"atlasd-{self.dir.name}.log", "ab")
        self.proc = subprocess.Popen([HELIOS, "--log-level", "warn", "atlasd", "--data", str(self.dir),
                                      "--port", str(self.port), "--appendfsync", "everysec"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"atlasd exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with self.client() as c:
                    if c.ping():
                        return self
            except (redis.ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError("atlasd did not answer PING within 60 s")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=600)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextmanager
def servers(label: str) -> Iterator[tuple[Atlasd, RedisServer]]:
    with scratch_dir(f"types-{label}") as tmp:
        a = Atlasd(tmp / "atlasd")
        r = RedisServer(tmp / "redis", appendonly="yes", appendfsync="everysec")
        try:
            a.start()
            r.start()
            yield a, r
        finally:
            a.stop()
            r.stop()


# -- memory ------------------------------------------------------------------------

def _fill(client: redis.Redis, kind: str, elements: int, per_key: int, batch: int = 1000) -> None:
    """The same commands for both servers: `batch` elements per pipeline round trip."""
    pipe = client.pipeline(transaction=False)
    queued = 0
    for i in range(elements):
        k, member = f"{kind}:{i // per_key:08d}", f"m:{i:014d}"
        if kind == "hash":
            pipe.hset(k, member, f"v:{i:014d}")
        elif kind == "list":
            pipe.rpush(k, member)
        else:
            pipe.sadd(k, member)
        queued += 1
        if queued == batch:
            pipe.execute()
            queued = 0
    if queued:
        pipe.execute()


def _used_memory(client: redis.Redis) -> int | None:
    info = client.info("memory")
    value = info.get("used_memory")
    return int(value) if value is not None else None


def _settle() -> None:
    # atlasd frees and the allocator returns pages lazily: let a busy machine catch up before reading RSS.
    time.sleep(0.5)


def measure_memory(kind: str, elements: int, per_key: int) -> dict[str, Any]:
    with servers(f"{kind}-{per_key}") as (a, r):
        assert a.proc is not None and r.proc is not None
        out: dict[str, Any] = {"type": kind, "per_key": per_key, "elements": elements}
        for name, client, pid in (("atlasd", a.client(), a.proc.pid), ("redis", r.client(), r.proc.pid)):
            with client:
                _settle()
                rss0, used0 = rss_bytes(pid), _used_memory(client)
                _fill(client, kind, elements, per_key)
                _settle()
                rss1, used1 = rss_bytes(pid), _used_memory(client)
                got = client.dbsize()
            if got != -(-elements // per_key):
                raise RuntimeError(f"{name}: {got} keys after filling {kind}")
            out[f"{name}_rss_per_el"] = (rss1 - rss0) / elements
            out[f"{name}_used_per_el"] = None if used0 is None or used1 is None else (used1 - used0) / elements
        out["ratio"] = out["atlasd_rss_per_el"] / out["redis_used_per_el"]
        return out


# -- ops/s -------------------------------------------------------------------------

def _benchmark(port: int, password: str | None, requests: int, command: list[str], rand: int = 100_000) -> float:
    args = [REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-n", str(requests),
            "-r", str(rand), "--csv"]
    if password:
        args += ["-a", password]
    proc = subprocess.run([*args, *command], capture_output=True, text=True, timeout=600)
    rows = [line for line in proc.stdout.splitlines() if line.startswith('"') and not line.startswith('"test"')]
    if proc.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark {' '.join(command)} failed: {proc.stderr.strip()[-500:]}")
    return float(rows[-1].split('","')[1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# The small collections HGET and LRANGE read: 16 of each, 16 fields/items, the names redis-benchmark's
# __rand_int__ (12 digits) gives with -r 16.
READ_KEYS = 16


def _fill_reads(client: redis.Redis) -> None:
    pipe = client.pipeline(transaction=False)
    for k in range(READ_KEYS):
        pipe.hset(f"hb:{k:012d}", mapping={f"f:{i:012d}": f"v:{i:014d}" for i in range(16)})
        pipe.rpush(f"lb:{k:012d}", *[f"i:{i:014d}" for i in range(16)])
    pipe.execute()


def _fill_reads_raw(port: int) -> None:
    """_fill_reads over a bare socket, for the python floor (it has no HELLO for redis-py)."""
    def resp(*args: str) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args)

    commands = []
    for k in range(READ_KEYS):
        commands.append(resp("HSET", f"hb:{k:012d}", *[x for i in range(16) for x in (f"f:{i:012d}", f"v:{i:014d}")]))
        commands.append(resp("RPUSH", f"lb:{k:012d}", *[f"i:{i:014d}" for i in range(16)]))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(commands))
        got = b""
        while got.count(b"\r\n") < len(commands):
            got += s.recv(65536)


def measure_ops(requests: int, rounds: int, floor: bool = True) -> list[dict[str, Any]]:
    # name -> (the command, given the script's SHA1; redis-benchmark's -r)
    commands: dict[str, tuple[Callable[[str], list[str]], int]] = {
        "HSET": (lambda sha: ["HSET", "h:__rand_int__", "f:__rand_int__", "v"], 100_000),
        "LPUSH": (lambda sha: ["LPUSH", "l:__rand_int__", "v"], 100_000),
        "SADD": (lambda sha: ["SADD", "s:__rand_int__", "m:__rand_int__"], 100_000),
        "EVALSHA": (lambda sha: ["EVALSHA", sha, "1", "n:__rand_int__"], 100_000),
        "HGET": (lambda sha: ["HGET", "hb:__rand_int__", "f:__rand_int__"], READ_KEYS),
        "LRANGE": (lambda sha: ["LRANGE", "lb:__rand_int__", "0", "15"], READ_KEYS),
    }
    # Besides ops/s, each server's CPU time per request: on a shared machine the client and other
    # load take turns with the server, which moves ops/s far more than the server's own cost.
    samples: dict[str, dict[str, list[float]]] = {
        c: {"atlasd": [], "redis": [], "ratio": [], "atlasd_cpu": [], "redis_cpu": [], "floor": [],
            "floor_cpu": [], "floor_ratio": []} for c in commands}
    with servers("ops") as (a, r), _floor(floor) as f:
        shas = set()
        for c in (a.client(), r.client()):
            with c:
                shas.add(c.script_load(SCRIPT))
                _fill_reads(c)
        (sha,) = shas  # the SHA1 of the script text: the same on both, or one of them is wrong
        assert a.proc is not None and r.proc is not None
        targets = [("atlasd", a.port, a.password, a.proc.pid), ("redis", r.port, None, r.proc.pid)]
        if f is not None:
            assert f.proc is not None
            _fill_reads_raw(f.port)
            targets.insert(1, ("floor", f.port, None, f.proc.pid))
        for rnd in range(rounds):
            for name, (make, rand) in commands.items():
                got: dict[str, float] = {}
                for who, port, pw, pid in (targets if rnd % 2 == 0 else targets[::-1]):
                    if who == "floor" and name == "EVALSHA":
                        continue
                    cpu0 = _cpu_seconds(pid)
                    got[who] = _benchmark(port, pw, requests, make(sha), rand)
                    samples[name][f"{who}_cpu"].append((_cpu_seconds(pid) - cpu0) / requests * 1e6)
                    samples[name][who].append(got[who])
                samples[name]["ratio"].append(got["atlasd"] / got["redis"])
                if "floor" in got:
                    samples[name]["floor_ratio"].append(got["floor"] / got["redis"])
    return [{"command": c, "atlasd_ops": statistics.median(s["atlasd"]), "redis_ops": statistics.median(s["redis"]),
             "ratio": statistics.median(s["ratio"]), "rounds": rounds,
             "atlasd_cpu_us": statistics.median(s["atlasd_cpu"]), "redis_cpu_us": statistics.median(s["redis_cpu"]),
             **({"floor_ops": statistics.median(s["floor"]), "floor_ratio": statistics.median(s["floor_ratio"]),
                 "floor_cpu_us": statistics.median(s["floor_cpu"])} if s["floor"] else {})}
            for c, s in samples.items()]


@contextmanager
def _floor(wanted: bool) -> Iterator[PythonFloor | None]:
    f = PythonFloor().start() if wanted else None
    try:
        yield f
    finally:
        if f is not None:
            f.stop()


# -- main --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--elements", type=parse_count, default=100_000, help="elements per type and shape")
    p.add_argument("--per-key", type=parse_count, action="append", dest="per_key",
                   help="elements per key (repeatable; default 16 and 1000)")
    p.add_argument("--requests", type=parse_count, default=50_000, help="requests per redis-benchmark run")
    p.add_argument("--rounds", type=parse_count, default=3)
    p.add_argument("--only", choices=("memory", "ops"), help="run only the memory or only the ops/s part")
    p.add_argument("--no-floor", action="store_true", help="skip the python floor in the ops/s part")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = p.parse_args(argv)
    shapes = args.per_key or [16, 1000]

    mem = [] if args.only == "ops" else [measure_memory(kind, args.elements, per_key)
                                         for per_key in shapes for kind in TYPES]

    def b(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    if mem:
        print_table(f"Memory per element ({args.elements} elements; bytes; goal: ratio <= 2x)",
                    ["type", "per key", "atlasd RSS", "atlasd used", "redis used", "redis RSS", "ratio"],
                    [[m["type"], m["per_key"], b(m["atlasd_rss_per_el"]), b(m["atlasd_used_per_el"]),
                      b(m["redis_used_per_el"]), b(m["redis_rss_per_el"]), f"{m['ratio']:.2f}x"] for m in mem])
    ops = [] if args.only == "memory" else measure_ops(args.requests, args.rounds, not args.no_floor)
    if ops:
        def fl(o: dict[str, Any], what: str) -> str:
            return "-" if "floor_ops" not in o else what.format(**o)

        print_table(f"Unpipelined ops/s (-c 50, {args.requests} requests, median of {args.rounds}; goal: >= 0.8x)",
                    ["command", "atlasd", "redis-server", "ratio", "server CPU us/request (atlasd / redis)",
                     "python floor", "floor ratio", "floor CPU us"],
                    [[o["command"], f"{o['atlasd_ops']:.0f}", f"{o['redis_ops']:.0f}", f"{o['ratio']:.2f}x",
                      f"{o['atlasd_cpu_us']:.1f} / {o['redis_cpu_us']:.1f}", fl(o, "{floor_ops:.0f}"),
                      fl(o, "{floor_ratio:.2f}x"), fl(o, "{floor_cpu_us:.1f}")] for o in ops])
    if args.json:
        emit_json({"machine": machine_note(), "memory": mem, "ops": ops,
                   "host": socket.gethostname()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
