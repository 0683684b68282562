"""EmbeddedStore: the Store contract on an ATLAS engine in this process.

Everything runs on the loop thread, so a transaction is atomic simply by not
yielding: `transact` drives `fn`'s coroutine by hand and refuses one that
suspends on anything but its (never-suspending) txn reads.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError, HeliosError
from helios_core.store.base import (
    Key,
    ScoreBound,
    Store,
    Subscription,
    Txn,
    glob_escape,
    range_args,
    to_bytes,
)
from helios_core.store.scripts import Model, ScriptOp

__all__ = ["EmbeddedStore"]

T = TypeVar("T")


class _EmbeddedReads:
    engine: Engine

    def _run_now(self, argv: list[bytes]) -> Any:
        return self.engine.execute(argv)

    async def get(self, key: Key) -> bytes | None:
        value: bytes | None = await self._read([b"GET", to_bytes(key)])
        return value

    async def mget(self, keys: list[Key]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = await self._read([b"MGET", *map(to_bytes, keys)])
        return values

    async def exists(self, key: Key) -> bool:
        return bool(await self._read([b"EXISTS", to_bytes(key)]))

    async def pttl(self, key: Key) -> int:
        return int(await self._read([b"PTTL", to_bytes(key)]))

    async def zscore(self, key: Key, member: Key) -> float | None:
        score: float | None = await self._read([b"ZSCORE", to_bytes(key), to_bytes(member)])
        return score

    async def zcard(self, key: Key) -> int:
        return int(await self._read([b"ZCARD", to_bytes(key)]))

    async def zrangebyscore(self, key: Key, lo: ScoreBound = "-inf", hi: ScoreBound = "+inf", *,
                            offset: int = 0, count: int | None = None) -> list[tuple[bytes, float]]:
        return list(await self._read(range_args(key, lo, hi, offset, count)))

    async def _read(self, argv: list[bytes]) -> Any:
        raise NotImplementedError


async def reveal(engine: Engine, seq: int) -> None:
    """The reveal rule (aof_writer.py): return only once record `seq`, the newest one an answer
    observed, is durable; if it never will be, raise the durability error instead of the answer."""
    if seq > engine.released_seq:
        await engine.wait_durable(seq)


class EmbeddedTxn(_EmbeddedReads, Txn):
    def __init__(self, engine: Engine) -> None:
        Txn.__init__(self)
        self.engine = engine
        self.observed = 0  # the newest not-yet-durable record any read of fn's saw

    async def _read(self, argv: list[bytes]) -> Any:
        engine = self.engine
        try:
            return engine.execute(argv)
        finally:  # (an error such as WRONGTYPE reveals state too)
            seq = engine.pending_seq()
            if seq > self.observed:
                self.observed = seq


class EmbeddedStore(_EmbeddedReads, Store):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, data_dir: str | os.PathLike[str], config: AtlasConfig | None = None,
                   **lock_info: Any) -> EmbeddedStore:
        """Own `data_dir` (recovering it) and drive the engine from the running loop."""
        engine = Engine.open(data_dir, config, **lock_info)
        engine.attach()
        return cls(engine)

    async def _read(self, argv: list[bytes]) -> Any:
        engine = self.engine
        try:
            return engine.execute(argv)
        finally:
            # The reply (or an error such as WRONGTYPE) may reveal a write not durable yet.
            await reveal(engine, engine.pending_seq())

    async def execute(self, *args: Key | int | float) -> Any:
        """Run any ATLAS command (the engine's one command table); waits for durability."""
        return await self._read([to_bytes(a) for a in args])

    async def scan(self, prefix: Key = b"", cursor: str = "0", count: int = 100) -> tuple[str, list[bytes]]:
        argv = [b"SCAN", to_bytes(cursor), b"MATCH", glob_escape(to_bytes(prefix)) + b"*", b"COUNT", b"%d" % count]
        nxt, keys = await self._read(argv)
        return nxt.decode(), keys

    async def transact(self, fn: Callable[[Txn], Awaitable[T] | T], *, durable: bool = True) -> T:
        """Run fn atomically; its result, or the exception it raises, leaves only once every
        record it read or wrote is durable (durable=False: nothing is waited for)."""
        engine = self.engine
        txn = EmbeddedTxn(engine)
        try:
            result: Any = fn(txn)
            if inspect.iscoroutine(result):
                coro = result
                try:
                    coro.send(None)
                except StopIteration as stop:
                    result = stop.value
                else:
                    coro.close()
                    raise HeliosError("a transaction function may await only its txn's reads; "
                                      "do other awaits before calling transact()", code="bad_transaction")
            writes = txn.writes
            if len(writes) == 1:  # one command is one record already: no MULTI wrapper needed
                engine.execute(writes[0])
            elif writes:
                with engine.batch():
                    for argv in writes:
                        engine.execute(argv)
            if txn.writes:
                txn.observed = max(txn.observed, engine.pending_seq())
        finally:
            if durable:
                await reveal(engine, txn.observed)
        return result  # type: ignore[no-any-return]

    async def run_script(self, op: ScriptOp, keys: list[Key], args: list[Key | int | float], *,
                         durable: bool = True) -> Any:
        """The operation in one engine step, one record: its Python model (`txn_model` or `model`)
        when it has one (cheaper in process), else its Lua source through the engine's EVALSHA.
        Nothing here suspends before the operation has run (read_and_run_script relies on it)."""
        txn_model = op.txn_model
        if txn_model is not None:  # an operation that reads more than string keys (jobs/ops.py)
            tk, ta = [to_bytes(k) for k in keys], [to_bytes(a) for a in args]
            return await self.transact(lambda txn: txn_model(txn, tk, ta), durable=durable)
        model = op.model
        if model is not None:
            return await self._run_model(model, keys, args, durable)
        engine = self.engine
        argv = [b"EVALSHA", op.sha, b"%d" % len(keys), *map(to_bytes, keys), *map(to_bytes, args)]
        try:
            try:
                return engine.execute(argv)
            except CommandError as e:
                if not str(e).startswith("NOSCRIPT"):
                    raise
                engine.execute([b"SCRIPT", b"LOAD", op.source])  # once per engine (SCRIPT FLUSH: again)
                return engine.execute(argv)
        finally:
            if durable:
                await reveal(engine, engine.pending_seq())

    async def _run_model(self, model: Model, keys: list[Key], args: list[Key | int | float], durable: bool) -> Any:
        """A string-keyed model as `transact` would run it (an MGET of its KEYS, then its writes as one
        record, a MULTI when several), without a Txn and a coroutine per call: this runs for every
        rate-limited request."""
        engine = self.engine
        observed = [0]
        try:
            reply = self._model_step(model, keys, args, observed)
        finally:
            if durable and observed[0] > engine.released_seq:
                await engine.wait_durable(observed[0])
        return reply

    def _model_step(self, model: Model, keys: list[Key], args: list[Key | int | float], observed: list[int]) -> Any:
        """`_run_model`'s engine step, never suspending; ``observed[0]``: the newest record its reply
        may not be shown before (set even when it raises: an error may reveal state too)."""
        engine = self.engine
        kb = [k if type(k) is bytes else to_bytes(k) for k in keys]
        values = engine.execute([b"MGET", *kb])
        observed[0] = engine.pending_seq()
        reply, writes = model(kb, values, [a if type(a) is bytes else to_bytes(a) for a in args])
        if writes:
            argvs = [[b"DEL", key] if value is None else
                     [b"SET", key, value] if px is None else [b"SET", key, value, b"PX", b"%d" % px]
                     for key, value, px in writes]
            if len(argvs) == 1:  # one command is one record already: no MULTI wrapper needed
                engine.execute(argvs[0])
            else:
                with engine.batch():
                    for argv in argvs:
                        engine.execute(argv)
            observed[0] = max(observed[0], engine.pending_seq())
        return reply

    async def read_and_run_script(self, reads: list[Key], op: ScriptOp, keys: list[Key],
                                  args: list[Key | int | float], *,
                                  durable: bool = True) -> tuple[list[bytes | None], Any]:
        engine = self.engine
        # (str keys, the gateway's, encoded here: to_bytes is a call per key on every request)
        values: list[bytes | None] = engine.execute(
            [b"MGET", *[k.encode() if type(k) is str else to_bytes(k) for k in reads]]) if reads else []
        seen = engine.pending_seq() if reads else 0
        # run_script does not suspend before the operation has run: the reads and the operation are
        # one engine step.  The reads wait only for what they observed, never for the operation's
        # own writes (a rate-limit bucket's are not waited for at all).
        if op.txn_model is None and op.model is not None:
            # The gateway's rate-limit step (every request): `_run_model` without its coroutine.
            observed = [0]
            try:
                reply = self._model_step(op.model, keys, args, observed)
            finally:
                if durable and observed[0] > engine.released_seq:
                    await engine.wait_durable(observed[0])
        else:
            reply = await self.run_script(op, keys, args, durable=durable)
        if seen > engine.released_seq:
            await engine.wait_durable(seen)
        return values, reply

    def subscribe(self, prefix: Key) -> Subscription:
        p = to_bytes(prefix)
        sub = Subscription(p)
        sub._closer = self.engine.subscribe(p, sub._deliver)
        return sub

    async def close(self) -> None:
        await self.engine.aclose()
