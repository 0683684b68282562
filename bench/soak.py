"""Soak: every HELIOS daemon under steady mixed load for minutes; does memory, fds or latency drift?

One run starts, on unused ports in a scratch directory:

- ``helios atlasd`` (appendfsync everysec), driven with SET/GET over RESP;
- ``helios gateway --data`` (its embedded store), driven with KV GET then PUT
  with If-Match (the ETag just read) and job enqueues (each with a dedup id);
- ``helios worker --handler bench_noop:run`` draining those jobs;
- ``helios proxy`` in front of one backend (tests/proxy_backend.py), driven
  with GETs.

Each kind of request has its own client thread on one keep-alive connection,
paced at ``--rate`` requests a second (a soak measures drift under a steady
load, not peak throughput; on a shared 2-core machine an unpaced load would
measure the neighbours).  Keys cycle over ``--keys`` names, so a daemon that
keeps no garbage holds a constant data set after the first pass.

Every minute it samples each daemon's RSS and open fds (/proc) and each
kind's request count, p99 latency and errors.  At the end: RSS growth per
daemon from the end of minute 1 to the end (warm-up, the first pass over the
keys and allocator arenas, does not count; goal < 5 %), total errors (goal
0), and whether every enqueued job ran.  DONE jobs and dedup ids are kept
``--job-retention`` seconds (30; the defaults keep them 7 days and 5 minutes,
in the gateway's memory with an embedded store, which a soak would then
report as growth that is not a leak).  The table goes to
bench/results/soak.md (``--out``); the exit status is 1 when a goal is missed.

    .venv/bin/python bench/soak.py                 # 10 minutes (make soak)
    .venv/bin/python bench/soak.py --minutes 2     # a check that it works
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, percentiles, scratch_dir, unused_port  # noqa: E402

__all__ = ["main", "Kind", "Sample"]

HELIOS = str(Path(sys.executable).with_name("helios"))
BENCH = ROOT / "bench"
QUEUE = "soak"
RSS_GOAL_PCT = 5.0


# -- the daemons ----------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELIOS_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT)])
    env.update(extra)
    return env


class Procs:
    """The processes of one run: each started with its log in the scratch dir, all stopped at the end."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str], stdout: int | None = None,
              ) -> subprocess.Popen[bytes]:
        with open(self.d / f"{name}.log", "ab") as log:
            p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, cwd=ROOT,
                                 stdout=stdout if stdout is not None else log, stderr=log)
        self.procs[name] = p
        return p

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.d / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail}")

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _listening(p: subprocess.Popen[bytes], what: str, timeout: float = 120) -> str:
    """The URL from a daemon's 'listening on URL' line; the rest of its stdout is drained."""
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = p.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"{what} exited with {p.wait()}")
        if "listening on" in line:
            threading.Thread(target=p.stdout.read, daemon=True).start()
            return line.split("listening on ")[1].split()[0]
    raise RuntimeError(f"{what} did not start")


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, redis.RedisError):
            if pred():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Http:
    """One keep-alive HTTP/1.1 connection (reopened after an error)."""

    def __init__(self, url: str, token: str = "") -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.host, self.port, self.token = host, int(port), token
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def call(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        h = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        try:
            self.conn.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=h)
            r = self.conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        except Exception:
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            raise


@dataclass
class Stack:
    atlas_port: int
    atlas_password: str | None
    gateway: str
    token: str
    user_id: str
    proxy: str
    pids: dict[str, int]
    jobs_out: Path


