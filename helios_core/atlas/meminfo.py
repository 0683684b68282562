"""The process's memory as INFO reports it: resident bytes, and bytes written as Redis writes them.

Used by INFO (commands/server.py) and by the engine, which notes the resident size before it
loads the data directory (INFO used_memory_startup, as Redis's is taken before loading).
"""

from __future__ import annotations

import os
import resource

__all__ = ["human", "peak_rss_bytes", "rss_bytes"]


def rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_rss_bytes() -> int:
    """The largest resident set size this process has had (at least the current one)."""
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss_bytes())


def human(n: float) -> str:
    """Bytes as Redis's bytesToHuman writes them: 512B, 1.50K, 3.00M, ..."""
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.2f}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1024
    return str(n)
