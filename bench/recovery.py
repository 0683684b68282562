"""Recovery time: HELIOS `Engine.open` vs redis-server loading the same data.

Scenarios (N = --keys; every key is 16 bytes, every value 100 bytes):

  aof-only        N SETs in the AOF, no snapshot.
                  redis: appendonly yes, aof-use-rdb-preamble no (its AOF holds the N SETs).
  snapshot        a snapshot of N keys, empty AOF.
                  redis: appendonly no, dump.rdb from SAVE (reference row, no goal).
  snapshot+aof    a snapshot of N keys, then N/10 overwrites (every 10th key) in the AOF.
                  redis: appendonly yes, aof-use-rdb-preamble yes: BGREWRITEAOF after the
                  N keys (the base file is an RDB), then the same N/10 overwrites.

HELIOS is timed in a fresh interpreter per run (`Engine.open` only; imports and
the parent's memory do not count).  redis-server is timed by its own log line
"DB loaded from ...: X seconds".  Both systems also get "spawn to ready": from
starting the process to the data being served (for HELIOS that includes the
interpreter's start-up and imports, for redis until INFO says loading:0).
Every file is in the page cache for both (just written, same machine).

Goal: HELIOS at most 3x redis-server's load time for aof-only and snapshot+aof.

    .venv/bin/python bench/recovery.py --keys 1000000 [--repeat 3] [--json] [--profile]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HIDDEN,
    RedisServer,
    child_result,
    dir_bytes,
    emit_json,
    fill_helios,
    fmt_ms,
    machine_note,
    make_parser,
    pairs,
    print_table,
    quiet_helios_logs,
    run_child,
    scratch_dir,
    snapshot_helios,
)

GOAL_RATIO = 3.0
SCRIPT = Path(__file__).resolve()


def child_open(data_dir: str, profile_to: str | None) -> None:
    """In a fresh interpreter: time Engine.open on `data_dir` and report."""
    quiet_helios_logs()
    from helios_core.atlas.engine import Engine
    from helios_core.config import AtlasConfig

    config = AtlasConfig(save=(), snapshot_on_aof_bytes=0)
    prof = None
    if profile_to:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t0 = time.perf_counter()
    eng = Engine.open(data_dir, config)
    seconds = time.perf_counter() - t0
    ready_wall = time.time()
    if prof is not None and profile_to:
        prof.disable()
        prof.dump_stats(profile_to)
    rep = eng.recovery
    assert rep is not None
    result = {"seconds": seconds, "recover_seconds": rep.seconds, "keys": len(eng.ks),
              "replayed": rep.records_replayed, "snapshot_keys": rep.snapshot_keys, "ready_wall": ready_wall}
    eng.close()
    child_result(result)
    os._exit(0)  # skip freeing a million objects at exit


def time_helios(data_dir: Path, profile_to: str | None = None) -> dict:
    spawned = time.time()
    args = ["--child-open", str(data_dir)] + (["--profile-to", profile_to] if profile_to else [])
    r = run_child(SCRIPT, args)
    r["spawn_to_ready"] = r["ready_wall"] - spawned
    return r


def time_redis(data_dir: Path, config: dict[str, str]) -> dict:
    with RedisServer(data_dir, **config) as srv:
        ready = srv.start()
        loaded = srv.loaded_seconds()
        keys = srv.client().dbsize()
    if loaded is None:
        raise RuntimeError(f"no 'DB loaded' line in {srv.logfile}")
    return {"seconds": loaded, "spawn_to_ready": ready, "keys": keys}


def prepare(root: Path, n: int) -> dict[str, dict]:
    """Build the HELIOS and redis data dirs of every scenario; return what each needs."""
    extra = list(pairs(0, n, gen=1, step=10))  # the 10% overwrites
    sc: dict[str, dict] = {}

    t = time.perf_counter()
    h_aof = root / "helios-aof"
    fill_helios(h_aof, pairs(0, n))
    h_snap = root / "helios-snap"
    fill_helios(h_snap, pairs(0, n))
    snapshot_helios(h_snap)
    print(f"  helios data written in {time.perf_counter() - t:.1f} s", flush=True)

    t = time.perf_counter()
    r_aof_cfg = {"appendonly": "yes", "aof_use_rdb_preamble": "no", "appendfsync": "no"}
    r_aof = root / "redis-aof"
    with RedisServer(r_aof, **r_aof_cfg) as srv:
        srv.start()
        srv.load_pairs(pairs(0, n))
    r_snap_cfg = {"appendonly": "yes", "aof_use_rdb_preamble": "yes", "appendfsync": "no"}
    r_snap = root / "redis-snap"
    with RedisServer(r_snap, **r_snap_cfg) as srv:
        srv.start()
        srv.load_pairs(pairs(0, n))
        c = srv.client()
        c.bgrewriteaof()
        srv.wait_aof_rewrite()
        c.save()  # dump.rdb for the RDB-only row
    print(f"  redis data written in {time.perf_counter() - t:.1f} s", flush=True)

    sc["aof-only"] = {"helios": h_aof, "redis": (r_aof, r_aof_cfg)}
    # The snapshot-only rows are timed now, before the overwrites go into the AOFs.
    sc["snapshot"] = {"helios": h_snap, "redis": (r_snap, {"appendonly": "no"})}
    sc["_then"] = {"extra": extra, "helios": h_snap, "redis": (r_snap, r_snap_cfg)}
    return sc


def add_overwrites(then: dict) -> None:
    fill_helios(then["helios"], then["extra"])
    r_dir, r_cfg = then["redis"]
    with RedisServer(r_dir, **r_cfg) as srv:
        srv.start()
        srv.load_pairs(then["extra"])


def measure(name: str, helios_dir: Path, redis_spec: tuple[Path, dict], repeat: int,
            profile_dir: Path | None) -> dict:
    h_runs, r_runs = [], []
    for i in range(repeat):  # interleaved, so both see the same machine noise
        h_runs.append(time_helios(helios_dir))
        r_runs.append(time_redis(*redis_spec))
        print(f"  {name} run {i + 1}: helios {fmt_ms(h_runs[-1]['seconds'])}, "
              f"redis {fmt_ms(r_runs[-1]['seconds'])}", flush=True)
    if profile_dir is not None:
        time_helios(helios_dir, str(profile_dir / f"{name}.prof"))
    if h_runs[0]["keys"] != r_runs[0]["keys"]:
        raise RuntimeError(f"{name}: helios holds {h_runs[0]['keys']} keys, redis {r_runs[0]['keys']}")
    h_bytes, r_bytes = loaded_bytes(helios_dir, *redis_spec)
    h = statistics.median(r["seconds"] for r in h_runs)
    r = statistics.median(r["seconds"] for r in r_runs)
    return {
        "keys": h_runs[0]["keys"], "replayed": h_runs[0]["replayed"],
        "helios_seconds": h, "redis_seconds": r, "ratio": h / r,
        "helios_spawn_to_ready": statistics.median(x["spawn_to_ready"] for x in h_runs),
        "redis_spawn_to_ready": statistics.median(x["spawn_to_ready"] for x in r_runs),
        "helios_runs": [x["seconds"] for x in h_runs], "redis_runs": [x["seconds"] for x in r_runs],
        "helios_file_bytes": h_bytes, "redis_file_bytes": r_bytes,
    }


def summarise_profile(path: Path, limit: int = 12) -> None:
    """The functions with the most own time in one profiled Engine.open."""
    import pstats
    st = pstats.Stats(str(path))
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in st.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({func})" if line else func
        rows.append((tottime, [where, f"{ncalls:,}", f"{tottime:.3f}", f"{cumtime:.3f}",
                               f"{100 * tottime / total:.0f}%"]))
    rows.sort(key=lambda r: -r[0])
    print_table(f"cProfile of Engine.open, {path.stem} ({total:.2f} s under the profiler)",
                ["function", "calls", "own s", "cum s", "own %"], [r for _, r in rows[:limit]])


def loaded_bytes(helios_dir: Path, redis_dir: Path, redis_cfg: dict) -> tuple[int, int]:
    """Bytes of the files each system reads at start-up."""
    h = sum(p.stat().st_size for p in helios_dir.iterdir() if p.name != "helios.lock")
    if redis_cfg.get("appendonly") == "yes":
        r = dir_bytes(redis_dir / "appendonlydir")
    else:
        r = (redis_dir / "dump.rdb").stat().st_size
    return h, r


def main() -> None:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="timed loads per system and scenario (median kept)")
    p.add_argument("--profile", action="store_true", help="also cProfile one Engine.open per scenario")
    p.add_argument("--child-open", metavar="DIR", help=HIDDEN)
    p.add_argument("--profile-to", help=HIDDEN)
    args = p.parse_args()
    if args.child_open:
        child_open(args.child_open, args.profile_to)
        return

    quiet_helios_logs()
    n = args.keys
    print(f"recovery benchmark: {n:,} keys, {args.repeat} loads each", flush=True)
    results: dict[str, dict] = {}
    with scratch_dir("recovery") as root:
        profile_dir = root if args.profile else None
        sc = prepare(root, n)
        for name in ("aof-only", "snapshot"):
            results[name] = measure(name, sc[name]["helios"], sc[name]["redis"], args.repeat, profile_dir)
        add_overwrites(sc["_then"])
        then = sc["_then"]
        results["snapshot+aof"] = measure("snapshot+aof", then["helios"], then["redis"], args.repeat,
                                          profile_dir)
        if profile_dir is not None:
            for name in results:
                summarise_profile(profile_dir / f"{name}.prof")

    rows = []
    for name, r in results.items():
        goal = "-" if name == "snapshot" else ("met" if r["ratio"] <= GOAL_RATIO else "NOT met")
        rows.append([name, f"{r['keys']:,}", f"{r['replayed']:,}", fmt_ms(r["helios_seconds"]),
                     fmt_ms(r["redis_seconds"]), f"{r['ratio']:.2f}x", goal,
                     fmt_ms(r["helios_spawn_to_ready"]), fmt_ms(r["redis_spawn_to_ready"]),
                     f"{r['helios_file_bytes'] / 1e6:.0f} / {r['redis_file_bytes'] / 1e6:.0f} MB"])
    print_table(f"Recovery of {n:,} keys (median of {args.repeat}; goal: HELIOS <= {GOAL_RATIO:g}x redis)",
                ["scenario", "keys", "aof records", "helios open", "redis load", "ratio",
                 f"goal {GOAL_RATIO:g}x", "helios spawn->ready", "redis spawn->ready", "files h / r"],
                rows)
    if args.json:
        emit_json({"benchmark": "recovery", "keys": n, "machine": machine_note(), "goal_ratio": GOAL_RATIO,
                   "scenarios": results})


if __name__ == "__main__":
    main()
