"""Background snapshot of N keys: its duration, and write latency while it runs.

For each fsync policy (everysec and always), a fresh interpreter opens an
engine holding N keys (16 + 100 bytes, from a snapshot), attaches it to an
asyncio loop and runs W writer coroutines issuing R writes/s in total (SET of
an existing key chosen at random, then `await engine.wait_durable(seq)`).
Rounds alternate:

  baseline   writes only, for a fixed time;
  snapshot   the same writes while `await engine.bgsave()` runs (a forked
             child writes the snapshot); writes that fell due between the
             bgsave call and its completion count.

Latency of a write is measured from the moment it was due on its writer's
fixed schedule, not from when the coroutine got round to it: a stalled event
loop then counts against every write that fell due during the stall, as it
would for a client of atlasd (no coordinated omission).  asyncio's timers
wake up to ~1 ms late, which this includes; the latency from issuing the SET
is shown beside it.

To explain the tail, the child also times the snapshot steps that run on the
event loop (start: AOF rotation + fork; end: clean-up and checks), every AOF
write() and fsync, and the loop's lag (bench/loopwatch.py), and reports the
percentiles again without the writes that were in flight during the end
step, then during the start step too.  `--profile` adds one more snapshot
with those steps under cProfile and samples the loop thread's stack during
stalls.

redis-server, for reference, gets the same writes (W threads with a redis-py
connection each, same schedule) with appendonly yes and the same appendfsync,
and BGSAVE rounds of the same N keys (its default rdbcompression and
rdbchecksum).  Its BGSAVE duration comes from its own log; the HELIOS
duration is from the bgsave() call to its result.

Goal: HELIOS p99 write latency during a snapshot under 5 ms.

    .venv/bin/python bench/snapshot_latency.py --keys 1000000 [--rounds 3] [--rate 2000] [--profile] [--json]
"""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HIDDEN,
    RedisServer,
    child_result,
    emit_json,
    fill_helios,
    fmt_ms,
    key,
    machine_note,
    make_parser,
    pairs,
    percentiles,
    print_table,
    quiet_helios_logs,
    run_child,
    scratch_dir,
    snapshot_helios,
    value,
)
from loopwatch import LagMonitor, LoopSteps, in_spans, time_aof_io  # noqa: E402

GOAL_P99_S = 0.005
SCRIPT = Path(__file__).resolve()
POLICIES = ("everysec", "always")


# -- the HELIOS side (in a child process) -----------------------------------------------

async def _writer(eng: Any, n: int, rate: float, stop: asyncio.Event, rng: random.Random,
                  samples: list[tuple[float, float, float]]) -> None:
    """Write at `rate` on a fixed schedule; record (due time, latency from due, from issue)."""
    interval = 1.0 / rate
    due = time.perf_counter() + rng.random() * interval  # spread the writers' phases
    while not stop.is_set():
        now = time.perf_counter()
        if due > now:
            await asyncio.sleep(due - now)
            if stop.is_set():
                break
        i = rng.randrange(n)
        start = time.perf_counter()
        eng.execute([b"SET", key(i), value(i, 2)])
        seq = eng.pending_seq()
        if seq:
            await eng.wait_durable(seq)
        end = time.perf_counter()
        samples.append((due, end - due, end - start))
        due += interval


async def _phase(eng: Any, n: int, writers: int, rate: float, seed: int,
                 snapshot: bool, baseline_s: float) -> dict[str, Any]:
    stop = asyncio.Event()
    samples: list[tuple[float, float, float]] = []
    rngs = [random.Random(seed * 1000 + w) for w in range(writers)]
    tasks = [asyncio.create_task(_writer(eng, n, rate / writers, stop, rngs[w], samples))
             for w in range(writers)]
    await asyncio.sleep(0.3)  # writers settle into their schedules first
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    if snapshot:
        info = await eng.bgsave()
        out["bgsave_seconds"] = time.perf_counter() - t0
        out["snapshot_bytes"] = info.bytes
        out["snapshot_keys"] = info.keys
    else:
        await asyncio.sleep(baseline_s)
    t1 = time.perf_counter()
    await asyncio.sleep(0.2)  # let writes that fell due in the window finish
    # Only writes that fell due inside the window count.
    window = [s for s in samples if t0 <= s[0] <= t1]
    out["samples"], out["window"] = window, (t0, t1)
    stop.set()
    await asyncio.gather(*tasks)
    return out


