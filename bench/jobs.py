"""Job queue throughput: HELIOS against Dramatiq and RQ, N no-op jobs, W worker processes, end to end.

Each system gets the same workload in the same run: its workers are started
and warmed up (a few jobs each), then one client enqueues N no-op jobs as
fast as that system's client API allows while the workers drain them; the
clock runs from the first enqueue until the last job has run (enqueue and
drain overlap, as they would in production).  A job "has run" when its
handler has appended its index to a per-process file (`bench/bench_noop.py`),
so completion is counted the same way, at the same cost, for every system.
Each round runs every system once (the order rotated); ratios are taken
within a round, then the median over rounds.  CPU time per job (server,
workers, client; from /proc) is shown too: it drifts less on a shared machine.

- HELIOS: `helios gateway` on a fresh data directory (appendfsync everysec,
  and always with --fsync everysec,always), W `helios worker --handler
  bench_noop:run` processes, enqueued through POST /api/v1/jobs/batch
  (100 jobs per request, one keep-alive connection).
- HELIOS on a store (--store redis,atlasd or a URL): the same, the gateway
  started with `--store URL` on a redis-server the bench starts (appendonly
  yes, appendfsync everysec: as persistent as Dramatiq's) or on `helios
  atlasd` (appendfsync everysec) over TCP; or on the empty store a URL names
  (its server's CPU is then not counted).  The store server's CPU counts as
  server CPU.
- Dramatiq: RedisBroker on a redis-server the bench starts (unused port,
  appendonly yes, appendfsync everysec: the persistence HELIOS has), W
  `dramatiq --processes 1 --threads T bench_noop` commands, enqueued with
  `broker.enqueue` (Dramatiq has no batch enqueue).
- RQ: the same redis-server setup, W `rq worker --worker-class
  rq.worker.SimpleWorker` processes (no fork per job), enqueued with
  `Queue.enqueue_many` in pipelines of 1,000.

Then the kill run (HELIOS only): N jobs queued, W workers, one SIGKILLed when
half the jobs have run; every job must end DONE and have run exactly once,
except jobs the killed worker held when it died (leased, or run but not yet
acked), which may have run twice.

    .venv/bin/python bench/jobs.py                 # N=20000, 2 workers, 3 rounds + kill run (~6 min)
    .venv/bin/python bench/jobs.py --quick         # N=2000, one round: a smoke run
    .venv/bin/python bench/jobs.py --n 50000 --workers 2 --fsync everysec,always --json
    .venv/bin/python bench/jobs.py --store redis,atlasd --systems helios,dramatiq --no-kill
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_noop import LINE  # noqa: E402
from bench.common import RedisServer, emit_json, machine_note, print_table, scratch_dir, unused_port  # noqa: E402

BIN = Path(sys.executable).parent
HELIOS, DRAMATIQ, RQ = str(BIN / "helios"), str(BIN / "dramatiq"), str(BIN / "rq")
QUEUE = "bench"
WARMUP_PER_WORKER = 4
ENQUEUE_BATCH = 100  # the jobs API's largest batch
# A redis-server as durable as HELIOS's default (an AOF fsynced every second): Dramatiq's broker and the
# redis store HELIOS runs on in --store redis.
PERSISTENT = {"appendonly": "yes", "appendfsync": "everysec"}


# -- processes and counting --------------------------------------------------------------

class Procs:
    """Child processes, each in its own process group so a kill reaches its children too."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def spawn(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as f:
            proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=BENCH)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def check(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                raise RuntimeError(f"{log.stem} exited with {proc.returncode}:\n"
                                   + log.read_text(errors="replace")[-3000:])

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(proc)
                proc.wait()
        for proc in self.procs:  # stragglers a supervisor forked
            self.kill(proc)


@contextlib.contextmanager
def processes() -> Iterator[Procs]:
    procs = Procs()
    try:
        yield procs
    finally:
        procs.stop_all()


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int], groups: list[int] | None = None) -> float:
    """User + system CPU of processes `pids` and of every live process in process groups `groups`."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            f = _stat(entry)
        except OSError:
            continue  # gone meanwhile
        if int(entry) in pids or int(f[2]) in (groups or ()):
            ticks += int(f[11]) + int(f[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by the server, the workers and this client between `start` and `stop`."""

    def __init__(self, server_pid: int, workers: list[subprocess.Popen[bytes]]) -> None:
        self.server = [server_pid]
        self.groups = [w.pid for w in workers]

    def _now(self) -> tuple[float, float, float]:
        t = os.times()
        return cpu_seconds(self.server), cpu_seconds([], self.groups), t.user + t.system

    def start(self) -> None:
        self.t0 = self._now()

    def stop(self) -> dict[str, float]:
        t1 = self._now()
        return {k: b - a for k, a, b in zip(("server_cpu_s", "workers_cpu_s", "client_cpu_s"), self.t0, t1,
                                             strict=True)}


