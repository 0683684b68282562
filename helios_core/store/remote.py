"""RemoteStore: the Store contract over the Redis protocol (atlasd, Redis, Valkey).

Connections: over TCP and unix sockets, our own lean RESP2 connections
(store/resp.py: a pool of them for transactions, WAIT and execute(), and one
shared, pipelined connection for every caller's reads and scripts, whose
round trips queued in one loop pass go out in one write); over TLS and
Sentinel, redis-py's asyncio connections.  Either way replies are read raw
(no reply callbacks, `decode_responses=False`, redis-py's exception classes),
the same way for every server.

Transactions are optimistic, as redis-py's `transaction()` helper: each
attempt takes a connection of its own from the pool, every txn read first
WATCHes the keys it reads (sent in the same round trip as the read), `fn`
runs, and its writes go out as MULTI ... EXEC.  An EXEC that a change to a
watched key aborted is retried with a fresh txn, up to `max_attempts` times.
A write that fails inside EXEC (say INCRBY on a non-number) raises
CommandError naming the command; the server has already applied the others
(neither Redis nor atlasd rolls back), unlike the embedded engine, which
applies all or nothing.

Durability is the server's: atlasd acknowledges EXEC only once the
transaction is durable under its own `appendfsync` policy, Redis per its
`appendonly`/`appendfsync` settings.  `durable=False` cannot make a remote
transaction faster (a client cannot ask for an earlier reply), so it is
accepted and ignored.

Sentinel (`redis+sentinel://` URLs): connections come from redis-py's
asyncio `Sentinel(...).master_for(service)` pool, so each new connection
asks the sentinels where the primary is; after a failover the pool drops
its idle connections to the old primary.  A command in flight when the
primary dies fails (connection lost or refused, "no master found" while the
sentinels still agree on a new one, READONLY from a demoted primary) as a
503 `store_unavailable` HeliosError, not a hang (every connect and reply is
bounded by the URL's timeouts; a transaction whose EXEC was sent is never
retried, since it may have been applied).

Replicas (`wait_replicas` > 0, config `store.wait_replicas`): every durable
write (transact() that writes, set, delete, run_script with durable=True)
is followed, in the same round trip and on the same connection, by `WAIT
wait_replicas wait_timeout_ms`.  When fewer replicas acknowledge in time the
write fails with a 503 `store_replication` HeliosError saying the primary
applied it but it may be lost if the primary fails now; the caller sees the
write as failed although it usually persists; atlasd, which has no replicas,
answers WAIT 0 after its timeout as a lone Redis does, so it fails that way.  A
server that refuses WAIT fails such a write with ConfigError naming the setting.  WAIT
makes acknowledged writes much harder to lose on failover but not impossible
(Redis replication stays asynchronous: a replica that acknowledged may still
not be the one promoted).  `durable=False` writes (rate-limit buckets) never wait.

Change notification: keyspace notifications are off by default on Redis and
atlasd (`notify-keyspace-events`) and a store must not reconfigure the server
it is given, so a RemoteStore announces its own writes.  Each transaction that writes also
PUBLISHes, inside the same MULTI, an empty message on
`helios:changes:<key>` for every key it wrote; `subscribe(prefix)`
PSUBSCRIBEs `helios:changes:<glob-escaped prefix>*` over one pub/sub
connection per store.  This works the same on atlasd and Redis, but a write
made by a client that is not a HELIOS store (redis-cli, another program) is
not seen.  A write may be announced although it changed nothing (DEL of a
missing key): subscribers re-read, so that only costs a wake-up.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    Connection,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from helios_core.errors import CommandError, ConfigError, ConflictError, HeliosError
from helios_core.observability import tracing
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
from helios_core.store.resp import RespConnection, RespMux, RespPool
from helios_core.store.scripts import ScriptOp
from helios_core.store.url import StoreURL, parse_store_url, with_local_password

__all__ = ["RemoteStore", "RemoteTxn", "CHANNEL_PREFIX"]

T = TypeVar("T")

CHANNEL_PREFIX = b"helios:changes:"
MAX_ATTEMPTS = 50
POOL_CONNECTIONS = 100  # per store (per gateway process): beyond it, callers queue for a connection
POOL_WAIT_SECONDS = 30.0
# Waiting for a new subscription's PSUBSCRIBE to be confirmed before the next write
# (so this store's own later writes are seen) is bounded: a feed that cannot connect
# must not stall writes, which fail or succeed on their own connections.
_SUBSCRIBE_WAIT_SECONDS = 5.0
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


# A pooled connection: our own lean one (store/resp.py) for TCP and unix sockets, redis-py's for
# TLS and Sentinel.
Conn = AbstractConnection | RespConnection


def _connection_class(target: StoreURL) -> type[AbstractConnection]:
    return {"unix": UnixDomainSocketConnection, "tls": SSLConnection,
            "sentinel": SentinelManagedConnection}.get(target.kind, Connection)


class _SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (asks the sentinels for the primary) that queues callers like the plain one."""