async def _run(data_dir: str, policy: str, writers: int, rate: float, rounds: int,
               baseline_s: float, profile: bool) -> dict[str, Any]:
    from helios_core.atlas.engine import Engine
    from helios_core.config import AtlasConfig

    eng = Engine.open(data_dir, AtlasConfig(appendfsync=policy, save=(), snapshot_on_aof_bytes=0))
    n = len(eng.ks)
    steps = LoopSteps(eng)
    aof_io = time_aof_io()
    lag = LagMonitor(sample_stacks=profile)
    windows: dict[str, list[tuple[float, float]]] = {"baseline": [], "during": []}
    eng.attach()
    base: list[tuple[float, float, float]] = []
    snap: list[tuple[float, float, float]] = []
    bgsave: list[float] = []
    snap_bytes = 0
    for r in range(rounds):
        b = await _phase(eng, n, writers, rate, 2 * r, False, baseline_s)
        base += b["samples"]
        windows["baseline"].append(b["window"])
        s = await _phase(eng, n, writers, rate, 2 * r + 1, True, baseline_s)
        snap += s["samples"]
        windows["during"].append(s["window"])
        bgsave.append(s["bgsave_seconds"])
        snap_bytes = s["snapshot_bytes"]
        if s["snapshot_keys"] != n:
            raise RuntimeError(f"snapshot holds {s['snapshot_keys']} keys, the engine {n}")
    await lag.stop()
    loop_blocked = steps.worst()
    aof_io_stats = {f"{op}_{phase}": percentiles(in_spans(aof_io[op], spans))
                    for op in ("write", "fsync") for phase, spans in windows.items()}
    loop_lag = {phase: lag.summary(spans) for phase, spans in windows.items()}
    # What the tail would be without the end step: drop writes in flight while it ran.
    not_finish = [x for x in snap if not steps.overlaps("finish", x[0], x[0] + x[1])]
    neither = [x for x in not_finish if not steps.overlaps("start", x[0], x[0] + x[1])]
    profiles = {}
    if profile:  # one more snapshot, profiled (the forked child inherits the profiler: not timed)
        steps.profiling = True
        await _phase(eng, n, writers, rate, 99, True, baseline_s)
        profiles = steps.profile_summary()
    await eng.aclose()
    return {
        "policy": policy, "keys": n, "bgsave_seconds": bgsave, "snapshot_bytes": snap_bytes,
        "baseline": percentiles([x[1] for x in base]), "during": percentiles([x[1] for x in snap]),
        "baseline_service": percentiles([x[2] for x in base]), "during_service": percentiles([x[2] for x in snap]),
        "during_not_finish": percentiles([x[1] for x in not_finish]),
        "during_neither": percentiles([x[1] for x in neither]),
        "loop_blocked": loop_blocked, "profiles": profiles, "aof_io": aof_io_stats, "loop_lag": loop_lag,
        "stall_stacks": lag.stacks.most_common(12),
        "fsyncs": eng.stats.fsync_count,
    }


def child(data_dir: str, policy: str, writers: int, rate: float, rounds: int, baseline_s: float,
          profile: bool) -> None:
    quiet_helios_logs()
    child_result(asyncio.run(_run(data_dir, policy, writers, rate, rounds, baseline_s, profile)))
    os._exit(0)


# -- redis-server BGSAVE -------------------------------------------------------------------

_LOG_TIME = re.compile(r"^\d+:[A-Z] (\d+ \w+ \d+ [\d:.]+) [*#.-] (.*)$")


def _log_events(text: str) -> list[tuple[float, str]]:
    out = []
    for line in text.splitlines():
        m = _LOG_TIME.match(line)
        if m:
            t = datetime.datetime.strptime(m.group(1), "%d %b %Y %H:%M:%S.%f").timestamp()
            out.append((t, m.group(2)))
    return out


def _redis_writer(srv: RedisServer, n: int, rate: float, stop: threading.Event, seed: int,
                  samples: list[tuple[float, float, float]]) -> None:
    """The HELIOS writer's schedule, over one redis-py connection (a SET's reply means durable
    under the server's appendfsync)."""
    c = srv.client()
    rng = random.Random(seed)
    interval = 1.0 / rate
    due = time.perf_counter() + rng.random() * interval
    while not stop.is_set():
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        i = rng.randrange(n)
        start = time.perf_counter()
        c.set(key(i), value(i, 2))
        end = time.perf_counter()
        samples.append((due, end - due, end - start))
        due += interval
    c.close()