def executed(out: Path) -> int:
    """Executions so far, from the handlers' file sizes."""
    return sum(f.stat().st_size for f in out.glob("exec-*.log")) // LINE


def executions(out: Path) -> dict[int, Counter[int]]:
    """pid -> Counter(job index -> executions in that process)."""
    result: dict[int, Counter[int]] = {}
    for f in out.glob("exec-*.log"):
        result[int(f.stem.split("-")[1])] = Counter(int(x) for x in f.read_bytes().split())
    return result


def wait_executed(out: Path, target: int, procs: Procs, timeout: float,
                  on_progress: Callable[[int], None] | None = None) -> float:
    """Poll until `target` executions are recorded; returns the time it happened (perf_counter)."""
    deadline = time.perf_counter() + timeout
    checked = time.perf_counter()
    while True:
        n = executed(out)
        now = time.perf_counter()
        if n >= target:
            return now
        if on_progress is not None:
            on_progress(n)
        if now > deadline:
            raise TimeoutError(f"{n} of {target} jobs ran within {timeout:.0f}s")
        if now - checked > 0.5:
            procs.check()
            checked = now
        time.sleep(0.002)


def worker_env(out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELIOS_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT)])
    env["BENCH_JOBS_OUT"] = str(out)
    env.update(extra)
    return env


def result(system: str, n: int, t0: float, t_enqueued: float, t_done: float, **extra: Any) -> dict[str, Any]:
    return {"system": system, "n": n, "seconds": t_done - t0, "jobs_per_s": n / (t_done - t0),
            "enqueue_seconds": t_enqueued - t0, "enqueue_per_s": n / (t_enqueued - t0), **extra}


# -- Dramatiq ----------------------------------------------------------------------------

def run_dramatiq(n: int, workers: int, threads: int, timeout: float) -> dict[str, Any]:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    with scratch_dir("jobs-dramatiq") as d, RedisServer(d / "redis", **PERSISTENT) as rs, processes() as procs:
        rs.start()
        url = f"redis://127.0.0.1:{rs.port}/0"
        out = d / "out"
        out.mkdir()
        env = worker_env(out, BENCH_DRAMATIQ_URL=url)
        for w in range(workers):
            # The module first: --path and --queues take any number of values.
            procs.spawn([DRAMATIQ, "bench_noop", "--processes", "1", "--threads", str(threads), "--path",
                         str(BENCH), "--queues", QUEUE], env, d / f"worker-{w}.log")
        broker = RedisBroker(url=url)

        def send(i: int) -> None:
            broker.enqueue(dramatiq.Message(queue_name=QUEUE, actor_name="noop", args=(i,), kwargs={}, options={}))

        warm = workers * WARMUP_PER_WORKER
        for k in range(warm):
            send(n + k)
        wait_executed(out, warm, procs, 60)
        cpu = CpuMeter(rs.proc.pid, procs.procs)  # type: ignore[union-attr]
        cpu.start()
        t0 = time.perf_counter()
        for i in range(n):
            send(i)
        t_enq = time.perf_counter()
        t_done = wait_executed(out, warm + n, procs, timeout)
        used = cpu.stop()
        broker.close()
        return result("Dramatiq", n, t0, t_enq, t_done, threads=threads, ran_twice=_ran_twice(out, n), **used)


# -- RQ ----------------------------------------------------------------------------------

