"""ATLAS: the durable key-value engine (keyspace, one command table, AOF, snapshots, recovery)."""

from helios_core.atlas.engine import Engine

__all__ = ["Engine"]
