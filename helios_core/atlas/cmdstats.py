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

INFO errorstats (`ErrorStats`, kept beside the records: CONFIG RESETSTAT clears both) counts every
error reply sent, once, under its code, the first word of its text (`error_code`), as Redis 7.0's
afterErrorReply does.  The engine counts on its error paths only (a refused or failed command, EXEC's
failed items, a script's failed calls); a connection counts the errors it makes itself (NOAUTH,
EXECABORT, a command refused while MULTI queues).  A script's reply carrying an error one of its
calls made is that error, counted already (`CountedError`: Redis's ignore_error_stats_update).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from math import isqrt
from typing import Any

from helios_core.atlas.commands.subcommands import BY_CONTAINER
from helios_core.errors import CommandError
from helios_core.observability.logging import get_logger

__all__ = ["CommandStats", "ErrorStats", "CountedError", "error_code", "new_record", "CALLS", "NS", "REJECTED",
           "FAILED", "HIST", "PERCENTILES", "ERRORSTATS_LIMIT", "ERRORSTATS_DISABLED"]

log = get_logger("atlas.cmdstats")

_CONTAINERS = frozenset(BY_CONTAINER)
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
        self.errors = ErrorStats()  # INFO errorstats and total_error_replies

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
        self.errors.clear()

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


# -- INFO errorstats ---------------------------------------------------------------------------------

# Error codes come from clients (a script's `redis.error_reply('X1 boom')`, `{err='...'}`): the table
# keeps at most this many, Redis's ERROR_STATS_NUMBER.  Redis 7.0.15 has no bound (a script could grow
# its table for ever); 7.2 added this one and what happens at it, which ATLAS does: the 129th code
# logs the codes seen, empties the table but for ERRORSTATS_DISABLED:count=1 and counts no code more
# until CONFIG RESETSTAT (total_error_replies goes on counting).
ERRORSTATS_LIMIT = 128
ERRORSTATS_DISABLED = "ERRORSTATS_DISABLED"


class CountedError(CommandError):
    """An error reply whose code was counted where it arose: a script's call that failed, whose error
    the script raised or returned (Redis's ignore_error_stats_update)."""

def error_code(error: BaseException | str) -> str:
    """The code an error reply counts under: the first word of "-CODE text", looked for in the line's
    first 32 bytes as Redis does (no space there: ERR).  An error that is no CommandError goes out as
    "ERR ..." (the connection's wording for a HeliosError or a handler's bug)."""
    if not isinstance(error, str | CommandError):
        return "ERR"
    text = str(error)[:31]  # (the 31 bytes after "-" are at most 31 characters)
    if "\r" in text or "\n" in text:  # (sent as spaces: encode_error)
        text = text.replace("\r", " ").replace("\n", " ")
    head = text.encode("utf-8", "replace")
    space = head.find(b" ", 0, 31)
    if space < 0:
        return "ERR"
    return head[:space].decode("utf-8", "replace")


class ErrorStats:
    """Error replies sent, by code (INFO errorstats) and in all (total_error_replies)."""

    __slots__ = ("codes", "total", "enabled")

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}  # at most ERRORSTATS_LIMIT: codes come from clients
        self.total = 0
        self.enabled = True

    def add(self, error: BaseException | str) -> None:
        """One error reply sent (`error`: the exception or text it was made from)."""
        self.total += 1
        if not self.enabled:
            return
        code = error_code(error)
        codes = self.codes
        n = codes.get(code)
        if n is not None:
            codes[code] = n + 1
        elif len(codes) < ERRORSTATS_LIMIT:
            codes[code] = 1
        else:
            log.warning("errorstats stopped counting error codes: there are more than the limit (may be a misuse "
                        "of a script's error_reply); see INFO errorstats, CONFIG RESETSTAT counts again",
                        limit=ERRORSTATS_LIMIT, codes=", ".join(sorted(codes)))
            self.codes = {ERRORSTATS_DISABLED: 1}
            self.enabled = False

    def clear(self) -> None:
        """CONFIG RESETSTAT."""
        self.codes = {}
        self.total = 0
        self.enabled = True

    def info(self) -> list[tuple[str, str]]:
        """INFO errorstats' fields, in Redis's order (its radix tree's: by the codes' bytes)."""
        return [(f"errorstat_{code}", f"count={n}")
                for code, n in sorted(self.codes.items(), key=lambda item: item[0].encode("utf-8", "replace"))]


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