def redis_run(root: Path, n: int, policy: str, writers: int, rate: float, rounds: int,
              baseline_s: float) -> dict[str, Any]:
    """redis-server (appendonly yes, the same appendfsync) under the same writes: baseline, then BGSAVE.

    BGSAVE durations come from redis's own log (ms stamps): fork time plus
    "Background saving started" to the child's "DB saved on disk".  Polling
    INFO would add up to 1/hz (100 ms): redis notices its child's exit in
    serverCron.  The same log line closes the latency window.
    """
    with RedisServer(root / f"redis-{policy}", appendonly="yes", appendfsync=policy) as srv:
        srv.start()
        srv.load_pairs(pairs(0, n))
        os.sync()  # the load's dirty pages must not slow what follows
        wall_minus_perf = time.time() - time.perf_counter()
        ctl = srv.client()
        stop = threading.Event()
        samples: list[tuple[float, float, float]] = []
        threads = [threading.Thread(target=_redis_writer, args=(srv, n, rate / writers, stop, w, samples))
                   for w in range(writers)]
        for t in threads:
            t.start()
        windows: dict[str, list[list[float]]] = {"baseline": [], "during": []}
        forks = []
        try:
            time.sleep(0.3)
            for _ in range(rounds):
                t0 = time.perf_counter()
                time.sleep(baseline_s)
                windows["baseline"].append([t0, time.perf_counter()])
                t0 = time.perf_counter()
                ctl.bgsave()
                while True:
                    info = ctl.info("persistence")
                    if not info["rdb_bgsave_in_progress"]:
                        break
                    time.sleep(0.002)
                windows["during"].append([t0, time.perf_counter()])
                if info["rdb_last_bgsave_status"] != "ok":
                    raise RuntimeError(f"redis BGSAVE failed: {info}")
                forks.append(ctl.info("stats")["latest_fork_usec"] / 1e6)
                time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join()
        events = _log_events(srv.log_since_start())
        size = (srv.dir / "dump.rdb").stat().st_size
    starts = [t for t, msg in events if msg.startswith("Background saving started")]
    ends = [t for t, msg in events if msg.startswith("DB saved on disk")]
    if len(starts) != rounds or len(ends) != rounds:
        raise RuntimeError(f"expected {rounds} BGSAVE start/end lines in redis's log, "
                           f"got {len(starts)}/{len(ends)}")
    times = [end - start + fork for start, end, fork in zip(starts, ends, forks, strict=True)]
    for w, end in zip(windows["during"], ends, strict=True):
        w[1] = min(w[1], end - wall_minus_perf + 0.001)
    picked = {phase: [x for x in samples if any(a <= x[0] <= b for a, b in spans)]
              for phase, spans in windows.items()}
    return {
        "policy": policy, "bgsave_seconds": times, "fork_seconds": forks, "rdb_bytes": size,
        "baseline": percentiles([x[1] for x in picked["baseline"]]),
        "during": percentiles([x[1] for x in picked["during"]]),
        "baseline_service": percentiles([x[2] for x in picked["baseline"]]),
        "during_service": percentiles([x[2] for x in picked["during"]]),
    }


# -- main ------------------------------------------------------------------------------------

