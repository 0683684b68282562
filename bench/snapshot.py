"""Writes during a background snapshot, and the snapshot child's copy-on-write size: atlasd next to redis-server.

Both servers run as an operator runs them, side by side in one run, each on
an unused loopback port with its own data directory:

  atlasd        `helios atlasd --data DIR --port P --appendfsync everysec`, automatic snapshots off
  redis-server  `appendonly yes`, `appendfsync everysec`, automatic RDB saves and AOF rewrites off,
                `hz 100` (redis notices its snapshot child's exit in serverCron: at the default
                hz 10 that adds up to 100 ms of calm writes to the "during" window)

atlasd is given a password (it requires one on TCP; a client pays one AUTH
per connection).  Both get the same N keys through `redis-cli --pipe` (the
same client path for both).  Then, for --rounds rounds (which server goes
first alternates round by round; the other one is idle meanwhile), each server gets --writers
threads, one redis-py connection each, issuing --rate SETs per second in
total on a fixed schedule to random existing keys: a --baseline-seconds
phase without a snapshot, then BGSAVE, polling `INFO persistence` every 2 ms
until `rdb_bgsave_in_progress` is 0.  Latency is counted from when each write
was *due*, so a stalled server is charged for every write that fell due
while it stalled (no coordinated omission).  The client is the same Python
code for both servers, so its own overhead is in both columns alike.

After each BGSAVE the script reads `rdb_last_cow_size` (INFO persistence:
the bytes the snapshot child's copy-on-write duplicated, as redis reports
it); a server without that field is shown as "n/a".  Ratios are atlasd /
redis-server.  The goal (issue 11): atlasd's write p99 during a snapshot
< 5 ms under everysec.

    .venv/bin/python bench/snapshot.py [--keys 1_000_000] [--rounds 3] [--rate 2000] [--json]
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PYTHON,
    REDIS_CLI,
    ROOT,
    RedisServer,
    emit_json,
    fmt_ms,
    key,
    machine_note,
    make_parser,
    pairs,
    percentiles,
    print_table,
    resp_set,
    scratch_dir,
    unused_port,
    value,
)

GOAL_P99_S = 0.005
POLICY = "everysec"
HELIOS = str(Path(PYTHON).with_name("helios"))
PASSWORD = secrets.token_hex(16)


# -- the two servers, behind one small interface ---------------------------------------------


class Server:
    """What a round needs from either server: a name, a port, its INFO, its process."""

    def __init__(self, name: str, port: int, pid: int, password: str | None = None) -> None:
        self.name, self.port, self.pid, self.password = name, port, pid, password

    def client(self) -> redis.Redis:
        # No retries: a retry would hide a stall (and a server gone) inside one sample.
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=120,
                           retry=Retry(NoBackoff(), 0))


class Atlasd:
    """`helios atlasd` as an operator starts it: everysec, automatic snapshots off, a password."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Atlasd:
        self.port = unused_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        env.update(HELIOS_ATLAS__SAVE="", HELIOS_ATLAS__SNAPSHOT_ON_AOF_BYTES="0",
                   HELIOS_ATLASD__REQUIREPASS=PASSWORD)
        self.log = open(self.dir.parent / "atlasd.log", "ab")
        self.proc = subprocess.Popen([HELIOS, "--log-level", "warn", "atlasd", "--data", str(self.dir),
                                      "--port", str(self.port), "--appendfsync", POLICY],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        c = Server("atlasd", self.port, self.proc.pid, PASSWORD).client()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"atlasd exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if c.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"atlasd did not answer PING within {timeout}s") from None
                time.sleep(0.05)
        c.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def pipe_load(srv: Server, n: int, chunk: int = 100_000) -> float:
    """SET keys 0..n-1 through `redis-cli --pipe`; seconds taken."""
    t0 = time.perf_counter()
    auth = ["-a", srv.password, "--no-auth-warning"] if srv.password else []
    proc = subprocess.Popen([REDIS_CLI, "-p", str(srv.port), *auth, "--pipe"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdin is not None and proc.stdout is not None
    for start in range(0, n, chunk):
        proc.stdin.write(resp_set(pairs(start, min(n, start + chunk))))
    proc.stdin.close()
    out = proc.stdout.read().decode()
    if proc.wait() != 0 or "errors: 0" not in out:
        raise RuntimeError(f"redis-cli --pipe to {srv.name} failed: {out}")
    return time.perf_counter() - t0


def minor_faults(pid: int) -> int:
    """The process's minor page faults so far (a copy-on-write copy in the server is one)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# -- one round on one server -----------------------------------------------------------------


def _writer(srv: Server, n: int, rate: float, stop: threading.Event, seed: int,
            samples: list[tuple[float, float]]) -> None:
    """SETs of random existing keys on a fixed schedule: (due time, seconds from due to reply)."""
    c = srv.client()
    rng = random.Random(seed)
    interval = 1.0 / rate
    due = time.perf_counter() + rng.random() * interval
    try:
        while not stop.is_set():
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            i = rng.randrange(n)
            c.set(key(i), value(i, 3))
            samples.append((due, time.perf_counter() - due))
            due += interval
    finally:
        c.close()


def _info_int(info: dict[str, Any], name: str) -> int | None:
    v = info.get(name)
    return int(v) if isinstance(v, int | float) or (isinstance(v, str) and v.lstrip("-").isdigit()) else None


def one_round(srv: Server, n: int, writers: int, rate: float, baseline_s: float, seed: int) -> dict[str, Any]:
    ctl = srv.client()
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    threads = [threading.Thread(target=_writer, args=(srv, n, rate / writers, stop, seed * 100 + w, samples))
               for w in range(writers)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)  # the writers settle into their schedule
        base = (time.perf_counter(), 0.0)
        time.sleep(baseline_s)
        base = (base[0], time.perf_counter())
        rss = rss_mb(srv.pid)
        faults = minor_faults(srv.pid)
        t0 = time.perf_counter()
        ctl.bgsave()
        forked = time.perf_counter()  # both servers reply to BGSAVE once the child is forked
        while True:
            info = ctl.info("persistence")
            if not info.get("rdb_bgsave_in_progress"):
                break
            time.sleep(0.002)
        during = (t0, time.perf_counter())
        faults = minor_faults(srv.pid) - faults
        time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    if info.get("rdb_last_bgsave_status") != "ok":
        raise RuntimeError(f"{srv.name} BGSAVE failed: {info}")
    ctl.close()

    def pick(span: tuple[float, float]) -> list[float]:
        return [lat for due, lat in samples if span[0] <= due <= span[1]]

    # When the worst write of the snapshot fell due: a stall at the start (fork), mid-way or at the end.
    worst = max(((lat, due) for due, lat in samples if during[0] <= due <= during[1]), default=(0.0, t0))
    return {"baseline": pick(base), "during": pick(during), "after_fork": pick((forked, during[1])),
            "worst": {"seconds": worst[0], "due_at": worst[1] - t0},
            "bgsave_seconds": during[1] - during[0], "bgsave_reply_seconds": forked - t0,
            "cow_bytes": _info_int(info, "rdb_last_cow_size"), "rss_mb": rss, "server_faults": faults}


# -- the run ---------------------------------------------------------------------------------


def run(n: int, rounds: int, writers: int, rate: float, baseline_s: float,
        log: Callable[[str], None]) -> dict[str, Any]:
    with scratch_dir("snapshot-cow") as root:
        atlas_dir = root / "atlasd"
        atlas_dir.mkdir()
        atlas = Atlasd(atlas_dir / "data").start()
        try:
            with RedisServer(root / "redis", appendonly="yes", appendfsync=POLICY, hz="100") as rs:
                rs.start()
                assert atlas.proc is not None and rs.proc is not None
                servers = [Server("atlasd", atlas.port, atlas.proc.pid, PASSWORD),
                           Server("redis-server", rs.port, rs.proc.pid)]
                for s in servers:
                    log(f"  loading {n:,} keys into {s.name}: {pipe_load(s, n):.1f} s, "
                        f"RSS {rss_mb(s.pid):.0f} MB")
                os.sync()  # the load's dirty pages must not slow the fsyncs that follow
                out: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
                for r in range(rounds):
                    order = servers if r % 2 == 0 else servers[::-1]
                    for s in order:
                        res = one_round(s, n, writers, rate, baseline_s, seed=r)
                        cow = "n/a" if res["cow_bytes"] is None else f"{res['cow_bytes'] / 1e6:.1f} MB"
                        worst = res["worst"]
                        log(f"  round {r + 1} {s.name}: bgsave {fmt_ms(res['bgsave_seconds'])}, "
                            f"p99 during {percentiles(res['during'])['p99'] * 1e3:.2f} ms, cow {cow}, "
                            f"worst write {worst['seconds'] * 1e3:.1f} ms, due "
                            f"{worst['due_at'] * 1e3:.0f} ms after BGSAVE was sent")
                        out[s.name].append(res)
        finally:
            atlas.stop()
    return summarize(out)


def summarize(out: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, rounds in out.items():
        cows = [r["cow_bytes"] for r in rounds if r["cow_bytes"] is not None]
        result[name] = {
            "baseline": percentiles([x for r in rounds for x in r["baseline"]]),
            "during": percentiles([x for r in rounds for x in r["during"]]),
            "after_fork": percentiles([x for r in rounds for x in r["after_fork"]]),
            "during_p99_by_round": [percentiles(r["during"])["p99"] for r in rounds],
            "bgsave_reply_seconds": [r["bgsave_reply_seconds"] for r in rounds],
            "server_faults": [r["server_faults"] for r in rounds],
            "worst": [r["worst"] for r in rounds],
            "bgsave_seconds": [r["bgsave_seconds"] for r in rounds],
            "cow_bytes": cows if len(cows) == len(rounds) else None,
            "rss_mb": statistics.median(r["rss_mb"] for r in rounds),
        }
    return result


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def main() -> None:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="baseline + BGSAVE rounds per server (default 3)")
    p.add_argument("--rate", type=float, default=2000.0, help="SETs per second, all writers (default 2000)")
    p.add_argument("--writers", type=int, default=8, help="writer threads, one connection each (default 8)")
    p.add_argument("--baseline-seconds", type=float, default=2.0, help="length of a baseline phase (default 2)")
    args = p.parse_args()
    n = args.keys
    print(f"snapshot benchmark: {n:,} keys, appendfsync {POLICY}, {args.writers} writers at {args.rate:g} SET/s, "
          f"{args.rounds} rounds per server", flush=True)
    res = run(n, args.rounds, args.writers, args.rate, args.baseline_seconds, lambda s: print(s, flush=True))
    a, r = res["atlasd"], res["redis-server"]

    def ms(pc: dict[str, float], k: str) -> float:
        return pc[k] * 1e3

    rows = []
    for phase, label in (("baseline", "no snapshot"), ("during", "during BGSAVE")):
        for k in ("p50", "p99", "max"):
            goal = ""
            if (phase, k) == ("during", "p99"):
                goal = "met" if a[phase][k] < GOAL_P99_S else "NOT met"
            rows.append([f"SET {k}, {label}", f"{ms(a[phase], k):.2f}", f"{ms(r[phase], k):.2f}",
                         ratio(a[phase][k], r[phase][k]), goal])
    a_r, r_r = statistics.median(a["during_p99_by_round"]), statistics.median(r["during_p99_by_round"])
    rows.append(["SET p99 during BGSAVE, median of the rounds' p99", f"{a_r * 1e3:.2f}", f"{r_r * 1e3:.2f}",
                 ratio(a_r, r_r), "met" if a_r < GOAL_P99_S else "NOT met"])
    rows.append(["SET p99, during BGSAVE after its reply (fork left out)", f"{ms(a['after_fork'], 'p99'):.2f}",
                 f"{ms(r['after_fork'], 'p99'):.2f}", ratio(a["after_fork"]["p99"], r["after_fork"]["p99"]), ""])
    a_rep, r_rep = statistics.median(a["bgsave_reply_seconds"]), statistics.median(r["bgsave_reply_seconds"])
    rows.append(["BGSAVE reply time (fork), median (ms)", f"{a_rep * 1e3:.1f}", f"{r_rep * 1e3:.1f}",
                 ratio(a_rep, r_rep), ""])
    a_f, r_f = statistics.median(a["server_faults"]), statistics.median(r["server_faults"])
    rows.append(["server minor page faults during BGSAVE", f"{a_f:,.0f}", f"{r_f:,.0f}", ratio(a_f, r_f), ""])
    rows.append(["writes counted, during BGSAVE", f"{int(a['during']['count']):,}", f"{int(r['during']['count']):,}",
                 "", ""])
    a_bg, r_bg = statistics.median(a["bgsave_seconds"]), statistics.median(r["bgsave_seconds"])
    rows.append(["BGSAVE duration, median (s)", f"{a_bg:.3f}", f"{r_bg:.3f}", ratio(a_bg, r_bg), ""])
    a_cow = statistics.median(a["cow_bytes"]) if a["cow_bytes"] else None
    r_cow = statistics.median(r["cow_bytes"]) if r["cow_bytes"] else None
    rows.append(["child copy-on-write, median (MB)", "n/a" if a_cow is None else f"{a_cow / 1e6:.1f}",
                 "n/a" if r_cow is None else f"{r_cow / 1e6:.1f}", ratio(a_cow, r_cow), ""])
    rows.append(["server RSS before BGSAVE (MB)", f"{a['rss_mb']:.0f}", f"{r['rss_mb']:.0f}",
                 ratio(a["rss_mb"], r["rss_mb"]), ""])
    print_table(f"{n:,} keys, appendfsync {POLICY}: SET latency in ms from when each write was due "
                f"({args.rate:g}/s from {args.writers} threads), goal atlasd p99 during a snapshot "
                f"< {GOAL_P99_S * 1e3:g} ms", ["", "atlasd", "redis-server", "atlasd/redis", "goal"], rows)
    if a_cow is None:
        print("\natlasd's INFO has no rdb_last_cow_size: its copy-on-write size is n/a in this build.")
    if args.json:
        emit_json({"benchmark": "snapshot", "keys": n, "machine": machine_note(), "policy": POLICY,
                   "rate": args.rate, "writers": args.writers, "goal_p99_seconds": GOAL_P99_S, "results": res})


if __name__ == "__main__":
    main()