@contextlib.contextmanager
def stack(d: Path, job_retention: int) -> Iterator[Stack]:
    procs = Procs(d)
    try:
        port = unused_port()
        procs.spawn("atlasd", [HELIOS, "atlasd", "--data", str(d / "atlas"), "--port", str(port),
                               "--appendfsync", "everysec"], _env())
        password_file = d / "atlas" / "atlasd.password"

        def atlas_up() -> bool:
            procs.check()
            pw = password_file.read_text().strip() if password_file.exists() else None
            with redis.Redis(port=port, password=pw, socket_timeout=2) as r:
                return bool(r.ping())

        _wait(atlas_up, 120, "atlasd")
        password = password_file.read_text().strip() if password_file.exists() else None

        # One client address sends everything here: the default rate limit (600 per 60 s per client)
        # would be the first thing measured, so it is off.  DONE jobs are kept jobs.done_retention_seconds
        # (7 days by default) and dedup ids jobs.dedup_window_seconds (5 min), in the gateway's embedded
        # store: at the default the gateway's RSS grows by every job enqueued, by design.  A soak looks
        # for leaks, so both are shortened to `job_retention` s: the data set is steady after minute 1.
        retention = str(job_retention)
        gw = procs.spawn("gateway", [HELIOS, "gateway", "--data", str(d / "gw"), "--port", "0"],
                         _env(HELIOS_RATELIMIT__ENABLED="false", HELIOS_JOBS__DONE_RETENTION_SECONDS=retention,
                              HELIOS_JOBS__DEDUP_WINDOW_SECONDS=retention), stdout=subprocess.PIPE)
        gw_url = _listening(gw, "gateway")
        admin = Http(gw_url)
        pw = (d / "gw" / "initial_admin_password").read_text().strip()
        code, _, body = admin.call("POST", "/api/v1/auth/login", {"username": "admin", "password": pw})
        if code != 200:
            raise RuntimeError(f"login: {code} {body[:200]!r}")
        admin.token = json.loads(body)["access_token"]
        code, _, body = admin.call("POST", "/admin/users", {"username": "soak", "roles": ["user", "worker"]})
        if code not in (200, 201):
            raise RuntimeError(f"create user: {code} {body[:200]!r}")
        user_id = json.loads(body)["id"]  # the `user` role's KV namespace is users/{id}/
        code, _, body = admin.call("POST", "/admin/users/soak/tokens", {"ttl_seconds": 86400})
        token = json.loads(body)["token"]

        jobs_out = d / "jobs"
        jobs_out.mkdir()
        procs.spawn("worker", [HELIOS, "worker", "--queue", QUEUE, "--handler", "bench_noop:run",
                               "--concurrency", "4"],
                    _env(HELIOS_URL=gw_url, HELIOS_TOKEN=token, HELIOS_LOG__LEVEL="warn",
                         BENCH_JOBS_OUT=str(jobs_out)))

        backend = procs.spawn("backend", [sys.executable, "-m", "tests.proxy_backend", "--port", "0",
                                          "--name", "b0"], _env(), stdout=subprocess.PIPE)
        assert backend.stdout is not None
        line = backend.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"backend did not start: {line!r}")
        cfg = d / "proxy.yaml"
        cfg.write_text(json.dumps({
            "pools": {"web": {"backends": [{"id": "b0", "url": f"http://127.0.0.1:{line.split()[1]}"}]}},
            "routes": [{"id": "r", "prefix": "/", "pool": "web"}]}))
        px = procs.spawn("proxy", [HELIOS, "proxy", "--config", str(cfg), "--port", "0", "--no-access-log"],
                         _env(), stdout=subprocess.PIPE)
        proxy_url = _listening(px, "proxy")
        _wait(lambda: Http(proxy_url).call("GET", "/echo")[0] == 200, 60, "the proxy to reach its backend")

        pids = {name: procs.procs[name].pid for name in ("atlasd", "gateway", "worker", "proxy")}
        yield Stack(port, password, gw_url, token, user_id, proxy_url, pids, jobs_out)
        procs.check()
    finally:
        procs.stop()


# -- the load -----------------------------------------------------------------------------------


@dataclass
class Kind:
    """One kind of request: latencies and errors since the last sample, and totals."""

    name: str
    lat: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    total: int = 0
    total_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, seconds: float) -> None:
        with self.lock:
            self.lat.append(seconds)
            self.total += 1

    def fail(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)
            self.total += 1
            self.total_errors += 1

    def take(self) -> tuple[list[float], list[str]]:
        with self.lock:
            lat, err = self.lat, self.errors
            self.lat, self.errors = [], []
            return lat, err


def paced(stop: threading.Event, rate: float, step: Callable[[int], None]) -> None:
    """Call step(i) `rate` times a second until `stop` (behind schedule: at once, never in a burst)."""
    period = 1.0 / rate
    due = time.monotonic()
    i = 0
    while not stop.is_set():
        step(i)
        i += 1
        due = max(due + period, time.monotonic() - period)
        stop.wait(max(0.0, due - time.monotonic()))


def timed(kind: Kind, fn: Callable[[], str | None]) -> None:
    """Run one request; fn returns an error text or None.  An exception is an error too."""
    t0 = time.perf_counter()
    try:
        err = fn()
    except Exception as e:  # noqa: BLE001 - every client-visible failure is counted
        err = repr(e)
    if err is None:
        kind.ok(time.perf_counter() - t0)
    else:
        kind.fail(err)