def main() -> None:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="baseline + snapshot rounds per policy (default 3)")
    p.add_argument("--rate", type=float, default=2000.0, help="writes per second, all writers (default 2000)")
    p.add_argument("--writers", type=int, default=16,
                   help="writers (coroutines; threads for redis), each with one write in flight (default 16)")
    p.add_argument("--baseline-seconds", type=float, default=2.0, help="length of a baseline phase")
    p.add_argument("--policies", default=",".join(POLICIES), help="fsync policies to run (default everysec,always)")
    p.add_argument("--profile", action="store_true",
                   help="cProfile the event-loop steps of one extra snapshot per policy")
    p.add_argument("--child", nargs=2, metavar=("DIR", "POLICY"), help=HIDDEN)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.writers, args.rate, args.rounds, args.baseline_seconds,
              args.profile)
        return
    quiet_helios_logs()
    n = args.keys
    policies = [x for x in args.policies.split(",") if x]
    print(f"snapshot latency benchmark: {n:,} keys, {args.writers} writers at {args.rate:g} writes/s, "
          f"{args.rounds} rounds per policy", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with scratch_dir("snapshot") as root:
        for policy in policies:
            r = redis_run(root, n, policy, args.writers, args.rate, args.rounds, args.baseline_seconds)
            print(f"  redis {policy} BGSAVE: {', '.join(fmt_ms(x) for x in r['bgsave_seconds'])}", flush=True)
            h_dir = root / f"helios-{policy}"
            fill_helios(h_dir, pairs(0, n))
            snapshot_helios(h_dir)  # so the child starts fast, from a snapshot
            os.sync()  # and the set-up's dirty pages do not slow its fsyncs
            h = run_child(SCRIPT, ["--child", str(h_dir), policy, "--writers", str(args.writers),
                                   "--rate", str(args.rate), "--rounds", str(args.rounds),
                                   "--baseline-seconds", str(args.baseline_seconds)]
                          + (["--profile"] if args.profile else []))
            print(f"  helios {policy} bgsave: {', '.join(fmt_ms(x) for x in h['bgsave_seconds'])}", flush=True)
            h["bgsave_ratio"] = statistics.median(h["bgsave_seconds"]) / statistics.median(r["bgsave_seconds"])
            results[policy] = {"helios": h, "redis": r}

    def ms3(pc: dict[str, float]) -> str:
        return f"{pc['p50'] * 1e3:.2f} / {pc['p99'] * 1e3:.2f} / {pc['max'] * 1e3:.1f}"

    phases = [("helios", "baseline", "no snapshot"), ("helios", "during", "during bgsave"),
              ("helios", "during_not_finish", "  without writes held by the end step"),
              ("helios", "during_neither", "  ... nor by the start step (fork)"),
              ("redis", "baseline", "no snapshot"), ("redis", "during", "during BGSAVE")]
    rows = []
    for policy in policies:
        for who, phase, label in phases:
            pc = results[policy][who][phase]
            goal = "met" if pc["p99"] < GOAL_P99_S else "NOT met"
            svc = results[policy][who].get(f"{phase}_service")
            rows.append([policy, f"{who}-server" if who == "redis" else who, label, f"{int(pc['count']):,}",
                         f"{pc['p50'] * 1e3:.2f}", f"{pc['p99'] * 1e3:.2f}", f"{pc['max'] * 1e3:.1f}",
                         goal if (who, phase) == ("helios", "during")
                         else f"({goal})" if phase.startswith("during_") else "",
                         ms3(svc) if svc else ""])
    print_table(f"Write latency in ms (SET + durable, {args.rate:g} writes/s from {args.writers} writers, "
                f"from when each was due; goal: HELIOS p99 during a snapshot < {GOAL_P99_S * 1e3:g} ms)",
                ["policy", "system", "writes", "n", "p50", "p99", "max", "goal", "from issue: p50 / p99 / max"],
                rows)
    rows = []
    for policy in policies:
        h, r = results[policy]["helios"], results[policy]["redis"]
        lb = h["loop_blocked"]
        rows.append([policy, "redis-server BGSAVE", fmt_ms(statistics.median(r["bgsave_seconds"])),
                     f"{r['rdb_bytes'] / 1e6:.0f} MB", "1.00x",
                     f"(fork {fmt_ms(statistics.median(r['fork_seconds']))})", "", ""])
        rows.append([policy, "helios bgsave", fmt_ms(statistics.median(h["bgsave_seconds"])),
                     f"{h['snapshot_bytes'] / 1e6:.0f} MB", f"{h['bgsave_ratio']:.2f}x",
                     fmt_ms(lb["start"]), fmt_ms(lb["flush"]), fmt_ms(lb["finish"])])
    print_table(f"Background snapshot of {n:,} keys under those writes (median of {args.rounds}; HELIOS "
                "event-loop steps: worst)",
                ["policy", "", "duration", "file", "vs redis", "start step (rotate+fork)", "flush step",
                 "end step"], rows)
    rows = []
    for policy in policies:
        h = results[policy]["helios"]
        for phase in ("baseline", "during"):
            lag = h["loop_lag"][phase]
            w, f = h["aof_io"][f"write_{phase}"], h["aof_io"][f"fsync_{phase}"]
            rows.append([policy, "no snapshot" if phase == "baseline" else "during bgsave",
                         f"{lag['p99'] * 1e3:.2f} / {lag['max'] * 1e3:.1f}",
                         f"{lag['stalls']} ({lag['stalled_s'] * 1e3:.0f} ms)",
                         f"{int(w['count']):,}", ms3(w) if w["count"] else "-",
                         f"{int(f['count']):,}", ms3(f) if f["count"] else "-"])
    print_table("HELIOS event loop and AOF I/O, ms: loop lag (a 1 ms sleep's lateness), write() on the loop, "
                "fsync in a thread",
                ["policy", "", "lag p99 / max", "stalls > 5 ms (total)", "writes", "write p50 / p99 / max",
                 "fsyncs", "fsync p50 / p99 / max"], rows)
    for policy in policies:
        for label, top in results[policy]["helios"]["profiles"].items():
            print_table(f"cProfile, helios {policy}: event-loop step '{label}' of one snapshot, by cumulative time",
                        ["function", "calls", "own s", "cum s"],
                        [[f, f"{nc:,}", f"{tt:.4f}", f"{ct:.4f}"] for f, nc, tt, ct in top])
    for policy in policies:
        stacks = results[policy]["helios"]["stall_stacks"]
        if stacks:
            print(f"\nLoop-thread stacks sampled (every ms) while the event loop was stalled > 6 ms, "
                  f"helios {policy}, all rounds (innermost first):")
            for stack, count in stacks:
                print(f"  {count:5d}  {stack}")
    if args.json:
        emit_json({"benchmark": "snapshot_latency", "keys": n, "machine": machine_note(),
                   "goal_p99_seconds": GOAL_P99_S, "rate": args.rate, "writers": args.writers,
                   "results": results})


if __name__ == "__main__":
    main()
