"""Memory per key: HELIOS process RSS growth vs redis-server used_memory growth.

N keys (16-byte keys, 100-byte values) are stored two ways in each system:

  sets        N SETs into an empty store.
              HELIOS: Engine.execute in a fresh interpreter (appendfsync no, the AOF
              flushed every 10,000 writes); redis: redis-cli --pipe.
  recovered   the same N keys loaded at start-up from a snapshot.
              HELIOS: Engine.open on a dump.rdb; redis: restart on its dump.rdb.

HELIOS: RSS (VmRSS) of its process after imports and before the keys, then
after them (gc.collect() both times); the growth is everything the keys cost
the process, allocator overhead included.  redis-server: `used_memory` growth
from INFO memory (what its allocator handed out), with `used_memory_rss`
growth shown as well for an RSS-to-RSS comparison.

Goal: HELIOS RSS growth per key at most 2x redis-server's used_memory growth.

    .venv/bin/python bench/memory.py --keys 1000000 [--json]
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HIDDEN,
    RedisServer,
    child_result,
    emit_json,
    fill_helios,
    machine_note,
    make_parser,
    pairs,
    print_table,
    quiet_helios_logs,
    rss_bytes,
    run_child,
    scratch_dir,
    snapshot_helios,
)

GOAL_RATIO = 2.0
SCRIPT = Path(__file__).resolve()


def _pymalloc_size(n: int) -> int:
    """Bytes the allocator really gives an object of n bytes (pymalloc's 16-byte classes up to 512)."""
    return (n + 15) // 16 * 16 if n <= 512 else n


def child(mode: str, data_dir: str, n: int) -> None:
    """In a fresh interpreter: RSS before and after the N keys arrive."""
    quiet_helios_logs()
    from helios_core.atlas.engine import Engine
    from helios_core.config import AtlasConfig

    config = AtlasConfig(appendfsync="no", save=(), snapshot_on_aof_bytes=0)
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    if mode == "sets":
        eng = Engine.open(data_dir, config)
        execute = eng.execute
        for i, (k, v) in enumerate(pairs(0, n), 1):
            execute([b"SET", k, v])
            if i % 10_000 == 0:
                eng.flush_sync()
        eng.flush_sync()
    else:
        eng = Engine.open(data_dir, config)
    seconds = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()
    data = eng.ks.data
    some_key, some_value = next(iter(data.items()))
    # Where the bytes go, as Python sees it (the rest is allocator slack and fragmentation).
    parts = {"dict": sys.getsizeof(data) / len(data), "key_object": _pymalloc_size(sys.getsizeof(some_key)),
             "value_object": _pymalloc_size(sys.getsizeof(some_value))}
    child_result({"mode": mode, "keys": len(data), "rss_before": before, "rss_after": after,
                  "seconds": seconds, "parts": parts})
    os._exit(0)


def redis_used(srv: RedisServer) -> tuple[int, int]:
    info = srv.client().info("memory")
    return int(info["used_memory"]), int(info["used_memory_rss"])


def main() -> None:
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--child", nargs=3, metavar=("MODE", "DIR", "N"), help=HIDDEN)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    quiet_helios_logs()
    n = args.keys
    print(f"memory benchmark: {n:,} keys", flush=True)
    rows: dict[str, dict] = {}
    with scratch_dir("memory") as root:
        # HELIOS, N SETs in a fresh process.
        r = run_child(SCRIPT, ["--child", "sets", str(root / "h-sets"), str(n)])
        h_sets = {"growth": r["rss_after"] - r["rss_before"], "parts": r["parts"], "keys": r["keys"]}
        # HELIOS, the same keys recovered from a snapshot.
        h_dir = root / "h-snap"
        fill_helios(h_dir, pairs(0, n))
        snapshot_helios(h_dir)
        r = run_child(SCRIPT, ["--child", "recovered", str(h_dir), str(n)])
        h_rec = {"growth": r["rss_after"] - r["rss_before"], "keys": r["keys"]}

        with RedisServer(root / "redis") as srv:
            srv.start()
            used0, rss0 = redis_used(srv)
            srv.load_pairs(pairs(0, n))
            used1, rss1 = redis_used(srv)
            keys = srv.client().dbsize()
            srv.client().save()
        r_sets = {"used": used1 - used0, "rss": rss1 - rss0, "keys": keys}
        with RedisServer(root / "redis") as srv:  # restart: loads dump.rdb
            srv.start()
            used2, rss2 = redis_used(srv)
            keys = srv.client().dbsize()
        # An empty server's baseline is the same as the first start's.
        r_rec = {"used": used2 - used0, "rss": rss2 - rss0, "keys": keys}

    for name, h, r in (("sets", h_sets, r_sets), ("recovered", h_rec, r_rec)):
        if h["keys"] != n or r["keys"] != n:
            raise RuntimeError(f"{name}: expected {n} keys, helios has {h['keys']}, redis {r['keys']}")
        rows[name] = {
            "helios_rss_per_key": h["growth"] / n, "redis_used_per_key": r["used"] / n,
            "redis_rss_per_key": r["rss"] / n,
            "ratio": h["growth"] / r["used"],
            # With few keys redis's RSS may not grow at all (jemalloc keeps pages around).
            "ratio_rss_to_rss": h["growth"] / r["rss"] if r["rss"] > 0 else None,
        }

    table = []
    for name, x in rows.items():
        table.append([name, f"{n:,}", f"{x['helios_rss_per_key']:.0f} B", f"{x['redis_used_per_key']:.0f} B",
                      f"{x['ratio']:.2f}x", "met" if x["ratio"] <= GOAL_RATIO else "NOT met",
                      f"{x['redis_rss_per_key']:.0f} B",
                      "-" if x["ratio_rss_to_rss"] is None else f"{x['ratio_rss_to_rss']:.2f}x"])
    print_table(f"Memory per key, {n:,} keys of 16 + 100 bytes (goal: HELIOS <= {GOAL_RATIO:g}x redis used_memory)",
                ["stored by", "keys", "helios RSS", "redis used_memory", "ratio", f"goal {GOAL_RATIO:g}x",
                 "redis RSS", "ratio RSS/RSS"], table)
    parts = h_sets["parts"]
    known = sum(parts.values())
    print(f"\n  HELIOS per key as Python sees it: dict {parts['dict']:.0f} B + key object {parts['key_object']} B"
          f" + value object {parts['value_object']} B = {known:.0f} B"
          f" (of {rows['sets']['helios_rss_per_key']:.0f} B RSS growth)")
    if args.json:
        emit_json({"benchmark": "memory", "keys": n, "machine": machine_note(), "goal_ratio": GOAL_RATIO,
                   "scenarios": rows, "helios_parts_per_key": parts})


if __name__ == "__main__":
    main()