def _sentinel_pool(target: StoreURL, kwargs: dict[str, Any], max_connections: int,
                   timeout: float) -> tuple[Sentinel, SentinelConnectionPool]:
    # The sentinels' own timeouts stay short: one hung sentinel must not stall every new connection
    # for the primary's connect timeout while the others could answer.
    sentinel_kwargs = {"socket_timeout": target.timeout or 2.0, "socket_connect_timeout": target.connect_timeout or 2.0,
                       "username": target.sentinel_username, "password": target.sentinel_password, "protocol": 2}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(target.service, connection_pool_class=_SentinelBlockingPool,
                                 max_connections=max_connections, timeout=timeout, **kwargs)
    return sentinel, client.connection_pool


def _connection_kwargs(target: StoreURL) -> dict[str, Any]:
    kw: dict[str, Any] = {"username": target.username, "password": target.password, "db": target.db,
                          "socket_timeout": target.timeout, "socket_connect_timeout": target.connect_timeout or 10.0,
                          "decode_responses": False, "protocol": 2}
    if target.kind == "unix":
        kw["path"] = target.path
    elif target.kind != "sentinel":  # a sentinel connection learns its address from the sentinels
        kw["host"], kw["port"] = target.host, target.port
    if target.kind == "tls":
        kw.update(target.tls)
    return kw


def _transport_closed(e: RuntimeError) -> RedisConnectionError:
    """uvloop's answer to a write on a transport the peer reset ("unable to perform operation on
    <TCPTransport closed=True>"), as the ConnectionError it means; any other RuntimeError is raised."""
    if "closed=True" not in str(e):
        raise e
    return RedisConnectionError(f"connection lost: {e}")


async def _roundtrip(conn: Conn, commands: list[list[bytes]]) -> list[Any]:
    """Send commands in one write; every reply, an error reply as a ResponseError in its place."""
    if isinstance(conn, RespConnection):
        return await conn.roundtrip(commands)
    try:
        await conn.send_packed_command(conn.pack_commands(commands))
    except RuntimeError as e:
        raise _transport_closed(e) from e
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except ResponseError as e:  # the stream is still in step: read the rest
            replies.append(e)
    return replies


def _is_auth_failure(e: BaseException | None) -> bool:
    # redis-py wraps an AUTH refused while connecting in a plain ConnectionError.
    while e is not None:
        if isinstance(e, AuthenticationError):
            return True
        e = e.__cause__
    return False


def _score(v: Any) -> float:
    return v if isinstance(v, float) else float(v)  # float(b"inf") is inf, as Redis spells it


def _pairs(reply: list[Any]) -> list[tuple[bytes, float]]:
    if reply and isinstance(reply[0], list | tuple):  # RESP3: [member, score] pairs
        return [(m, _score(s)) for m, s in reply]
    return [(reply[i], _score(reply[i + 1])) for i in range(0, len(reply), 2)]


