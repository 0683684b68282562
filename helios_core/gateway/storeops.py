"""Operations on the store behind the gateway that the Store interface does not offer.

Snapshots, AOF compaction and engine statistics belong to a backend, not to
the key-value contract.  They are reachable only when the gateway runs on an
`EmbeddedStore` (its ATLAS engine is in this process); on any other backend
the admin endpoints answer 501.  (Once atlasd exists, these become BGSAVE and
INFO over its socket.)
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from helios_core.errors import HeliosError
from helios_core.store.base import Store
from helios_core.store.embedded import EmbeddedStore

__all__ = ["StoreOps"]


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class StoreOps:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine if isinstance(store, EmbeddedStore) else None
        self.started = time.time()

    def _need_engine(self, what: str) -> Any:
        if self.engine is None:
            raise HeliosError(f"{what} is available only when the gateway runs on an embedded store",
                              code="not_supported", status=501)
        return self.engine

    async def snapshot(self) -> dict[str, Any]:
        """Take a background snapshot (which also rotates and prunes the AOF) and wait for it."""
        engine = self._need_engine("snapshot")
        t0 = time.perf_counter()
        info = await engine.bgsave()
        return {**dataclasses.asdict(info), "seconds": round(time.perf_counter() - t0, 3)}

    def ready(self) -> tuple[bool, str]:
        engine = self.engine
        if engine is None:
            return True, "ok"
        if engine.aof_error is not None:
            return False, f"store refuses writes: {engine.aof_error}"
        return True, "ok"

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uptime_seconds": round(time.time() - self.started, 1),
                               "memory_rss_bytes": _rss_bytes(), "backend": type(self.store).__name__}
        engine = self.engine
        if engine is None:
            return out
        parts = engine.dir.aof_parts()
        out.update({
            "keys": len(engine.ks),
            "seq": engine.seq,
            "appendfsync": engine.policy,
            "aof_bytes": sum(p.stat().st_size for p in parts if p.exists()),
            "aof_parts": len(parts),
            "aof_error": engine.aof_error,
            "snapshot_in_progress": engine.snapshot_in_progress,
            "snapshots": engine.stats.snapshots,
            "last_snapshot_ms": engine.stats.last_snapshot_ms,
            "last_snapshot_status": engine.stats.last_snapshot_status,
            "fsyncs": engine.stats.fsync_count,
            "expired_keys": engine.stats.expired_keys,
            "data_dir": str(engine.data_path()),
        })
        return out
