"""`export_engine`: the engine's atlas_* on a process's /metrics wherever an embedded store runs it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from helios_core.atlas.metrics import export_engine
from helios_core.config import AtlasConfig
from helios_core.store.embedded import EmbeddedStore


def test_an_embedded_store_exports_its_engine_until_undone(tmp_path: Path) -> None:
    async def main() -> tuple[bytes, bytes]:
        store = await EmbeddedStore.open(tmp_path / "data", AtlasConfig(save=()))
        registry = CollectorRegistry(auto_describe=True)
        try:
            undo = export_engine(store, registry)
            await store.set("k", b"v")
            during = generate_latest(registry)
            undo()
            return during, generate_latest(registry)
        finally:
            await store.close()

    during, after = asyncio.run(main())
    assert b"atlas_keys 1.0" in during and b"atlas_aof_bytes_total" in during
    assert b"atlas_" not in after