def _written_keys(writes: Iterable[list[bytes]]) -> list[bytes]:
    keys: dict[bytes, None] = {}
    for argv in writes:
        for key in argv[1:] if argv[0] == b"DEL" else argv[1:2]:
            keys[key] = None
    return list(keys)


def _shown(argv: list[bytes]) -> str:
    head = argv[0].decode()
    return f"{head} {argv[1]!r}" if len(argv) > 1 else head


class _RemoteReads:
    """The reads Store and Txn share; `_read` runs one command and knows which keys it reads."""

    async def _read(self, argv: list[bytes], keys: list[bytes]) -> Any:
        raise NotImplementedError

    async def get(self, key: Key) -> bytes | None:
        k = to_bytes(key)
        return await self._read([b"GET", k], [k])  # type: ignore[no-any-return]

    async def mget(self, keys: list[Key]) -> list[bytes | None]:
        if not keys:
            return []
        ks = [to_bytes(k) for k in keys]
        return list(await self._read([b"MGET", *ks], ks))

    async def exists(self, key: Key) -> bool:
        k = to_bytes(key)
        return bool(await self._read([b"EXISTS", k], [k]))

    async def pttl(self, key: Key) -> int:
        k = to_bytes(key)
        return int(await self._read([b"PTTL", k], [k]))

    async def zscore(self, key: Key, member: Key) -> float | None:
        k = to_bytes(key)
        reply = await self._read([b"ZSCORE", k, to_bytes(member)], [k])
        return None if reply is None else _score(reply)

    async def zcard(self, key: Key) -> int:
        k = to_bytes(key)
        return int(await self._read([b"ZCARD", k], [k]))

    async def zrangebyscore(self, key: Key, lo: ScoreBound = "-inf", hi: ScoreBound = "+inf", *,
                            offset: int = 0, count: int | None = None) -> list[tuple[bytes, float]]:
        k = to_bytes(key)
        return _pairs(await self._read(range_args(k, lo, hi, offset, count), [k]))


class RemoteTxn(_RemoteReads, Txn):
    """A transaction attempt on its own connection: a read WATCHes its keys in the same round trip."""

    def __init__(self, conn: Conn) -> None:
        Txn.__init__(self)
        self.conn = conn
        self.watched: set[bytes] = set()
        # fn may gather several reads: one command/reply exchange at a time on the connection.
        self.lock = asyncio.Lock()
        self.in_flight = False  # stays True if an exchange was interrupted: a reply may be unread

    async def _read(self, argv: list[bytes], keys: list[bytes]) -> Any:
        async with self.lock:
            new = [k for k in dict.fromkeys(keys) if k not in self.watched]
            commands = [[b"WATCH", *new], argv] if new else [argv]
            self.in_flight = True
            replies = await _roundtrip(self.conn, commands)
            self.in_flight = False
            self.watched.update(new)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise CommandError(str(reply))
        return replies[-1]


