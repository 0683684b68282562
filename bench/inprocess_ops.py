"""In-process SET/GET ops/s under each fsync policy, next to redis-benchmark.

HELIOS: a fresh interpreter per (policy, API) opens an empty engine, attaches
it to an asyncio loop and runs C concurrent coroutines (default 50) that
share OPS operations (default 100,000): first SETs, then GETs, of random keys
in a range of N (--keys).  Every SET awaits its durability, so under
`appendfsync always` the concurrent writers share fsyncs (group commit), and
under everysec/no they wait for the write of their batch.  Two APIs:

  engine   Engine.execute + pending_seq + wait_durable (the bare engine)
  store    EmbeddedStore.execute (the Store interface applications use)

redis-server: `redis-benchmark -t set,get -n OPS -c C -d 100 -r N` against a
server with appendonly yes and the matching appendfsync.  This is not the
same thing: redis-benchmark goes over loopback TCP with a client process on
the second core, HELIOS runs in the caller's process on one core.  It is
there for reference, so the ratio has no goal.

    .venv/bin/python bench/inprocess_ops.py [--keys 1000000] [--ops 100000] [--clients 50] [--json]
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HIDDEN,
    REDIS_BENCHMARK,
    RedisServer,
    child_result,
    emit_json,
    key,
    machine_note,
    make_parser,
    parse_count,
    percentiles,
    print_table,
    quiet_helios_logs,
    run_child,
    scratch_dir,
    value,
)

SCRIPT = Path(__file__).resolve()
POLICIES = ("always", "everysec", "no")
APIS = ("engine", "store")


# -- HELIOS (in a child process) -------------------------------------------------------------

async def _engine_worker(eng: Any, cmd: bytes, left: list[int], n: int, rng: random.Random,
                         lat: list[float]) -> None:
    is_set = cmd == b"SET"
    while left[0] > 0:
        left[0] -= 1
        i = rng.randrange(n)
        t = time.perf_counter()
        eng.execute([b"SET", key(i), value(i)] if is_set else [b"GET", key(i)])
        seq = eng.pending_seq()
        if seq:
            await eng.wait_durable(seq)
        lat.append(time.perf_counter() - t)


async def _store_worker(store: Any, cmd: bytes, left: list[int], n: int, rng: random.Random,
                        lat: list[float]) -> None:
    is_set = cmd == b"SET"
    while left[0] > 0:
        left[0] -= 1
        i = rng.randrange(n)
        t = time.perf_counter()
        if is_set:
            await store.execute(b"SET", key(i), value(i))
        else:
            await store.get(key(i))
        lat.append(time.perf_counter() - t)


async def _run(data_dir: str, policy: str, api: str, n: int, ops: int, clients: int) -> dict[str, Any]:
    from helios_core.config import AtlasConfig
    from helios_core.store import EmbeddedStore

    store = await EmbeddedStore.open(data_dir, AtlasConfig(appendfsync=policy, save=(), snapshot_on_aof_bytes=0))
    eng = store.engine
    out: dict[str, Any] = {"policy": policy, "api": api}
    for cmd in (b"SET", b"GET"):
        left = [ops]
        lat: list[float] = []
        fsyncs = eng.stats.fsync_count
        if api == "engine":
            coros = [_engine_worker(eng, cmd, left, n, random.Random(c), lat) for c in range(clients)]
        else:
            coros = [_store_worker(store, cmd, left, n, random.Random(c), lat) for c in range(clients)]
        t0 = time.perf_counter()
        await asyncio.gather(*coros)
        seconds = time.perf_counter() - t0
        out[cmd.decode()] = {"ops_per_s": ops / seconds, "seconds": seconds, "latency": percentiles(lat),
                             "fsyncs": eng.stats.fsync_count - fsyncs}
    out["keys"] = len(eng.ks)
    await store.close()
    return out


def child(data_dir: str, policy: str, api: str, n: int, ops: int, clients: int) -> None:
    quiet_helios_logs()
    child_result(asyncio.run(_run(data_dir, policy, api, n, ops, clients)))
    os._exit(0)


# -- redis-benchmark -----------------------------------------------------------------------

def redis_ops(root: Path, policy: str, n: int, ops: int, clients: int) -> dict[str, Any]:
    with RedisServer(root / f"redis-{policy}", appendonly="yes", appendfsync=policy) as srv:
        srv.start()
        proc = subprocess.run([REDIS_BENCHMARK, "-p", str(srv.port), "-t", "set,get", "-n", str(ops),
                               "-c", str(clients), "-d", "100", "-r", str(n), "--csv"],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"redis-benchmark failed: {proc.stderr}")
        keys = srv.client().dbsize()
    out: dict[str, Any] = {"policy": policy, "keys": keys}
    for row in csv.DictReader(io.StringIO(proc.stdout)):
        out[row["test"]] = {"ops_per_s": float(row["rps"]),
                            "latency": {"p50": float(row["p50_latency_ms"]) / 1e3,
                                        "p99": float(row["p99_latency_ms"]) / 1e3,
                                        "max": float(row["max_latency_ms"]) / 1e3}}
    return out


# -- main ----------------------------------------------------------------------------------

def main() -> None:
    p = make_parser(__doc__.split("\n\n")[0])
    p.epilog = "--keys is the key range (redis-benchmark -r), not a preload."
    p.add_argument("--ops", type=parse_count, default=100_000, help="operations per test (default 100_000)")
    p.add_argument("--clients", type=parse_count, default=50, help="concurrent clients/coroutines (default 50)")
    p.add_argument("--repeat", type=parse_count, default=3, help="runs of everything (median kept, default 3)")
    p.add_argument("--policies", default=",".join(POLICIES), help="fsync policies (default always,everysec,no)")
    p.add_argument("--child", nargs=3, metavar=("DIR", "POLICY", "API"), help=HIDDEN)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], args.keys, args.ops, args.clients)
        return
    n, ops, clients = args.keys, args.ops, args.clients
    policies = [x for x in args.policies.split(",") if x]
    print(f"in-process ops benchmark: {ops:,} SETs then {ops:,} GETs, {clients} clients, keys in a range of {n:,}",
          flush=True)
    results: dict[str, Any] = {}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {p: {w: [] for w in ("redis", *APIS)} for p in policies}
    for rep in range(args.repeat):  # interleaved, so every system sees the same machine noise
        for policy in policies:
            with scratch_dir("ops") as root:
                runs[policy]["redis"].append(redis_ops(root, policy, n, ops, clients))
                for api in APIS:
                    runs[policy][api].append(run_child(SCRIPT, ["--child", str(root / f"h-{api}"), policy, api,
                                                                "--keys", str(n), "--ops", str(ops),
                                                                "--clients", str(clients)]))
            line = ", ".join(f"{who} SET {runs[policy][who][-1]['SET']['ops_per_s']:,.0f}/s "
                             f"GET {runs[policy][who][-1]['GET']['ops_per_s']:,.0f}/s" for who in ("redis", *APIS))
            print(f"  run {rep + 1}, {policy}: {line}", flush=True)
    for policy in policies:
        results[policy] = {}
        for who, xs in runs[policy].items():
            # Per command, the run with the median ops/s (its latencies come with it).
            results[policy][who] = {cmd: sorted((x[cmd] for x in xs), key=lambda c: c["ops_per_s"])[len(xs) // 2]
                                    for cmd in ("SET", "GET")}
            results[policy][who]["runs"] = xs

    rows = []
    for policy in policies:
        r = results[policy]["redis"]
        for who in ("redis", *APIS):
            x = results[policy][who]
            row = [policy, "redis-benchmark" if who == "redis" else f"helios {who}"]
            for cmd in ("SET", "GET"):
                ratio = x[cmd]["ops_per_s"] / r[cmd]["ops_per_s"]
                x[cmd]["ratio"] = ratio
                lat = x[cmd]["latency"]
                row += [f"{x[cmd]['ops_per_s']:,.0f}", f"{ratio:.2f}x",
                        f"{lat['p50'] * 1e3:.3f} / {lat['p99'] * 1e3:.3f}"]
            row.append(f"{x['SET']['fsyncs']:,}" if who != "redis" else "")
            rows.append(row)
    print_table(f"Ops/s, {ops:,} each, {clients} clients, median of {args.repeat} (ratio: helios / "
                f"redis-benchmark, higher is better for helios; no goal: in-process vs network)",
                ["appendfsync", "who", "SET/s", "ratio", "SET ms p50 / p99", "GET/s", "ratio", "GET ms p50 / p99",
                 "fsyncs during SETs"], rows)
    if args.json:
        emit_json({"benchmark": "inprocess_ops", "keys": n, "ops": ops, "clients": clients,
                   "machine": machine_note(), "results": results})


if __name__ == "__main__":
    main()
