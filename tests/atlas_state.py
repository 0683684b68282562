"""Comparable images of an engine's keyspace, for recovery tests."""

from __future__ import annotations

from helios_core.atlas.engine import Engine
from helios_core.atlas.zset import ZSet


def state(engine: Engine, now_ms: int | None = None) -> dict:
    """{key: (value or sorted (score, member) pairs, expiry)} of the live (unexpired) keys."""
    ks = engine.ks
    out = {}
    for key, value in ks.data.items():
        exp = ks.expires.get(key)
        if now_ms is not None and exp is not None and exp <= now_ms:
            continue
        out[key] = (list(value.items()) if isinstance(value, ZSet) else value, exp)
    return out


def recovered_data(path) -> dict:
    """What a fresh engine recovers from the data dir at `path` (raw keyspace dict)."""
    from helios_core.config import AtlasConfig

    eng = Engine.open(path, AtlasConfig())
    try:
        return dict(eng.ks.data)
    finally:
        eng.close()
