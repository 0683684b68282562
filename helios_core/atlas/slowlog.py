"""The slow log: commands that ran longer than `slowlog-log-slower-than` microseconds.

Shaped after Redis's slowlog.c: a bounded list, newest first, each entry an id
(monotonic, survives SLOWLOG RESET), the Unix time it ran, its duration in
microseconds, its arguments (at most 32, each cut to 128 bytes with Redis's
"... (N more bytes)" note, the last of 32 replaced by "... (N more arguments)"),
and the client's address and name.

The engine times each command (`Engine.execute`) and calls `maybe_record`;
only the comparison runs per command, the entry is built for slow ones only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["SlowLog", "SlowEntry", "MAX_ARGC", "MAX_ARGLEN"]

MAX_ARGC = 32      # SLOWLOG_ENTRY_MAX_ARGC
MAX_ARGLEN = 128   # SLOWLOG_ENTRY_MAX_STRING


@dataclass(frozen=True, slots=True)
class SlowEntry:
    id: int
    time_s: int
    duration_us: int
    args: list[bytes]
    addr: bytes
    name: bytes

    def reply(self) -> list:
        return [self.id, self.time_s, self.duration_us, self.args, self.addr, self.name]


def _trim_args(argv: list[bytes]) -> list[bytes]:
    n = len(argv)
    shown = argv[:MAX_ARGC]
    out: list[bytes] = []
    for i, a in enumerate(shown):
        if i == MAX_ARGC - 1 and n > MAX_ARGC:
            out.append(b"... (%d more arguments)" % (n - MAX_ARGC + 1))
            break
        if len(a) > MAX_ARGLEN:
            out.append(a[:MAX_ARGLEN] + b"... (%d more bytes)" % (len(a) - MAX_ARGLEN))
        else:
            out.append(bytes(a))
    return out


@dataclass
class SlowLog:
    slower_than_us: int = 10_000   # slowlog-log-slower-than; negative: off, 0: every command
    max_len: int = 128             # slowlog-max-len
    entries: deque[SlowEntry] = field(default_factory=deque)
    next_id: int = 0

    def maybe_record(self, argv: list[bytes], duration_us: int, now_ms: int, addr: str, name: bytes) -> None:
        limit = self.slower_than_us
        if limit < 0 or duration_us < limit:
            return
        self.entries.appendleft(SlowEntry(self.next_id, now_ms // 1000, duration_us, _trim_args(argv),
                                          addr.encode(), bytes(name)))
        self.next_id += 1
        self._bound()

    def set_max_len(self, n: int) -> None:
        self.max_len = n
        self._bound()

    def _bound(self) -> None:
        while len(self.entries) > self.max_len:
            self.entries.pop()

    def get(self, count: int) -> list[list]:
        """The newest `count` entries (all of them when count is negative), as SLOWLOG GET replies."""
        items = list(self.entries) if count < 0 else list(self.entries)[:count]
        return [e.reply() for e in items]

    def reset(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)
