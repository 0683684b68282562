"""WATCH: keys a client watches, and the commits that make its EXEC fail (Redis 7.0's semantics).

A per-key registry of watchers, marked dirty by a synchronous engine commit
hook (as Redis's touchWatchedKey): any committed change to a watched key,
including expiry, fails the watcher's EXEC.  Keys are watched in the client's
database: the registry's keys are (database, key), and a record's effects are
followed database by database (its SELECTs).  FLUSHDB and FLUSHALL change only
the watched keys that were there (Redis 7.0's touchAllWatchedKeysInDb), and
SWAPDB a watched key that either database held: the hook runs after the
effects are applied, so whether each watched key exists is kept up to date as
records pass.  The hook is only installed while some key is watched, so plain
traffic pays nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from helios_core.atlas.effects import LIBRARY_CMDS

if TYPE_CHECKING:
    from helios_core.atlas.client_connection import Connection
    from helios_core.atlas.engine import Engine

__all__ = ["Watches"]

_EXPIRED_WHEN_WATCHED = -1  # marks a WATCHed key whose TTL had already run out


class Watches:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.watched: dict[tuple[int, bytes], set[Connection]] = {}  # (db, key) -> its watchers
        self.watched_exists: dict[tuple[int, bytes], bool] = {}  # is a watched key there (for FLUSHDB/ALL)

    def watch(self, conn: Connection, keys: list[bytes], now_ms: int) -> None:
        db = conn.db
        ks = self.engine.dbs[db]
        for name in keys:
            key = (db, name)
            if key in conn.watching:
                continue
            exp = ks.expires.get(name) if name in ks.data else None
            # Remember the TTL, to notice it running out before anything deletes the key.  A key
            # already expired when watched is logically absent: its deletion is no change (Redis 7).
            conn.watching[key] = _EXPIRED_WHEN_WATCHED if exp is not None and exp <= now_ms else exp
            self.watched.setdefault(key, set()).add(conn)
            if key not in self.watched_exists:
                self.watched_exists[key] = name in ks.data
        if self.watched and self._touch not in self.engine.commit_hooks:
            self.engine.commit_hooks.append(self._touch)

    def expired(self, conn: Connection) -> bool:
        """Did a watched key's TTL run out since WATCH (even if nothing deleted it yet)?"""
        now = self.engine.clock()
        return any(exp is not None and 0 <= exp <= now for exp in conn.watching.values())

    def unwatch(self, conn: Connection) -> None:
        for key in conn.watching:
            conns = self.watched.get(key)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self.watched[key]
                    self.watched_exists.pop(key, None)
        conn.watching = {}
        conn.watch_dirty = False
        if not self.watched and self._touch in self.engine.commit_hooks:
            self.engine.commit_hooks.remove(self._touch)

    def _touch(self, effects: list[tuple]) -> None:
        exists: dict[tuple[int, bytes], bool] = {}  # watched keys this record changed: there after each effect?
        self._touch_effects(effects, exists, [0])
        dbs = self.engine.dbs  # the record is applied: the truth for the records that follow
        for key in exists:
            self.watched_exists[key] = key[1] in dbs[key[0]].data

    def _touch_effects(self, effects: list[tuple], exists: dict[tuple[int, bytes], bool], db: list[int]) -> None:
        """`db`: the record's database so far (a record starts in 0; SELECT moves it)."""
        watched = self.watched
        for eff in effects:
            op = eff[0]
            if op == "MULTI":
                self._touch_effects(eff[1], exists, db)
            elif op == "SELECT":
                db[0] = eff[1]
            elif op in LIBRARY_CMDS:
                continue  # function libraries are no key a client can WATCH
            elif op == "FLUSHALL" or op == "FLUSHDB":
                self._flushed(None if op == "FLUSHALL" else db[0], exists)
            elif op == "SWAPDB":
                self._swapped(eff[1], eff[2], exists)
            else:
                key = (db[0], eff[1])
                touched = watched.get(key)
                if touched:
                    for conn in touched:
                        if op == "DEL" and conn.watching.get(key) == _EXPIRED_WHEN_WATCHED:
                            conn.watching[key] = None  # the dead key went; a later change counts
                        else:
                            conn.watch_dirty = True
                    # ZREM may have emptied (deleted) the key: then it is dirty already, and a
                    # FLUSHALL after it changes nothing either way.
                    exists[key] = op != "DEL"

    def _flushed(self, db: int | None, exists: dict[tuple[int, bytes], bool]) -> None:
        """FLUSHDB (of `db`) or FLUSHALL (None): only the watched keys that were there changed."""
        for key, conns in self.watched.items():
            if db is not None and key[0] != db:
                continue
            if not exists.get(key, self.watched_exists.get(key, False)):
                continue  # a key that was not there: no change
            for conn in conns:
                if conn.watching.get(key) == _EXPIRED_WHEN_WATCHED:
                    conn.watching[key] = None  # the dead key went; a later change counts
                else:
                    conn.watch_dirty = True
            exists[key] = False

    def _swapped(self, a: int, b: int, exists: dict[tuple[int, bytes], bool]) -> None:
        """SWAPDB a b (Redis 7.0's touchAllWatchedKeysInDb both ways): a key watched in either
        database changed if it was there before or is there now (brought by the swap)."""
        dbs = self.engine.dbs
        for key, conns in self.watched.items():
            db, name = key
            if db != a and db != b:
                continue
            was = exists.get(key, self.watched_exists.get(key, False))
            now = name in dbs[db].data  # (the swap is applied: what the other database held)
            if not (was or now):
                continue
            for conn in conns:
                if conn.watching.get(key) == _EXPIRED_WHEN_WATCHED and not now:
                    conn.watching[key] = None
                else:
                    conn.watch_dirty = True
            exists[key] = now
