"""The Store interface: the only way domain code (auth, rbac, ratelimit, jobs, proxy) reaches data.

Shaped after redis-py's `transaction()` helper so that one contract fits the
embedded ATLAS engine, atlasd over a socket, and a real Redis or Valkey:

- reads: `get`, `mget`, `exists`, `pttl`, `scan`, and sorted-set reads;
- `transact(fn, durable=True)`: `fn(txn)` reads through `txn` (awaiting only
  txn reads), queues writes on it, and they are applied atomically after `fn`
  returns.  Reads inside `fn` see the state before the transaction's own
  writes.  It returns `fn`'s result once the writes are durable (or, with
  `durable=False`, once they are logged: for state such as rate-limit buckets
  that may lose the last second in a crash).  A backend that cannot run `fn`
  atomically (remote) re-runs it when a key it read changed meanwhile;
  so `fn` must have no side effects besides txn calls.
- `run_script(op, keys, args)`: a named atomic operation (store/scripts.py),
  one Lua definition run on the server in one step: for hot read-modify-write
  state (rate-limit buckets, job leases) where a WATCH retry loop contends.
- `read_and_run_script(reads, op, ...)`: plain reads and such an operation in
  one round trip (the gateway reads a caller's keys and the requested value
  beside its rate-limit bucket).
- `subscribe(prefix)`: change notification for keys under a prefix, so long
  polls and config reloads need no busy loop.

Keys are str (UTF-8) or bytes; values are bytes (str is encoded as UTF-8).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from helios_core.store.scripts import ScriptOp

__all__ = ["Reads", "Store", "Txn", "Subscription", "Key", "to_bytes", "ScoreBound"]

Key = str | bytes
ScoreBound = float | str  # a number, "-inf"/"+inf", or "(5" for an exclusive bound
T = TypeVar("T")


def to_bytes(v: Key | int | float) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, bool):
        raise TypeError("booleans are not store values")
    if isinstance(v, int):
        return b"%d" % v
    if isinstance(v, float):
        return repr(v).encode()
    raise TypeError(f"cannot store {type(v).__name__}")


def _bound(v: ScoreBound) -> bytes:
    if isinstance(v, str):
        return v.encode()
    return to_bytes(float(v)) if v not in (float("inf"), float("-inf")) else (b"+inf" if v > 0 else b"-inf")


class Reads(ABC):
    """The reads a Store offers, and a Txn offers inside a transaction."""

    @abstractmethod
    async def get(self, key: Key) -> bytes | None: ...

    @abstractmethod
    async def mget(self, keys: list[Key]) -> list[bytes | None]: ...

    @abstractmethod
    async def exists(self, key: Key) -> bool: ...

    @abstractmethod
    async def pttl(self, key: Key) -> int:
        """Remaining ms; -1 when the key has no expiry, -2 when it does not exist."""

    @abstractmethod
    async def zscore(self, key: Key, member: Key) -> float | None: ...

    @abstractmethod
    async def zcard(self, key: Key) -> int: ...

    @abstractmethod
    async def zrangebyscore(self, key: Key, lo: ScoreBound = "-inf", hi: ScoreBound = "+inf", *,
                            offset: int = 0, count: int | None = None) -> list[tuple[bytes, float]]: ...


class Txn(Reads):
    """Reads run now; writes are queued and applied together when `fn` returns."""

    def __init__(self) -> None:
        self.writes: list[list[bytes]] = []

    # writes (queued)
    def set(self, key: Key, value: Key | int | float, *, px: int | None = None,
            pxat: int | None = None, keepttl: bool = False) -> None:
        argv = [b"SET", to_bytes(key), to_bytes(value)]
        if px is not None:
            argv += [b"PX", b"%d" % px]
        elif pxat is not None:
            argv += [b"PXAT", b"%d" % pxat]
        elif keepttl:
            argv.append(b"KEEPTTL")
        self.writes.append(argv)

    def delete(self, *keys: Key) -> None:
        if keys:
            self.writes.append([b"DEL", *map(to_bytes, keys)])

    def pexpire(self, key: Key, ms: int) -> None:
        self.writes.append([b"PEXPIRE", to_bytes(key), b"%d" % ms])

    def pexpireat(self, key: Key, when_ms: int) -> None:
        self.writes.append([b"PEXPIREAT", to_bytes(key), b"%d" % when_ms])

    def persist(self, key: Key) -> None:
        self.writes.append([b"PERSIST", to_bytes(key)])

    def incrby(self, key: Key, by: int) -> None:
        self.writes.append([b"INCRBY", to_bytes(key), b"%d" % by])

    def zadd(self, key: Key, mapping: dict[Key, float]) -> None:
        if mapping:
            argv = [b"ZADD", to_bytes(key)]
            for member, score in mapping.items():
                argv += [to_bytes(float(score)), to_bytes(member)]
            self.writes.append(argv)

    def zrem(self, key: Key, *members: Key) -> None:
        if members:
            self.writes.append([b"ZREM", to_bytes(key), *map(to_bytes, members)])


class Subscription:
    """Keys changed under a prefix, in order; None means "possibly many changed: re-read"."""

    def __init__(self, prefix: bytes, closer: Callable[[], Any] | None = None, maxsize: int = 10000) -> None:
        self.prefix = prefix
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize)
        self._closer = closer
        self._overflow = False
        self._ready: asyncio.Future[None] | None = None  # set by a backend that subscribes asynchronously

    def _deliver(self, key: bytes | None) -> None:
        try:
            self._queue.put_nowait(key)
        except asyncio.QueueFull:
            if not self._overflow:
                self._overflow = True
                # Drop the backlog, tell the reader to re-read everything once.
                while not self._queue.empty():
                    self._queue.get_nowait()
                self._queue.put_nowait(None)

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until changes are watched: any change made after this returns is delivered.

        In process that is at once.  Over the network it is once the server
        has confirmed the subscription; the same store's own writes already
        wait for that, another process's do not.  Raises TimeoutError.
        """
        if self._ready is not None:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    async def get(self, timeout: float | None = None) -> bytes | None:
        """The next changed key; raises TimeoutError after `timeout` seconds."""
        key = await asyncio.wait_for(self._queue.get(), timeout)
        self._overflow = False
        return key

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> bytes | None:
        return await self.get()

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None