class RemoteStore(_RemoteReads, Store):
    def __init__(self, target: StoreURL | str, *, max_attempts: int = MAX_ATTEMPTS, notify: bool = True,
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        """`target`: a store URL or a parsed one.  `notify=False` stops announcing writes (see the module doc).

        `wait_replicas`/`wait_timeout_ms`: config store.wait_*; see "Replicas" in the module doc.
        """
        # An atlas:// URL to this host without a password: this user's atlasd's own (see store/url.py).
        self.target = with_local_password(parse_store_url(target) if isinstance(target, str) else target)
        self.where = self.target.redacted
        self.max_attempts = max_attempts
        self.notify = notify
        self._kwargs = _connection_kwargs(self.target)
        # Blocking: a request beyond the pool's size waits for a connection (up to the socket
        # timeout) instead of failing with "Too many connections", which a gateway at 200
        # concurrent requests did with redis-py's plain pool (100 connections, then an error).
        self._sentinel: Sentinel | None = None
        self._pool: ConnectionPool
        if self.target.kind == "sentinel":
            self._sentinel, self._pool = _sentinel_pool(self.target, self._kwargs, POOL_CONNECTIONS,
                                                        self.target.timeout or POOL_WAIT_SECONDS)
        else:
            self._pool = BlockingConnectionPool(connection_class=_connection_class(self.target),
                                                max_connections=POOL_CONNECTIONS,
                                                timeout=self.target.timeout or POOL_WAIT_SECONDS, **self._kwargs)
        # The round trips' connections: our lean ones where we can (store/resp.py says why), else
        # redis-py's pool above (which also makes the change feed's connection).
        self._lean: RespPool | None = None
        self._mux: RespMux | None = None  # reads and scripts of every caller, pipelined on one connection
        if self.target.kind in ("tcp", "unix"):
            self._lean = RespPool(self._open_lean, POOL_CONNECTIONS, self.target.timeout or POOL_WAIT_SECONDS)
            self._mux = RespMux(self._open_lean)
        if wait_replicas < 0 or wait_timeout_ms < 1:
            raise ConfigError("wait_replicas must be 0 or more and wait_timeout_ms 1 or more",
                              key="store.wait_replicas")
        self.wait_replicas, self.wait_timeout_ms = wait_replicas, wait_timeout_ms
        self._wait = [[b"WAIT", b"%d" % wait_replicas, b"%d" % wait_timeout_ms]] if wait_replicas else []
        self._feed = _ChangeFeed(self)
        t = self.target  # span attributes (OpenTelemetry semantic conventions); never the password
        self._span_attrs: dict[str, Any] = {"db.system": "redis", "db.namespace": str(t.db), **(
            {"server.address": t.path} if t.kind == "unix" else {"server.address": t.host, "server.port": t.port})}

    def __repr__(self) -> str:
        return f"RemoteStore({self.where!r})"

    # -- connections ----------------------------------------------------------------------

    def _new_connection(self, **overrides: Any) -> AbstractConnection:
        """A connection outside the pool (the change feed's), to the same server (the primary, with Sentinel)."""
        kwargs = {**self._kwargs, **overrides}
        if self._sentinel is not None:
            kwargs["connection_pool"] = self._pool  # where it asks for the primary's address
        return _connection_class(self.target)(**kwargs)

    def _waited(self, reply: Any) -> None:
        """Check WAIT's reply after a write the server applied (see "Replicas" in the module doc)."""
        if isinstance(reply, ResponseError):
            raise ConfigError(f"store.wait_replicas is {self.wait_replicas}, but {self.where} refused WAIT ({reply}); "
                              f"the write was applied without waiting. Set it to 0 for a server without replicas "
                              f"(atlasd)", key="store.wait_replicas")
        if int(reply) < self.wait_replicas:
            raise HeliosError(f"the write was applied on the primary at {self.where} but only {int(reply)} of "
                              f"{self.wait_replicas} replicas acknowledged it within {self.wait_timeout_ms} ms "
                              f"(store.wait_replicas); it may be lost if the primary fails now",
                              code="store_replication", status=503,
                              detail={"acknowledged": int(reply), "wanted": self.wait_replicas})

    def _unavailable(self, e: BaseException) -> HeliosError:
        if _is_auth_failure(e):
            return HeliosError(f"the store at {self.where} refused our credentials: {e}; put the password in "
                               f"the URL (redis://:PASSWORD@HOST or ?password=...)", code="store_auth", status=503)
        return HeliosError(f"cannot reach the store at {self.where}: {e}", code="store_unavailable", status=503)

    async def _open_lean(self) -> RespConnection:
        t = self.target
        return await RespConnection.open(host=t.host, port=t.port, path=t.path if t.kind == "unix" else "",
                                         username=t.username, password=t.password, db=t.db,
                                         connect_timeout=t.connect_timeout or 10.0, timeout=t.timeout)

    async def _acquire(self) -> Conn:
        try:
            if self._lean is not None:
                return await self._lean.get()
            conn: AbstractConnection = await self._pool.get_connection()
            return conn
        except ResponseError as e:  # e.g. NOAUTH / WRONGPASS while connecting
            raise HeliosError(f"the store at {self.where} refused the connection: {e}", code="store_auth",
                              status=503) from e
        except _LOST as e:
            raise self._unavailable(e) from e
        except RuntimeError as e:  # reset during the connect's AUTH/HELLO/PING (uvloop)
            raise self._unavailable(_transport_closed(e)) from e

    async def _release(self, conn: Conn, *, clean: bool) -> None:
        if isinstance(conn, RespConnection):
            assert self._lean is not None
            self._lean.release(conn, clean=clean)
            return
        if not clean:  # unknown protocol state (a reply unread, WATCH or MULTI open): start over
            await conn.disconnect()
        await self._pool.release(conn)

    async def _call(self, commands: list[list[bytes]], name: str | None = None, *, shared: bool = False) -> list[Any]:
        """One round trip, as a client span when tracing (Redis carries no trace context: nothing is sent);
        the span is named `name`, else by the first command.  `shared`: the commands never block the
        connection (reads, scripts): they may go out on the multiplexed one with other callers'."""
        if not tracing.state.on:
            return await self._roundtrips(commands, shared)
        name = name or commands[0][0].decode(errors="replace").upper()
        with tracing.client_span(f"atlas {name}", {**self._span_attrs, "db.operation.name": name}):
            return await self._roundtrips(commands, shared)

    async def _roundtrips(self, commands: list[list[bytes]], shared: bool = False) -> list[Any]:
        """One round trip on a pooled connection (the multiplexed one when `shared`); retried once on a
        fresh one if the connection was lost."""
        mux = self._mux if shared else None
        for attempt in (1, 2):
            if mux is not None:
                try:
                    return await mux.roundtrip(commands)
                except _LOST as e:
                    if attempt == 2 or _is_auth_failure(e):
                        raise self._unavailable(e) from e
                except ResponseError as e:  # refused while connecting (SELECT of a db it lacks ...)
                    raise HeliosError(f"the store at {self.where} refused the connection: {e}", code="store_auth",
                                      status=503) from e
                continue
            conn = await self._acquire()
            clean = False
            try:
                replies = await _roundtrip(conn, commands)
                clean = True
                return replies
            except _LOST as e:
                if attempt == 2 or _is_auth_failure(e):
                    raise self._unavailable(e) from e
            finally:
                await self._release(conn, clean=clean)
        raise AssertionError("unreachable")

    async def _read(self, argv: list[bytes], keys: list[bytes]) -> Any:
        (reply,) = await self._call([argv], shared=True)
        if isinstance(reply, ResponseError):
            raise CommandError(str(reply))
        return reply

    async def execute(self, *args: Key | int | float) -> Any:
        """Run any command the server knows; the raw reply (bytes, int, list, None)."""
        (reply,) = await self._call([[to_bytes(a) for a in args]])  # (on a connection of its own: it may block)
        if isinstance(reply, ResponseError):
            raise CommandError(str(reply))
        return reply

    async def ping(self) -> None:
        """Raise HeliosError unless the server answers (and accepts our credentials)."""
        await self.execute("PING")

    # -- Store ----------------------------------------------------------------------------

    async def scan(self, prefix: Key = b"", cursor: str = "0", count: int = 100) -> tuple[str, list[bytes]]:
        argv = [b"SCAN", to_bytes(cursor), b"MATCH", glob_escape(to_bytes(prefix)) + b"*", b"COUNT", b"%d" % count]
        nxt, keys = await self._read(argv, [])
        # Redis may return a key in more than one page when its table resizes mid-iteration
        # (documented for SCAN); within one page a key is returned once.
        return (nxt.decode() if isinstance(nxt, bytes) else str(nxt)), list(dict.fromkeys(keys))

    async def transact(self, fn: Callable[[Txn], Awaitable[T] | T], *, durable: bool = True) -> T:
        if not tracing.state.on:
            return await self._transact(fn, durable)
        # One span for the whole transaction (its WATCHed reads, MULTI ... EXEC and any retries).
        with tracing.client_span("atlas transaction", {**self._span_attrs, "db.operation.name": "MULTI"}):
            return await self._transact(fn, durable)

    async def _transact(self, fn: Callable[[Txn], Awaitable[T] | T], durable: bool = True) -> T:
        # Durability is the server's business (see the module doc); `durable` only decides whether a
        # write also waits for replicas (WAIT, when wait_replicas is set).
        wait = self._wait if durable else []
        await self._feed.settled()
        lost = 0
        watched: set[bytes] = set()
        for attempt in range(1, self.max_attempts + 1):
            conn = await self._acquire()
            txn = RemoteTxn(conn)
            clean = sent = False
            try:
                result: Any = fn(txn)
                if inspect.isawaitable(result):
                    result = await result
                if not txn.writes:
                    if txn.watched:
                        await _roundtrip(conn, [[b"UNWATCH"]])
                    clean = True
                    return result  # type: ignore[no-any-return]
                commands = [[b"MULTI"], *txn.writes]
                if self.notify:
                    commands += [[b"PUBLISH", CHANNEL_PREFIX + k, b""] for k in _written_keys(txn.writes)]
                commands.append([b"EXEC"])
                sent = True
                # WAIT goes in the same round trip, on the same connection: it waits for this
                # connection's last write, the EXEC before it.
                replies = await _roundtrip(conn, commands + wait)
                clean = True
                waited = replies.pop() if wait else None
                self._check_exec(txn.writes, replies)
                if replies[-1] is not None:
                    if wait:
                        self._waited(waited)
                    return result  # type: ignore[no-any-return]
                watched |= txn.watched  # a watched key changed: run fn again on the new state
            except _LOST as e:
                if sent:
                    raise HeliosError(f"lost the connection to {self.where} while committing a transaction; it "
                                      f"may or may not have been applied: {e}", code="store_unavailable",
                                      status=503) from e
                lost += 1
                if lost > 2:
                    raise self._unavailable(e) from e
            except BaseException:
                # fn raised (or we were cancelled): leave the connection clean if no reply is owed.
                if not sent and not txn.in_flight:
                    try:
                        await _roundtrip(conn, [[b"UNWATCH"]])
                        clean = True
                    except _LOST:
                        pass
                raise
            finally:
                await self._release(conn, clean=clean)
            # Back off a little, growing, so a crowd of writers on one hot key spreads out.
            await asyncio.sleep(random.uniform(0, min(0.0005 * 2 ** min(attempt, 7), 0.05)))
        shown = ", ".join(repr(k) for k in sorted(watched)[:5]) or "(none)"
        raise ConflictError(f"a transaction on {self.where} gave up after {self.max_attempts} attempts: keys it "
                            f"read kept changing under it (WATCH conflicts on {shown})", code="transaction_conflict")

    @staticmethod
    def _check_exec(writes: list[list[bytes]], replies: list[Any]) -> None:
        exec_reply = replies[-1]
        if isinstance(exec_reply, ResponseError):  # EXECABORT: a command was refused while queueing
            for argv, reply in zip(writes, replies[1:-1], strict=False):
                if isinstance(reply, ResponseError):
                    raise CommandError(f"transaction write {_shown(argv)} was refused, nothing was applied: {reply}")
            raise CommandError(f"transaction refused: {exec_reply}")
        if isinstance(replies[0], ResponseError):
            raise CommandError(f"MULTI refused: {replies[0]}")
        if exec_reply is None:
            return
        for argv, reply in zip(writes, exec_reply, strict=False):
            if isinstance(reply, ResponseError):
                raise CommandError(f"transaction write {_shown(argv)} failed: {reply} (the server applied the "
                                   f"transaction's other writes: Redis-protocol transactions do not roll back)")

    async def run_script(self, op: ScriptOp, keys: list[Key], args: list[Key | int | float], *,
                         durable: bool = True) -> Any:
        """EVALSHA, and EVAL once when the server does not have the script (a restart, SCRIPT FLUSH).

        One round trip either way: no WATCH, nothing to retry on contention, since the server
        runs the script atomically.  `durable` is the server's business, as for transact().
        """
        return (await self._script([], op, keys, args, durable))[1]

    async def read_and_run_script(self, reads: list[Key], op: ScriptOp, keys: list[Key],
                                  args: list[Key | int | float], *,
                                  durable: bool = True) -> tuple[list[bytes | None], Any]:
        """MGET written together with run_script's EVALSHA: one round trip (two on a NOSCRIPT)."""
        return await self._script([to_bytes(k) for k in reads], op, keys, args, durable)

    async def _script(self, reads: list[bytes], op: ScriptOp, keys: list[Key], args: list[Key | int | float],
                      durable: bool) -> tuple[list[bytes | None], Any]:
        return await script_roundtrip(self, self._call, reads, op, [to_bytes(k) for k in keys], args, durable)

    def subscribe(self, prefix: Key) -> Subscription:
        p = to_bytes(prefix)
        return self._feed.add(CHANNEL_PREFIX + glob_escape(p) + b"*", Subscription(p))

    async def close(self) -> None:
        await self._feed.close()
        if self._lean is not None:
            self._lean.disconnect()
        if self._mux is not None:
            self._mux.disconnect()
        await self._pool.disconnect()
        if self._sentinel is not None:
            await self._sentinel.aclose()


class _ChangeFeed:
    """One pub/sub connection per store, shared by its subscriptions (one PSUBSCRIBE per prefix).

    A reader task owns the connection; it reconnects with backoff and, after a
    reconnect, tells every subscription "possibly many changed" (None), since
    messages published meanwhile are lost.
    """

    def __init__(self, store: RemoteStore) -> None:
        self.store = store
        self.subs: dict[bytes, set[Subscription]] = {}
        # PSUBSCRIBEs not yet confirmed, and until when a write waits for them.
        self.pending: dict[bytes, tuple[asyncio.Future[None], float]] = {}
        self.conn: AbstractConnection | None = None
        self.outbox: asyncio.Queue[list[bytes]] | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.closed = False

    def add(self, pattern: bytes, sub: Subscription) -> Subscription:
        if self.closed:
            raise HeliosError("subscribe() on a closed store", code="store_closed")
        subs = self.subs.get(pattern)
        if subs is None:
            subs = self.subs[pattern] = set()
            loop = asyncio.get_running_loop()
            self.pending[pattern] = (loop.create_future(), loop.time() + _SUBSCRIBE_WAIT_SECONDS)
            self._start()
            if self.conn is not None:  # else the reader subscribes every pattern once connected
                self._send([b"PSUBSCRIBE", pattern])
        subs.add(sub)
        pending = self.pending.get(pattern)
        sub._ready = pending[0] if pending is not None else None
        sub._closer = lambda: self.remove(pattern, sub)
        return sub

    def remove(self, pattern: bytes, sub: Subscription) -> None:
        subs = self.subs.get(pattern)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self.subs[pattern]
            self._confirmed(pattern)
            if self.conn is not None and not self.closed:
                self._send([b"PUNSUBSCRIBE", pattern])

    async def settled(self) -> None:
        """Wait (bounded) until every subscription made so far is active on the server."""
        if self.pending:
            until = max(deadline for _, deadline in self.pending.values())
            left = until - asyncio.get_running_loop().time()
            if left > 0:
                await asyncio.wait([fut for fut, _ in self.pending.values()], timeout=left)

    def _confirmed(self, pattern: bytes) -> None:
        fut, _ = self.pending.pop(pattern, (None, 0.0))
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _send(self, command: list[bytes]) -> None:
        assert self.outbox is not None
        self.outbox.put_nowait(command)

    def _start(self) -> None:
        if not self.tasks:
            self.outbox = asyncio.Queue()
            self.tasks = [asyncio.create_task(self._read_loop()), asyncio.create_task(self._send_loop())]

    async def _send_loop(self) -> None:
        assert self.outbox is not None
        while True:
            command = await self.outbox.get()
            conn = self.conn
            if conn is None:
                continue  # the reader re-subscribes everything current when it reconnects
            try:
                await conn.send_packed_command(conn.pack_command(*command))
            except _LOST:
                pass  # the reader notices and reconnects

    async def _read_loop(self) -> None:
        store = self.store
        # A subscriber waits for messages indefinitely: no read timeout on this connection.
        delay, reconnecting = 0.05, False
        while not self.closed:
            conn = store._new_connection(socket_timeout=None)
            try:
                await conn.connect()
                # No await between publishing the connection and listing the patterns: a
                # subscribe() in between would be neither listed nor sent by add().
                self.conn = conn
                patterns = list(self.subs)
                if patterns:
                    await conn.send_packed_command(conn.pack_command(b"PSUBSCRIBE", *patterns))
                if reconnecting:
                    for subs in list(self.subs.values()):
                        for sub in list(subs):
                            sub._deliver(None)
                delay = 0.05
                while True:
                    self._handle(await conn.read_response())
            except asyncio.CancelledError:
                raise
            except (*_LOST, ResponseError):
                pass
            finally:
                self.conn = None
                await conn.disconnect()
            reconnecting = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _handle(self, msg: Any) -> None:
        if not isinstance(msg, list) or not msg:
            return
        kind = msg[0]
        if kind == b"pmessage" and len(msg) == 4:
            _, pattern, channel, _data = msg
            key = channel[len(CHANNEL_PREFIX):]
            for sub in list(self.subs.get(pattern, ())):
                sub._deliver(key)
        elif kind == b"psubscribe" and len(msg) >= 2:
            self._confirmed(msg[1])

    async def close(self) -> None:
        self.closed = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self.tasks = []
        for pattern in list(self.pending):
            self._confirmed(pattern)


async def script_roundtrip(store: Any, send: Callable[..., Awaitable[list[Any]]], reads: list[bytes], op: ScriptOp,
                           ks: list[bytes], args: list[Key | int | float],
                           durable: bool) -> tuple[list[bytes | None], Any]:
    """run_script / read_and_run_script's round trip, for RemoteStore and ClusterStore alike:
    the MGET of `reads`, EVALSHA (EVAL once when the server lacks the script), the change
    announcements and, when durable, WAIT; sent by `send(commands, span name, shared=...)`.
    (values of `reads`, the script's reply)."""
    tail = [b"%d" % len(ks), *ks, *map(to_bytes, args)]
    # Each key once: a batch names its queue's ready set once per job.
    announce = [[b"PUBLISH", CHANNEL_PREFIX + k, b""] for k in dict.fromkeys(ks)
                if not op.notify_only or k.endswith(op.notify_only)] if store.notify and op.notify else []
    if announce:
        await store._feed.settled()
    wait = store._wait if durable else []
    before = [[b"MGET", *reads]] if reads else []
    # WAIT blocks its connection until replicas answer: not on the shared one.
    shared = not wait
    replies = await send([*before, [b"EVALSHA", op.sha, *tail], *announce, *wait], "EVALSHA", shared=shared)
    values: list[bytes | None] = []
    if before:
        got = replies.pop(0)
        if isinstance(got, ResponseError):
            raise CommandError(f"MGET: {got}")
        values = list(got)
    if isinstance(replies[0], NoScriptError):
        replies = await send([[b"EVAL", op.source, *tail], *announce, *wait], None, shared=shared)
    if isinstance(replies[0], ResponseError):
        raise CommandError(f"{op.name}: {replies[0]}")
    if wait:
        store._waited(replies[-1])
    return values, replies[0]
