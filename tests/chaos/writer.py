"""A writer process for the kill -9 test.

Opens DIR with appendfsync always and runs concurrent writers forever.  Each
acknowledged write is printed (and flushed) only after the engine says it is
durable; the test kills this process with SIGKILL at random moments and then
checks that every printed write survived.  Background snapshots run back to
back, so many kills land during a snapshot or an AOF rotation.

    python -m tests.chaos.writer DIR WRITER_ID
"""

from __future__ import annotations

import asyncio
import sys

from helios_core.config import AtlasConfig
from helios_core.store import EmbeddedStore


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def writer(store: EmbeddedStore, run: str, w: int) -> None:
    i = 0
    while True:
        i += 1
        key = f"{run}:{w}:{i}"
        value = f"v{i}" * (1 + i % 7)
        if i % 5 == 0:
            await store.transact(lambda t, k=key, v=value, n=i: (t.set(k, v), t.zadd(f"{run}:z", {k: n}),
                                                           t.incrby(f"{run}:count:{w}", 1)))
            say(f"ACKTX {key} {value} {w}")
        else:
            await store.set(key, value)
            say(f"ACK {key} {value}")


async def snapshots(store: EmbeddedStore) -> None:
    while True:
        say("SNAP START")
        try:
            await store.engine.bgsave()
            say("SNAP DONE")
        except Exception as e:  # noqa: BLE001 - report and go on
            say(f"SNAP FAIL {e}")
        await asyncio.sleep(0.05)


async def main(data_dir: str, run: str) -> None:
    config = AtlasConfig(appendfsync="always", save=())
    store = await EmbeddedStore.open(data_dir, config)
    say("READY")
    await asyncio.gather(*(writer(store, run, w) for w in range(8)), snapshots(store))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