class Store(Reads):
    @abstractmethod
    async def scan(self, prefix: Key = b"", cursor: str = "0", count: int = 100) -> tuple[str, list[bytes]]:
        """One page of keys starting with prefix; pass the returned cursor back until it is "0".

        Every key that exists for the whole iteration is returned; no key twice
        within a page.  Over Redis a key may come again in a later page (Redis
        documents this for a table that shrinks mid-iteration): de-duplicate
        across pages if that matters.
        """

    async def scan_all(self, prefix: Key = b"", count: int = 500) -> list[bytes]:
        """Every key starting with `prefix`, each once (scan's pages, de-duplicated), in the order met."""
        seen: dict[bytes, None] = {}
        cursor = "0"
        while True:
            cursor, page = await self.scan(prefix, cursor, count)
            seen.update(dict.fromkeys(page))
            if cursor == "0":
                return list(seen)

    @abstractmethod
    async def transact(self, fn: Callable[[Txn], Awaitable[T] | T], *, durable: bool = True) -> T: ...

    @abstractmethod
    async def run_script(self, op: ScriptOp, keys: list[Key], args: list[Key | int | float], *,
                         durable: bool = True) -> Any:
        """Run `op` atomically on `keys` and `args`; its reply as a Redis client reads it (int,
        bytes, None, nested lists).  An error the script raises is a CommandError.  `durable`
        as for `transact`: False returns once the writes are logged, not waiting for them."""

    @abstractmethod
    async def read_and_run_script(self, reads: list[Key], op: ScriptOp, keys: list[Key],
                                  args: list[Key | int | float], *,
                                  durable: bool = True) -> tuple[list[bytes | None], Any]:
        """`mget(reads)`, then `run_script(op, keys, args)`, in one step: one round trip on a server
        (MGET and EVALSHA written together), one engine step embedded (nothing runs between them).
        Returns (the values of `reads`, the operation's reply).

        The reads are plain reads, not part of the operation: on a server another client's command
        may run between the MGET and the script, and the script cannot fail them.  If the
        operation raises, so does this call, and the values are dropped.  The values are revealed
        as `mget`'s are (embedded: once every not-yet-durable write they observed is durable);
        the operation's own writes wait as `durable` says (False: not at all)."""

    def slot(self, key: Key) -> int:
        """Keys of the same slot may be touched by one transaction or script together: every key on
        one server (0 here), the keys of one hash slot on Redis Cluster (ClusterStore)."""
        return 0

    @abstractmethod
    def subscribe(self, prefix: Key) -> Subscription: ...

    @abstractmethod
    async def close(self) -> None: ...

    # conveniences built on transact
    async def set(self, key: Key, value: Key | int | float, *, px: int | None = None, durable: bool = True) -> None:
        await self.transact(lambda t: t.set(key, value, px=px), durable=durable)

    async def delete(self, *keys: Key) -> None:
        await self.transact(lambda t: t.delete(*keys))


def range_args(key: Key, lo: ScoreBound, hi: ScoreBound, offset: int, count: int | None) -> list[bytes]:
    argv = [b"ZRANGEBYSCORE", to_bytes(key), _bound(lo), _bound(hi), b"WITHSCORES"]
    if count is not None or offset:
        argv += [b"LIMIT", b"%d" % offset, b"%d" % (-1 if count is None else count)]
    return argv


def glob_escape(prefix: bytes) -> bytes:
    out = bytearray()
    for c in prefix:
        if c in b"*?[]\\":
            out += b"\\"
        out.append(c)
    return bytes(out)
