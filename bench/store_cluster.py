"""Store operations/s on a three-primary Redis Cluster next to one redis-server, through HELIOS's Store.

One workload, run against each: C concurrent coroutines (default 50) in this
process share OPS rounds (default 20,000); a round is what a rate-limited KV
request costs the store: a RATE_TAKE script on the caller's bucket
(`rate:{auth}:user:N`, as the gateway names it: every bucket under the auth
keys' tag, so all on one primary), a GET of a value (`kv:N`, any slot), and
every tenth round a SET of one.  Both servers run `appendonly yes`,
`appendfsync everysec`, on unused loopback ports; the cluster is made by
`redis-cli --cluster create` (tests/redis_cluster.py), the single server is
one more redis-server started the same way.

What it measures: the cost of the cluster client path (slot routing, one
pool per node) against RemoteStore's single pool, with one client process.
On a small machine the client is the bottleneck and the three primaries share
its cores, so it is not a scale-out number: a cluster pays off when its
primaries have machines (and many gateways share them).

    .venv/bin/python bench/store_cluster.py [--ops 20000] [--clients 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helios_core.ratelimit import BUCKET_PREFIX, RATE_TAKE_OP  # noqa: E402
from helios_core.store.base import Store  # noqa: E402
from helios_core.store.cluster import ClusterStore  # noqa: E402
from helios_core.store.remote import RemoteStore  # noqa: E402
from tests.redis_cluster import RedisClusterGroup  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

USERS = 1000
VALUES = 10_000
DURABLE = ("--appendonly", "yes", "--appendfsync", "everysec")


async def workload(store: Store, ops: int, clients: int) -> float:
    """Rounds per second."""
    for i in range(0, VALUES, 500):
        await asyncio.gather(*(store.set(f"kv:{j}", b"v" * 100) for j in range(i, i + 500)))
    left = ops
    now = int(time.time() * 1000)

    async def client(c: int) -> None:
        nonlocal left
        n = c
        while left > 0:
            left -= 1
            n += 7919
            await store.run_script(RATE_TAKE_OP, [f"{BUCKET_PREFIX}user:{n % USERS}"], [1_000_000, 60, now, 1],
                                   durable=False)
            await store.get(f"kv:{n % VALUES}")
            if n % 10 == 0:
                await store.set(f"kv:{n % VALUES}", b"w" * 100)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return ops / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", type=int, default=20_000, help="rounds per store (default 20000)")
    p.add_argument("--clients", type=int, default=50, help="concurrent coroutines (default 50)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON object")
    args = p.parse_args()
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if not server or not cli:
        sys.exit("needs redis-server and redis-cli")
    results: dict[str, Any] = {"ops": args.ops, "clients": args.clients}
    single = RedisServer(server, args=DURABLE).start()
    try:
        async def run_single() -> float:
            store = RemoteStore(f"redis://127.0.0.1:{single.port}/0")
            try:
                return await workload(store, args.ops, args.clients)
            finally:
                await store.close()

        results["single_rounds_per_s"] = round(asyncio.run(run_single()))
    finally:
        single.stop()
    group = RedisClusterGroup(server, cli).start()
    try:
        async def run_cluster() -> float:
            store = ClusterStore(group.url)
            try:
                await store.ping()
                return await workload(store, args.ops, args.clients)
            finally:
                await store.close()

        results["cluster_rounds_per_s"] = round(asyncio.run(run_cluster()))
    finally:
        group.stop()
    results["cluster_vs_single"] = round(results["cluster_rounds_per_s"] / results["single_rounds_per_s"], 2)
    print(f"one redis-server: {results['single_rounds_per_s']:,} rounds/s; three-primary cluster: "
          f"{results['cluster_rounds_per_s']:,} rounds/s ({results['cluster_vs_single']}x); "
          f"{args.clients} clients, {args.ops:,} rounds (RATE_TAKE + GET, a SET every tenth)")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
