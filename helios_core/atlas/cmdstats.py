"""Per-command statistics: INFO commandstats and latencystats as Redis 7.0 reports them.

For each command (a container's subcommand counts under its own name, `config|get`, and the
container only for its own arity error, as in Redis) ATLAS keeps

  calls           times it ran, failed ones included
  usec            the time its handler ran: execution, not network or queueing time (the
                  engine's one perf_counter_ns pair around the handler, `Engine.execute`)
  rejected_calls  refused before running: wrong arity, NOAUTH, OOM, MISCONF, not allowed inside
                  MULTI, from a script or in RESP2 subscribed mode
  failed_calls    ran and answered an error

and a latency histogram for INFO latencystats' percentiles.  A command that blocks counts once,
when it is served, times out or is unblocked; an unknown command or subcommand counts nowhere
(its name comes from the client: counting it would let anyone grow the table).

Each command's numbers are one list (`new_record`), made once and kept: the engine's dispatch
cache holds it beside the command, so counting a call is three list increments and no lookup.
CONFIG RESETSTAT (`clear()`) zeroes the records in place for that reason.

The histogram buckets a duration t (ns) by the bit length of t*t: two buckets per power of two
(a value is known within a factor of 1.42; Redis's HdrHistogram keeps two significant digits),
for one multiplication per call.  A percentile is reported as its bucket's highest value, as
HdrHistogram does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from math import isqrt
from typing import Any

from helios_core.atlas.commands.keyspecs import SUBCOMMANDS

__all__ = ["CommandStats", "new_record", "CALLS", "NS", "REJECTED", "FAILED", "HIST", "PERCENTILES"]

_CONTAINERS = frozenset(name.split("|", 1)[0] for name in SUBCOMMANDS)
PERCENTILES = (50.0, 99.0, 99.9)  # latency-tracking-info-percentiles' default
# A record: [calls, total ns, rejected, failed, then the histogram: slot HIST + (t*t).bit_length()]
CALLS, NS, REJECTED, FAILED, HIST = 0, 1, 2, 3, 4
_SLOTS = HIST + 129  # t < 2**64 ns


def new_record() -> list[int]:
    return [0] * _SLOTS


def add(rec: list[int], took_ns: int, failed: bool) -> None:
    """One call that ran (`failed`: it answered an error).  Engine.execute inlines this."""
    rec[CALLS] += 1
    rec[NS] += took_ns
    rec[HIST + (took_ns * took_ns).bit_length()] += 1
    if failed:
        rec[FAILED] += 1


class CommandStats(Mapping[str, int]):
    """Calls by command name (what total_commands_processed and ops/sec sum), over the records."""

    def __init__(self) -> None:
        self.records: dict[str, list[int]] = {}  # bounded by the command table: names never come from clients

    def record_for(self, name: str) -> list[int]:
        rec = self.records.get(name)
        if rec is None:
            rec = self.records[name] = new_record()
        return rec

    def __getitem__(self, name: str) -> int:
        rec = self.records[name]
        if not rec[CALLS]:
            raise KeyError(name)
        return rec[CALLS]

    def __iter__(self) -> Iterator[str]:
        return (name for name, rec in self.records.items() if rec[CALLS])

    def __len__(self) -> int:
        return sum(1 for rec in self.records.values() if rec[CALLS])

    def clear(self) -> None:
        """CONFIG RESETSTAT: every number back to 0 (in place: the dispatch cache holds the records)."""
        for rec in self.records.values():
            rec[:] = new_record()

    def reject(self, name: str) -> None:
        self.record_for(name)[REJECTED] += 1

    def info(self) -> list[tuple[str, str]]:
        """INFO commandstats' fields, by name: every command that ran or was refused."""
        out = []
        for name in sorted(self.records):
            calls, ns, rejected, failed = self.records[name][:HIST]
            if calls or rejected or failed:
                usec = ns // 1000
                out.append((f"cmdstat_{name}",
                            f"calls={calls},usec={usec},usec_per_call={usec / calls if calls else 0:.2f},"
                            f"rejected_calls={rejected},failed_calls={failed}"))
        return out

    def latency(self, percentiles: tuple[float, ...] = PERCENTILES) -> list[tuple[str, str]]:
        """INFO latencystats' fields: each command's percentiles, in microseconds."""
        out = []
        for name in sorted(self.records):
            rec = self.records[name]
            total = rec[CALLS]
            if total:
                parts = [f"p{p:g}={_at_percentile(rec, total, p) / 1000:.3f}" for p in percentiles]
                out.append((f"latency_percentiles_usec_{name}", ",".join(parts)))
        return out

    def histograms(self, names: Iterable[str] | None) -> dict[bytes, Any]:
        """LATENCY HISTOGRAM's reply: for each command named (a container: its subcommands too;
        None: every command) that ran since the last reset, its calls and the cumulative count of
        calls under each power of two of microseconds from 1 (Redis's log iteration from 1024 ns)."""
        if names is None:
            wanted = sorted(self.records)
        else:
            wanted = []
            for name in names:
                wanted.append(name)
                if name in _CONTAINERS:
                    wanted.extend(sorted(n for n in self.records if n.startswith(name + "|")))
        out: dict[bytes, Any] = {}
        for name in dict.fromkeys(wanted):
            rec = self.records.get(name)  # (never record_for: the names come from the client)
            if rec is None or not rec[CALLS]:
                continue
            buckets: dict[int, int] = {}
            seen = 0
            for k in range(10, 65):
                # durations under 2**k ns: t*t < 2**(2k), the slots up to bit length 2k
                count = sum(rec[HIST:HIST + 2 * k + 1])
                if count > seen:
                    buckets[((1 << k) - 1) // 1000] = count
                    seen = count
                if seen == rec[CALLS]:
                    break
            out[name.encode()] = {b"calls": rec[CALLS], b"histogram_usec": buckets}
        return out


def _at_percentile(rec: list[int], total: int, percentile: float) -> int:
    """HdrHistogram's value_at_percentile: the highest value of the bucket the count reaches."""
    want = max(int(percentile / 100 * total + 0.5), 1)
    seen = 0
    for slot in range(HIST, len(rec)):
        seen += rec[slot]
        if seen >= want:
            bits = slot - HIST  # t*t < 2**bits
            return isqrt((1 << bits) - 1) if bits else 0
    return 0
