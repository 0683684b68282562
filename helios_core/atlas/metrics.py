"""ATLAS engine metrics for Prometheus, read from the engine's counters at scrape time.

One mechanism wherever the engine runs: atlasd registers `EngineCollector` in its metrics
registry (beside its own client counters), and a gateway or proxy with an embedded store
registers it in the process's `helios_core.observability.metrics.REGISTRY`, so `atlas_*` appear on
every daemon that holds the data (issue 13, "one metrics vocabulary").  Nothing is counted twice:
the collector only reads `engine.stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from helios_core.atlas.engine import Engine
    from helios_core.store.base import Store

__all__ = ["EngineCollector", "export_engine"]


def export_engine(store: Store, registry: CollectorRegistry | None = None) -> Callable[[], None]:
    """Put the engine's `atlas_*` on this process's /metrics when `store` runs it here (embedded).

    For every service that opens a store (``--data`` gives an embedded one): the gateway, the
    proxy.  `registry` defaults to the process's `observability.metrics.REGISTRY`.  Returns the
    undo, to call when the store closes (a no-op for a remote store, whose engine, if any, exports
    its own).
    """
    from helios_core.store.embedded import EmbeddedStore

    if not isinstance(store, EmbeddedStore):
        return lambda: None
    if registry is None:
        from helios_core.observability.metrics import REGISTRY

        registry = REGISTRY
    collector = EngineCollector(store.engine)
    registry.register(collector)
    target = registry
    return lambda: target.unregister(collector)


class EngineCollector:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> list[Any]:
        return []  # names are read at collect time; registering must not call collect() early

    def collect(self) -> Iterator[Any]:
        engine = self.engine
        stats = engine.stats
        yield CounterMetricFamily("atlas_aof_bytes", "Bytes appended to the AOF.", value=stats.aof_bytes_total)
        fsync = SummaryMetricFamily("atlas_aof_fsync_seconds", "Time spent in AOF fsync calls.")
        fsync.add_metric([], count_value=stats.fsync_count, sum_value=stats.fsync_seconds_total)
        yield fsync
        yield GaugeMetricFamily("atlas_snapshot_duration_seconds", "Duration of the last snapshot.",
                                value=stats.last_snapshot_seconds)
        yield CounterMetricFamily("atlas_snapshots", "Snapshots completed.", value=stats.snapshots)
        yield GaugeMetricFamily("atlas_snapshot_last_status_ok", "1 if the last snapshot succeeded, 0 if it failed.",
                                value=int(stats.last_snapshot_status == "ok"))
        yield CounterMetricFamily("atlas_snapshot_failures", "Snapshots that failed to start or finish.",
                                  value=stats.snapshot_failures)
        yield GaugeMetricFamily("atlas_snapshot_last_cow_bytes", "Copy-on-write bytes of the last snapshot child.",
                                value=stats.last_cow_size)
        error = GaugeMetricFamily("atlas_snapshot_last_error_info",
                                  "1 with the last snapshot's error as a label while it is failing.", labels=["error"])
        if stats.last_snapshot_error:
            error.add_metric([stats.last_snapshot_error[:200]], 1)
        yield error
        yield CounterMetricFamily("atlas_aof_delayed_fsync", "Writes postponed: a background fsync ran over 2 s.",
                                  value=stats.delayed_fsync)
        yield GaugeMetricFamily("atlas_snapshot_in_progress", "1 while a snapshot is being written.",
                                value=int(engine.snapshot_in_progress))
        yield GaugeMetricFamily("atlas_keys", "Keys in the keyspace (all databases).", value=engine.dbs.keys())
        yield GaugeMetricFamily("atlas_keys_with_expiry", "Keys with a TTL.", value=engine.dbs.expires())
        yield CounterMetricFamily("atlas_expired_keys", "Keys removed by expiry.", value=stats.expired_keys)
        cmds = CounterMetricFamily("atlas_commands", "Commands executed, by command.", labels=["cmd"])
        for name, n in sorted(stats.commands.items()):
            cmds.add_metric([name], n)
        yield cmds
        yield GaugeMetricFamily("atlas_aof_write_ok", "0 while AOF writes fail and writes are refused.",
                                value=int(engine.aof_error is None))
        yield GaugeMetricFamily("atlas_last_seq", "Sequence number of the last AOF record.", value=engine.seq)