def run_rq(n: int, workers: int, timeout: float) -> dict[str, Any]:
    from rq import Queue

    with scratch_dir("jobs-rq") as d, RedisServer(d / "redis") as rs, processes() as procs:
        rs.start()
        url = f"redis://127.0.0.1:{rs.port}/0"
        out = d / "out"
        out.mkdir()
        env = worker_env(out)
        for w in range(workers):
            # --quiet: RQ logs two INFO lines per job otherwise; no system in this bench logs per job.
            procs.spawn([RQ, "worker", "--worker-class", "rq.worker.SimpleWorker", "--url", url, "--path",
                         str(BENCH), "--quiet", QUEUE], env, d / f"worker-{w}.log")
        conn = rs.client()
        q = Queue(QUEUE, connection=conn)

        def send(indexes: range) -> None:
            for start in range(indexes.start, indexes.stop, 1000):
                with conn.pipeline() as pipe:
                    q.enqueue_many([Queue.prepare_data("bench_noop.rq_noop", args=(i,))
                                    for i in range(start, min(start + 1000, indexes.stop))], pipeline=pipe)
                    pipe.execute()

        warm = workers * WARMUP_PER_WORKER
        send(range(n, n + warm))
        wait_executed(out, warm, procs, 60)
        cpu = CpuMeter(rs.proc.pid, procs.procs)  # type: ignore[union-attr]
        cpu.start()
        t0 = time.perf_counter()
        send(range(n))
        t_enq = time.perf_counter()
        t_done = wait_executed(out, warm + n, procs, timeout)
        used = cpu.stop()
        conn.close()
        return result("RQ", n, t0, t_enq, t_done, ran_twice=_ran_twice(out, n), **used)


def _ran_twice(out: Path, n: int) -> int:
    total: Counter[int] = Counter()
    for c in executions(out).values():
        total.update(c)
    return sum(1 for i in range(n) if total[i] > 1)


# -- HELIOS ------------------------------------------------------------------------------

