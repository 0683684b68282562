"""Containers' subcommands as atlasd has them (CONFIG GET, CLIENT LIST, ...), indexed once.

Derived from the generated keyspecs.py (Redis 7.0's own table, less what atlasd does not
implement): the engine (arity, commandstats names, MONITOR), scripts (their calls' checks),
COMMAND (INFO, DOCS, LIST) and INFO commandstats all look subcommands up here.
"""

from __future__ import annotations

from helios_core.atlas.commands.keyspecs import SUBCOMMAND_INFO, SUBCOMMANDS

__all__ = ["BY_CONTAINER", "ADMIN", "find_sub", "sub_flags"]

# container -> {subcommand, lower case -> (its full name `config|get`, its arity)}
BY_CONTAINER: dict[str, dict[bytes, tuple[str, int]]] = {}
for _full, _arity in sorted(SUBCOMMANDS.items()):
    _container, _sub = _full.split("|", 1)
    BY_CONTAINER.setdefault(_container, {})[_sub.encode()] = (_full, _arity)

# The subcommands Redis 7.0 flags admin (MONITOR judges a container's call by its subcommand).
ADMIN = frozenset(full for full, info in SUBCOMMAND_INFO.items() if "admin" in info[0])

_SUB_MAX = max(len(sub) for subs in BY_CONTAINER.values() for sub in subs)


def find_sub(subs: dict[bytes, tuple[str, int]], sub: bytes) -> tuple[str, int] | None:
    """A container's subcommand as sent -> (its full name, its arity); None if unknown (a name longer
    than any subcommand is not even lower-cased: clients choose its length)."""
    return subs.get(sub.lower()) if len(sub) <= _SUB_MAX else None


def sub_flags(full: str) -> tuple[str, ...]:
    """A subcommand's own flags, as Redis 7.0's COMMAND INFO reports them."""
    return SUBCOMMAND_INFO[full][0]