def load_threads(s: Stack, kinds: dict[str, Kind], stop: threading.Event, rate: float, keys: int,
                 enqueued: list[int]) -> list[threading.Thread]:
    kv = Http(s.gateway, s.token)
    jobs = Http(s.gateway, s.token)
    px = Http(s.proxy)
    atlas = redis.Redis(port=s.atlas_port, password=s.atlas_password, socket_timeout=60)

    def kv_step(i: int) -> None:
        path = f"/api/v1/kv/users/{s.user_id}/k{i % keys}"
        etag: list[str] = []

        def get() -> str | None:
            code, h, body = kv.call("GET", path)
            if code == 200:
                etag.append(h.get("etag", ""))
                return None
            return None if code == 404 else f"GET {code} {body[:120]!r}"

        def put() -> str | None:
            headers = {"If-Match": etag[0]} if etag and etag[0] else {}
            code, _, body = kv.call("PUT", path, {"i": i, "pad": "x" * 100}, headers)
            return None if code in (200, 201) else f"PUT {code} {body[:120]!r}"

        timed(kinds["kv_get"], get)
        timed(kinds["kv_put"], put)

    def enqueue_step(i: int) -> None:
        def enqueue() -> str | None:
            code, _, body = jobs.call("POST", "/api/v1/jobs",
                                      {"queue": QUEUE, "payload": {"i": i}, "dedup_id": f"soak-{i}"})
            if code in (200, 201, 202):
                enqueued.append(i)
                return None
            return f"enqueue {code} {body[:120]!r}"

        timed(kinds["enqueue"], enqueue)

    def proxy_step(i: int) -> None:
        def get() -> str | None:
            code, _, body = px.call("GET", f"/echo/{i % keys}")
            return None if code == 200 else f"proxy {code} {body[:120]!r}"

        timed(kinds["proxy_get"], get)

    def atlas_step(i: int) -> None:
        k, v = f"soak:{i % keys}", f"v{i}".ljust(100, "x")

        def set_() -> str | None:
            return None if atlas.set(k, v) else "SET not OK"

        def get() -> str | None:
            got = atlas.get(k)
            return None if got == v.encode() else f"GET {got!r}"

        timed(kinds["atlas_set"], set_)
        timed(kinds["atlas_get"], get)

    steps = [kv_step, enqueue_step, proxy_step, atlas_step]
    return [threading.Thread(target=paced, args=(stop, rate, st), daemon=True, name=st.__name__) for st in steps]


# -- sampling and the report -------------------------------------------------------------------------


def _status_kb(pid: int, field_name: str = "VmRSS") -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


@dataclass
class Sample:
    minute: int
    rss_kb: dict[str, int]
    fds: dict[str, int]
    requests: dict[str, int]
    p99_ms: dict[str, float]
    errors: dict[str, int]
    first_errors: list[str]


def sample(minute: int, pids: dict[str, int], kinds: dict[str, Kind]) -> Sample:
    reqs, p99, errs, first = {}, {}, {}, []
    for name, k in kinds.items():
        lat, err = k.take()
        reqs[name] = len(lat) + len(err)
        p99[name] = round(percentiles(lat, (99,))["p99"] * 1000, 2) if lat else float("nan")
        errs[name] = len(err)
        first += [f"{name}: {e}" for e in err[:3]]
    return Sample(minute, {n: _status_kb(p) for n, p in pids.items()}, {n: _fds(p) for n, p in pids.items()},
                  reqs, p99, errs, first)


def jobs_run(out: Path) -> set[int]:
    done: set[int] = set()
    for f in out.glob("exec-*.log"):
        done.update(int(x) for x in f.read_text().split())
    return done


