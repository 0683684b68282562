"""Operations on the store behind the gateway that the Store interface does not offer.

Snapshots, AOF compaction and engine statistics belong to a backend, not to
the key-value contract.  On an `EmbeddedStore` they call the ATLAS engine in
this process; on a `RemoteStore` (atlasd, Redis, Valkey) they are the server
commands an operator would type: BGSAVE (then LASTSAVE until it moves),
BGREWRITEAOF, INFO and DBSIZE.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

from helios_core.errors import HeliosError
from helios_core.store.base import Store
from helios_core.store.embedded import EmbeddedStore
from helios_core.store.remote import RemoteStore

__all__ = ["StoreOps", "parse_info"]

SNAPSHOT_TIMEOUT_S = 600


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def parse_info(text: bytes | str) -> dict[str, str]:
    """INFO's "field:value" lines as a dict (sections and comments dropped)."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def _int(info: dict[str, str], name: str) -> int | None:
    try:
        return int(info[name])
    except (KeyError, ValueError):
        return None


class StoreOps:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine if isinstance(store, EmbeddedStore) else None
        self.remote = store if isinstance(store, RemoteStore) else None
        self.started = time.time()

    def _unsupported(self, what: str) -> HeliosError:
        return HeliosError(f"{what} is not available on a {type(self.store).__name__}",
                           code="not_supported", status=501)

    async def snapshot(self) -> dict[str, Any]:
        """Take a background snapshot (which also rotates and prunes the AOF) and wait for it."""
        t0 = time.perf_counter()
        if self.engine is not None:
            info = await self.engine.bgsave()
            return {**dataclasses.asdict(info), "seconds": round(time.perf_counter() - t0, 3)}
        if self.remote is None:
            raise self._unsupported("snapshot")
        return await self._remote_bgsave(t0)

    async def aof_rewrite(self) -> dict[str, Any]:
        """Compact the AOF.  ATLAS does it by snapshotting; Redis has BGREWRITEAOF."""
        if self.engine is not None:
            return await self.snapshot()
        if self.remote is None:
            raise self._unsupported("AOF rewrite")
        reply = await self.remote.execute("BGREWRITEAOF")
        return {"started": True, "reply": reply.decode(errors="replace") if isinstance(reply, bytes) else reply}

    async def _remote_bgsave(self, t0: float) -> dict[str, Any]:
        assert self.remote is not None
        remote = self.remote
        # rdb_saves counts finished saves (Redis 7+, atlasd); LASTSAVE (whole seconds) is the fallback.
        before = parse_info(await remote.execute("INFO", "persistence")).get("rdb_saves")
        before_last = int(await remote.execute("LASTSAVE"))
        await remote.execute("BGSAVE")
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
        delay = 0.02
        while True:  # the server tells when a save is done only through INFO and LASTSAVE
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
            info = parse_info(await remote.execute("INFO", "persistence"))
            if info.get("rdb_bgsave_in_progress") == "0":
                if info.get("rdb_last_bgsave_status") == "err":
                    raise HeliosError("the store's background save failed (rdb_last_bgsave_status:err); "
                                      "see the store server's log", code="snapshot_failed", status=500)
                saves = info.get("rdb_saves")
                if (saves != before) if before is not None else int(await remote.execute("LASTSAVE")) > before_last:
                    break
            if time.monotonic() > deadline:
                raise HeliosError(f"the store's background save did not finish within {SNAPSHOT_TIMEOUT_S} s",
                                  code="snapshot_timeout", status=503)
        return {"lastsave": int(await remote.execute("LASTSAVE")), "status": info.get("rdb_last_bgsave_status", "ok"),
                "seconds": round(time.perf_counter() - t0, 3)}

    def ready(self) -> tuple[bool, str]:
        engine = self.engine
        if engine is None:
            return True, "ok"
        if engine.aof_error is not None:
            return False, f"store refuses writes: {engine.aof_error}"
        return True, "ok"

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uptime_seconds": round(time.time() - self.started, 1),
                               "memory_rss_bytes": _rss_bytes(), "backend": type(self.store).__name__}
        engine = self.engine
        if engine is not None:
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
        elif self.remote is not None:
            info = parse_info(await self.remote.execute("INFO"))
            out.update({
                "keys": int(await self.remote.execute("DBSIZE")),
                "store_server": info.get("redis_version") or info.get("server_name"),
                "store_uptime_seconds": _int(info, "uptime_in_seconds"),
                "store_memory_bytes": _int(info, "used_memory"),
                "appendfsync": info.get("aof_fsync_policy") or info.get("appendfsync"),
                "aof_enabled": info.get("aof_enabled") == "1",
                "aof_bytes": _int(info, "aof_current_size"),
                "snapshot_in_progress": info.get("rdb_bgsave_in_progress") == "1",
                "last_snapshot_ms": (_int(info, "rdb_last_save_time") or 0) * 1000,
                "last_snapshot_status": info.get("rdb_last_bgsave_status"),
            })
        return out
