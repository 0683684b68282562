"""Numbered databases (SELECT n), as Redis's `databases` setting makes them.

`Databases` holds one `Keyspace` per index, made on first use, so the sixteen
databases of the default configuration cost a list of sixteen slots until
something selects one.  A keyspace object *is* its index for as long as the
server runs: SWAPDB exchanges the contents of two of them (Keyspace.swap_with)
rather than the objects, so whatever names a database by its object (the
engine's current keyspace, an undo entry) keeps meaning the same index.
Function libraries are server state: every keyspace reads and writes database
0's (Keyspace.root).

AOF records are self-contained: replay starts every record in database 0 and a
("SELECT", n) effect moves it (effects.apply_effect), so a record never depends
on the record before it, on a connection, or on where a rewrite cut the file.
Records written before databases existed hold no SELECT and so replay into
database 0, as they always did.
"""

from __future__ import annotations

from collections.abc import Iterator

from helios_core.atlas.keyspace import Keyspace

__all__ = ["Databases", "MAX_DATABASES", "DB_OUT_OF_RANGE"]

# Redis accepts any positive int; a bound keeps `databases` from making the server hold a
# slot list of absurd size (each database costs a slot until used, a keyspace once used).
# (config.py's AtlasdConfig.databases holds the same bound.)
MAX_DATABASES = 10000
DB_OUT_OF_RANGE = "ERR DB index is out of range"


class Databases:
    __slots__ = ("count", "_dbs", "_made")

    def __init__(self, count: int = 16, first: Keyspace | None = None) -> None:
        if not 1 <= count <= MAX_DATABASES:
            raise ValueError(f"databases must be 1..{MAX_DATABASES}, got {count}")
        self.count = count
        db0 = first if first is not None else Keyspace()
        db0.root = db0
        db0.dbs = self
        self._dbs: list[Keyspace | None] = [db0] + [None] * (count - 1)
        self._made = [0]  # indexes of the keyspaces made so far, ascending

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Keyspace:
        ks = self._dbs[index] if 0 <= index < self.count else None
        if ks is None:
            if not 0 <= index < self.count:
                raise IndexError(index)
            ks = self._dbs[index] = Keyspace(self._dbs[0], self)
            self._made = sorted(self._made + [index])
        return ks

    def made(self) -> Iterator[tuple[int, Keyspace]]:
        """(index, keyspace) of every database made so far (empty ones included), by index."""
        dbs = self._dbs
        for i in self._made:
            ks = dbs[i]
            assert ks is not None
            yield i, ks

    def non_empty(self) -> Iterator[tuple[int, Keyspace]]:
        for i, ks in self.made():
            if ks.data:
                yield i, ks

    def keys(self) -> int:
        """Keys in all databases."""
        return sum(len(ks.data) for _, ks in self.made())

    def expires(self) -> int:
        return sum(len(ks.expires) for _, ks in self.made())

    def swap(self, a: int, b: int) -> None:
        if a != b:
            self[a].swap_with(self[b])