def report(samples: list[Sample], args: argparse.Namespace, enqueued: int, ran: int,
           kinds: dict[str, Kind], started: str) -> tuple[str, bool]:
    daemons = list(samples[0].rss_kb)
    names = list(kinds)
    # Growth is measured from the end of minute 1 (warm-up does not count), or the first sample if none is later.
    at_minute_1 = [s for s in samples if s.minute * args.interval >= 60 - 1e-6]
    base, last = (at_minute_1[0] if at_minute_1 else samples[0]), samples[-1]
    growth = {d: (100.0 * (last.rss_kb[d] - base.rss_kb[d]) / base.rss_kb[d]) if base.rss_kb[d] else 0.0
              for d in daemons}
    total_errors = sum(k.total_errors for k in kinds.values())
    lost_jobs = enqueued - ran
    ok = total_errors == 0 and lost_jobs == 0 and all(g < RSS_GOAL_PCT for g in growth.values())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    out = [
        "# Soak: mixed load on every daemon",
        "",
        f"Run {started} UTC, commit {commit}, {args.minutes:g} minutes, {args.rate:g} requests/s per kind, "
        f"{args.keys} keys, DONE jobs and dedup ids kept {args.job_retention} s; "
        f"`{' '.join(['bench/soak.py', *sys.argv[1:]])}` on {os.cpu_count()} cores "
        "(shared with other work: latencies are this machine's, not a target).",
        "",
        "## Per minute",
        "",
        "| minute | " + " | ".join(f"RSS {d} MiB" for d in daemons) + " | " + " | ".join(f"fds {d}" for d in daemons)
        + " | " + " | ".join(f"p99 {n} ms" for n in names) + " | requests | errors |",
        "|" + "---:|" * (1 + 2 * len(daemons) + len(names) + 2),
    ]
    for s in samples:
        out.append(f"| {round(s.minute * args.interval / 60, 2):g} | "
                   + " | ".join(f"{s.rss_kb[d] / 1024:.1f}" for d in daemons) + " | "
                   + " | ".join(str(s.fds[d]) for d in daemons) + " | "
                   + " | ".join(f"{s.p99_ms[n]:.1f}" for n in names)
                   + f" | {sum(s.requests.values())} | {sum(s.errors.values())} |")
    out += [
        "",
        "## Result",
        "",
        f"RSS growth from the end of minute {round(base.minute * args.interval / 60, 2):g} to the end of minute "
        f"{round(last.minute * args.interval / 60, 2):g} "
        f"(goal < {RSS_GOAL_PCT:g} %):",
        "",
        "| daemon | first sample MiB | end MiB | growth | fds first sample | fds end |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for d in daemons:
        out.append(f"| {d} | {base.rss_kb[d] / 1024:.1f} | {last.rss_kb[d] / 1024:.1f} | {growth[d]:+.1f} % "
                   f"| {base.fds[d]} | {last.fds[d]} |")
    out += ["", "| kind | requests | errors |", "|---|---:|---:|"]
    out += [f"| {n} | {k.total} | {k.total_errors} |" for n, k in kinds.items()]
    out += ["", f"Total errors: **{total_errors}** (goal 0). Jobs enqueued {enqueued}, ran {ran} "
            f"({'all' if lost_jobs == 0 else f'{lost_jobs} not run'}).", "",
            f"Goals: {'met' if ok else 'MISSED'}."]
    firsts = [e for s in samples for e in s.first_errors][:10]
    if firsts:
        out += ["", "First errors:", ""] + [f"- `{e[:200]}`" for e in firsts]
    if base is last:
        out += ["", "(No sample after minute 1: growth needs a run longer than a minute.)"]
    return "\n".join(out) + "\n", ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    p.add_argument("--rate", type=float, default=50.0, help="requests a second per kind of request (default 50)")
    p.add_argument("--keys", type=int, default=1000, help="key names each kind cycles over (default 1000)")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default 60: a minute)")
    p.add_argument("--job-retention", type=int, default=30, metavar="S",
                   help="jobs.done_retention_seconds and jobs.dedup_window_seconds (default 30; 604800 and 300 "
                        "are the defaults: RSS then grows with every job kept)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.md")
    args = p.parse_args()
    # A SIGTERM (a stopped make, a CI timeout) unwinds like Ctrl-C, so the daemons are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    kinds = {n: Kind(n) for n in ("kv_get", "kv_put", "enqueue", "proxy_get", "atlas_set", "atlas_get")}
    samples: list[Sample] = []
    enqueued: list[int] = []
    with scratch_dir("soak") as d, stack(d, args.job_retention) as s:
        stop = threading.Event()
        threads = load_threads(s, kinds, stop, args.rate, args.keys, enqueued)
        for t in threads:
            t.start()
        t0 = time.monotonic()
        n = max(1, round(args.minutes * 60 / args.interval))
        for minute in range(1, n + 1):
            stop.wait(max(0.0, t0 + minute * args.interval - time.monotonic()))
            samples.append(sample(minute, s.pids, kinds))
            last = samples[-1]
            print(f"minute {minute}: rss MiB " + " ".join(f"{k}={v / 1024:.1f}" for k, v in last.rss_kb.items())
                  + " fds " + " ".join(f"{k}={v}" for k, v in last.fds.items())
                  + " p99 ms " + " ".join(f"{k}={v:.1f}" for k, v in last.p99_ms.items())
                  + f" errors {sum(last.errors.values())}", flush=True)
        stop.set()
        for t in threads:
            t.join(120)
        # The worker drains what is left (each job is a no-op: seconds at most).
        want = set(enqueued)
        deadline = time.monotonic() + 120
        while not want <= jobs_run(s.jobs_out) and time.monotonic() < deadline:
            time.sleep(0.5)
        ran = len(want & jobs_run(s.jobs_out))
    text, ok = report(samples, args, len(set(enqueued)), ran, kinds, started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