class Gateway:
    """`helios gateway` on a fresh data directory (or an empty store: `store_url`) and an unused port,
    with an admin token."""

    def __init__(self, procs: Procs, data: Path, appendfsync: str, store_url: str | None = None) -> None:
        self.port = unused_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        # Defaults otherwise, as an operator runs it: rate limits on, one access-log line per request.
        env.update({"HELIOS_ATLAS__APPENDFSYNC": appendfsync})
        log = data.parent / "gateway.log"
        if store_url is None:
            data.mkdir()
            where = ["--data", str(data)]
        else:
            where = ["--store", store_url]
            # No data directory to keep a generated signing key in: the gateways sharing a store share one.
            env["HELIOS_AUTH__JWT_KEYS"] = "k1=" + secrets.token_urlsafe(48)
        self.proc = procs.spawn([HELIOS, "gateway", *where, "--port", str(self.port)], env, log)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1).read()
                break
            except OSError:
                procs.check()
                if time.monotonic() > deadline:
                    raise RuntimeError("gateway did not start") from None
                time.sleep(0.05)
        password = (data / "initial_admin_password").read_text().strip() if store_url is None else \
            _printed_password(log)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.token = ""
        self.token = self.call("POST", "/api/v1/auth/login", {"username": "admin", "password": password})[
            "access_token"]
        # The client and the workers use an API token of a user with the roles they would have in
        # production: `user` (jobs:enqueue) and `worker` (jobs:work, and the worker rate limit).
        self.call("POST", "/admin/users", {"username": "bench", "roles": ["user", "worker"]})
        self.token = self.call("POST", "/admin/users/bench/tokens", {"ttl_seconds": 86400})["token"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                          headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
        return json.loads(raw) if raw else None

    def enqueue(self, indexes: range) -> None:
        for start in range(indexes.start, indexes.stop, ENQUEUE_BATCH):
            jobs = [{"queue": QUEUE, "payload": {"i": i}} for i in range(start, min(start + ENQUEUE_BATCH,
                                                                                     indexes.stop))]
            self.call("POST", "/api/v1/jobs/batch", {"jobs": jobs})

    def stats(self) -> dict[str, Any]:
        return next(s for s in self.call("GET", f"/api/v1/jobs/stats?queue={QUEUE}")["queues"])

    def all_jobs(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.call("GET", f"/api/v1/jobs?queue={QUEUE}&limit=1000"
                             + (f"&cursor={urllib.parse.quote(cursor)}" if cursor else ""))
            out += page["jobs"]
            cursor = page.get("cursor")
            if not cursor:
                return out


def _printed_password(log: Path) -> str:
    """The admin password a gateway on an empty remote store prints once (it is kept nowhere else)."""
    lines = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if 'created the user "admin"' in line and i + 1 < len(lines):
            return lines[i + 1].strip()
    raise RuntimeError(f"the gateway printed no admin password (is the store at --store not empty?): {log}")


@contextlib.contextmanager
def store_server(kind: str, d: Path, procs: Procs) -> Iterator[tuple[str, int | None]]:
    """A fresh store for a gateway: its URL and its server's pid (None: a URL given, not ours)."""
    if kind == "redis":
        with RedisServer(d / "redis", **PERSISTENT) as rs:
            rs.start()
            assert rs.proc is not None
            yield f"redis://127.0.0.1:{rs.port}/0", rs.proc.pid
        return
    if kind == "atlasd":
        port = unused_port()
        data = d / "atlasd"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        proc = procs.spawn([HELIOS, "atlasd", "--data", str(data), "--port", str(port), "--appendfsync",
                            "everysec"], env, d / "atlasd.log")
        deadline = time.monotonic() + 60
        while not (data / "atlasd.password").exists() or not _listening(port):
            procs.check()
            if time.monotonic() > deadline:
                raise RuntimeError("atlasd did not start")
            time.sleep(0.05)
        # (a loopback atlas:// URL finds this atlasd's password in DATA/atlasd.password)
        yield f"atlas://127.0.0.1:{port}", proc.pid
        return
    yield kind, None


def _listening(port: int) -> bool:
    import socket
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def store_label(kind: str) -> str:
    return f"HELIOS ({kind} store)" if kind in ("redis", "atlasd") else "HELIOS (store URL)"


def run_helios_store(n: int, workers: int, concurrency: int, kind: str, timeout: float,
                     profile: Path | None = None) -> dict[str, Any]:
    """HELIOS with its gateway on a store server (`kind`: redis, atlasd, or a URL of an empty store)."""
    with scratch_dir("jobs-helios-store") as d, processes() as procs, store_server(kind, d, procs) as (url, pid):
        out = d / "out"
        out.mkdir()
        gw = Gateway(procs, d / "data", "everysec", store_url=url)
        ws = spawn_helios_workers(procs, gw, d, out, workers, concurrency)
        warm = workers * WARMUP_PER_WORKER
        gw.enqueue(range(n, n + warm))
        wait_executed(out, warm, procs, 60)
        cpu = CpuMeter(gw.proc.pid, ws)
        if pid is not None:
            cpu.server.append(pid)
        targets = [("gateway", gw.proc.pid), ("worker", ws[0].pid)]
        with profiling(profile, targets, kind if pid is not None else "url") as prof:
            cpu.start()
            t0 = time.perf_counter()
            gw.enqueue(range(n))
            t_enq = time.perf_counter()
            t_done = wait_executed(out, warm + n, procs, timeout)
            used = cpu.stop()
        return result(store_label(kind), n, t0, t_enq, t_done, store=kind if pid is not None else "url",
                      concurrency=concurrency, ran_twice=_ran_twice(out, n), profile=prof, **used)


PY_SPY = str(BIN / "py-spy")


@contextlib.contextmanager
def profiling(out: Path | None, targets: list[tuple[str, int]], label: str) -> Iterator[dict[str, Any] | None]:
    """py-spy (sampling, in its own process) on each target for the duration of the block.

    Yields a dict that is filled, after the block, with each target's flat profile (own time by
    function, and inclusive time of the functions that most of it passes through).
    """
    if out is None:
        yield None
        return
    out.mkdir(parents=True, exist_ok=True)
    spies = []
    for name, pid in targets:
        raw = out / f"{name}-{label}.txt"
        spies.append((name, raw, subprocess.Popen(
            [PY_SPY, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw), "--rate", "250",
             "--nonblocking", "--function"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    summary: dict[str, Any] = {}
    time.sleep(1)  # py-spy attaches
    try:
        yield summary
    finally:
        for _, _, spy in spies:
            spy.send_signal(signal.SIGINT)
        for name, raw, spy in spies:
            spy.wait(60)
            if raw.exists():
                summary[name] = flat_profile(raw)


def flat_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks: the share of samples per function, own and inclusive."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    pct = {f: round(100 * c / total, 1) for f, c in own.most_common(top)}
    return {"samples": total, "own_pct": pct,
            "inclusive_pct": {f: round(100 * c / total, 1) for f, c in incl.most_common(top * 3)}}


def spawn_helios_workers(procs: Procs, gw: Gateway, d: Path, out: Path, workers: int, concurrency: int,
                         visibility: int = 30) -> list[subprocess.Popen[bytes]]:
    env = worker_env(out, HELIOS_URL=gw.base, HELIOS_TOKEN=gw.token, HELIOS_LOG__LEVEL="warn")
    return [procs.spawn([HELIOS, "worker", "--queue", QUEUE, "--handler", "bench_noop:run",
                         "--concurrency", str(concurrency), "--visibility", f"{visibility}s"], env,
                         d / f"worker-{w}.log")
            for w in range(workers)]


def run_helios(n: int, workers: int, concurrency: int, appendfsync: str, timeout: float,
               profile: Path | None = None) -> dict[str, Any]:
    with scratch_dir(f"jobs-helios-{appendfsync}") as d, processes() as procs:
        out = d / "out"
        out.mkdir()
        gw = Gateway(procs, d / "data", appendfsync)
        ws = spawn_helios_workers(procs, gw, d, out, workers, concurrency)
        warm = workers * WARMUP_PER_WORKER
        gw.enqueue(range(n, n + warm))
        wait_executed(out, warm, procs, 60)
        cpu = CpuMeter(gw.proc.pid, ws)
        with profiling(profile, [("gateway", gw.proc.pid), ("worker", ws[0].pid)], appendfsync) as prof:
            cpu.start()
            t0 = time.perf_counter()
            gw.enqueue(range(n))
            t_enq = time.perf_counter()
            t_done = wait_executed(out, warm + n, procs, timeout)
            used = cpu.stop()
        return result(f"HELIOS ({appendfsync})", n, t0, t_enq, t_done, appendfsync=appendfsync,
                      concurrency=concurrency, ran_twice=_ran_twice(out, n), profile=prof, **used)


def kill_run(n: int, workers: int, concurrency: int, timeout: float, visibility_timeout: int) -> dict[str, Any]:
    """N jobs queued, then W workers; SIGKILL the first once half the jobs have run; check every job ran to DONE.

    The jobs are all enqueued before the workers start, so the queue is never empty during the
    drain and the killed worker dies holding jobs (leased, or run and not yet acked) rather than
    waiting in a long poll.
    """
    with scratch_dir("jobs-helios-kill") as d, processes() as procs:
        out = d / "out"
        out.mkdir()
        gw = Gateway(procs, d / "data", "everysec")
        gw.enqueue(range(n))
        t0 = time.perf_counter()
        victim = spawn_helios_workers(procs, gw, d, out, workers, concurrency, visibility_timeout)[0]
        killed_at: list[int] = []

        def maybe_kill(done: int) -> None:
            if not killed_at and done >= n // 2:
                procs.kill(victim)
                killed_at.append(done)

        # Jobs the victim held come back once their lease has run out: `visibility_timeout` more.
        wait_executed(out, n, procs, timeout + visibility_timeout, on_progress=maybe_kill)
        if not killed_at:  # it all ran before the poll saw the half: kill now (nothing is in flight)
            procs.kill(victim)
            killed_at.append(executed(out))
        victim.wait()
        deadline = time.monotonic() + visibility_timeout * 3 + 30
        while True:  # every job DONE (having run is not enough: its ack may still be on its way)
            st = gw.stats()
            if st["done"] >= n and not st["pending"] and not st["in_progress"] and not st["delayed"]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"jobs not all DONE: {st}")
            time.sleep(0.2)
        t_done = time.perf_counter()
        return verify_kill(n, gw.all_jobs(), executions(out), victim.pid, killed_at[0], t_done - t0, st)


def verify_kill(n: int, jobs: list[dict[str, Any]], runs: dict[int, Counter[int]], victim_pid: int,
                killed_at: int, seconds: float, stats: dict[str, Any]) -> dict[str, Any]:
    """Every job DONE and run at least once; a job that ran twice must have been on the killed worker when
    it died: one of its runs there, and delivered a second time (attempts 2), never a third run."""
    total: Counter[int] = Counter()
    for c in runs.values():
        total.update(c)
    by_victim = runs.get(victim_pid, Counter())
    attempts = {j["payload"]["i"]: j["attempts"] for j in jobs}
    states = Counter(j["state"] for j in jobs)
    never = [i for i in range(n) if total[i] == 0]
    twice = [i for i in range(n) if total[i] > 1]
    bad_twice = [i for i in twice if by_victim[i] != 1 or total[i] != 2 or attempts.get(i, 0) < 2]
    redelivered = [i for i, a in attempts.items() if a > 1]
    ok = len(jobs) == n and states == Counter({"DONE": n}) and not never and not bad_twice
    return {"n": n, "killed_after": killed_at, "seconds": seconds, "jobs_done": states.get("DONE", 0),
            "states": dict(states), "never_ran": len(never), "ran_twice": len(twice),
            "ran_twice_not_explained": len(bad_twice), "redelivered": len(redelivered),
            "redelivered_unrun_on_victim": sum(1 for i in redelivered if by_victim[i] == 0),
            "victim_executions": sum(by_victim.values()), "ok": ok, "final_stats": stats}


# -- main --------------------------------------------------------------------------------

def cpu_us_per_job(r: dict[str, Any]) -> float:
    return float((r["server_cpu_s"] + r["workers_cpu_s"] + r["client_cpu_s"]) / r["n"] * 1e6)


def summarize(res: dict[str, Any], args: argparse.Namespace, n: int) -> None:
    names = list(dict.fromkeys(r["system"] for r in res["runs"]))
    rows = []
    for name in names:
        runs = [r for r in res["runs"] if r["system"] == name]
        rate = [r["jobs_per_s"] for r in runs]
        rows.append([name, f"{median(rate):,.0f}", f"{min(rate):,.0f}-{max(rate):,.0f}",
                     f"{median(r['enqueue_per_s'] for r in runs):,.0f}",
                     f"{median(r['server_cpu_s'] for r in runs) * 1e6 / n:.0f}",
                     f"{median(r['workers_cpu_s'] for r in runs) * 1e6 / n:.0f}",
                     f"{median(r['client_cpu_s'] for r in runs) * 1e6 / n:.0f}",
                     f"{median(cpu_us_per_job(r) for r in runs):.0f}", str(max(r["ran_twice"] for r in runs))])
    print_table(f"{n:,} no-op jobs, {args.workers} worker processes each, enqueue start -> last job done, median of "
                f"{args.rounds} round(s) (Dramatiq --threads {args.threads}, HELIOS --concurrency "
                f"{args.concurrency}); CPU in us per job",
                ["system", "jobs/s", "range", "enqueued/s", "server CPU", "workers CPU", "client CPU", "total CPU",
                 "ran twice"], rows)
    for r in res["runs"]:
        for proc, prof in (r.get("profile") or {}).items():
            print_table(f"{r['system']}: {proc} profile (py-spy, {prof['samples']} samples), own time",
                        ["function", "%"], list(prof["own_pct"].items()))
    # The ratio is taken within each round (runs seconds apart see the same machine), then the median.
    ratios = []
    for name in names:
        if not name.startswith("HELIOS"):
            continue
        # Issue 14: on a redis store, HELIOS's jobs at 1.5x Dramatiq on the same (persistent) redis-server.
        for peer, goal in (("Dramatiq", 1.5 if "store" in name else 1.0), ("RQ", 10.0)):
            per_round = [a["jobs_per_s"] / b["jobs_per_s"] for rnd in range(args.rounds)
                         for a in res["runs"] if a["system"] == name and a["round"] == rnd
                         for b in res["runs"] if b["system"] == peer and b["round"] == rnd]
            if per_round:
                ratio = median(per_round)
                ratios.append({"pair": f"{name} / {peer}", "ratio": ratio, "per_round": per_round, "goal": goal,
                               "met": ratio >= goal})
    if ratios:
        print_table("Ratios of jobs/s (median of the per-round ratios)", ["", "ratio", "per round", "goal", ""],
                    [[r["pair"], f"{r['ratio']:.2f}x", " ".join(f"{x:.2f}" for x in r["per_round"]),
                      f">= {r['goal']:g}x", "met" if r["met"] else "NOT met"] for r in ratios])
        res["ratios"] = ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000, help="jobs per system (default 20000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes per system (default 2)")
    p.add_argument("--quick", action="store_true", help="a smoke run: N=2000, one round")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds, each running every system once, the order rotated (default 3)")
    p.add_argument("--concurrency", type=int, default=64,
                   help="HELIOS: jobs a worker runs at once, its --concurrency (default 64; a lease asks for "
                        "as many jobs as there are free slots)")
    p.add_argument("--threads", type=int, default=16,
                   help="Dramatiq: threads per worker process (default 16; it prefetches 2 messages a thread)")
    p.add_argument("--fsync", default="everysec", help="HELIOS appendfsync policies to run, comma-separated "
                   "(default everysec; e.g. everysec,always)")
    p.add_argument("--systems", default="helios,dramatiq,rq", help="which systems (default all three)")
    p.add_argument("--store", default="", metavar="KINDS",
                   help="also run HELIOS with its gateway on a store, comma-separated: redis (a redis-server "
                        "started here, appendonly everysec), atlasd (helios atlasd, appendfsync everysec), or the "
                        "URL of an empty store (e.g. --store redis,atlasd)")
    p.add_argument("--no-kill", action="store_true", help="skip the kill run")
    p.add_argument("--visibility-timeout", type=int, default=5,
                   help="kill run: lease length in seconds (the killed worker's jobs come back after it)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="HELIOS, first round: py-spy the gateway and one worker, raw stacks into DIR, summaries "
                        "printed")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = p.parse_args()
    n = args.n
    if args.quick:
        n, args.rounds = 2000, 1
    systems = args.systems.split(",")
    timeout = max(120.0, n / 100)
    res: dict[str, Any] = {"machine": machine_note(), "n": n, "workers": args.workers, "rounds": args.rounds,
                           "runs": []}
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if "helios" in systems:
        for policy in args.fsync.split(","):
            plan.append((policy, functools.partial(run_helios, n, args.workers, args.concurrency, policy, timeout)))
    for kind in filter(None, args.store.split(",")):
        plan.append((f"store:{kind}", functools.partial(run_helios_store, n, args.workers, args.concurrency, kind,
                                                        timeout)))
    if "dramatiq" in systems:
        plan.append(("dramatiq", functools.partial(run_dramatiq, n, args.workers, args.threads, timeout)))
    if "rq" in systems:
        plan.append(("rq", functools.partial(run_rq, n, args.workers, timeout)))
    for rnd in range(args.rounds):
        order = plan[rnd % len(plan):] + plan[:rnd % len(plan)]
        for what, run in order:
            kw = {"profile": args.profile} if rnd == 0 and what not in ("dramatiq", "rq") else {}
            r = run(**kw)
            r["round"] = rnd
            print(f"round {rnd + 1}: {r['system']} {r['jobs_per_s']:,.0f} jobs/s", file=sys.stderr, flush=True)
            res["runs"].append(r)
    summarize(res, args, n)
    if "helios" in systems and not args.no_kill:
        k = res["kill"] = kill_run(n, args.workers, args.concurrency, timeout, args.visibility_timeout)
        print_table(f"Kill run: {args.workers} HELIOS workers, one SIGKILLed after {k['killed_after']:,} of "
                    f"{n:,} jobs had run", ["check", "result"], [
                        ["jobs DONE", f"{k['jobs_done']:,} of {n:,}"],
                        ["jobs that never ran", str(k["never_ran"])],
                        ["jobs delivered twice (the killed worker held them)", str(k["redelivered"])],
                        ["... of which it had run (its ack was not sent)", str(k["ran_twice"])],
                        ["... of which it had not started", str(k["redelivered_unrun_on_victim"])],
                        ["jobs that ran twice otherwise (must be 0)", str(k["ran_twice_not_explained"])],
                        ["time to all DONE", f"{k['seconds']:.1f} s (lease {args.visibility_timeout} s)"],
                        ["verdict", "PASS" if k["ok"] else "FAIL"]])
    if args.json:
        emit_json(res)
    if "kill" in res and not res["kill"]["ok"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
