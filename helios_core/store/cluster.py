"""ClusterStore: the Store contract on a Redis Cluster (`redis+cluster://` URLs).

redis-py's asyncio `RedisCluster` keeps the cluster's map: which primary
serves which of the 16384 hash slots (CLUSTER SLOTS on start, updated from
each MOVED reply), and a connection pool per node.  Every round trip of
this store goes to the primary owning the slot of the keys it names, on a
connection from that node's pool, so that the protocol stays RemoteStore's
(store/remote.py): raw replies, WATCH/MULTI/EXEC transactions with the same
retry loop, EVALSHA with the change announcements and WAIT in the same
round trip.  A MOVED reply moves the slot in redis-py's map (`move_slot`)
and the round trip is repeated on the new owner; ASK (a slot being
migrated) repeats it once on the target after ASKING; TRYAGAIN and
CLUSTERDOWN (a migration's multi-key window, a failover) are retried after
a short pause.  A transaction that meets one of these before EXEC starts
over (nothing was applied: the EXEC was refused or never sent).

What is per slot, and so what the key layout must give (DESIGN.md section 7):

- a transaction (`transact`) runs on one node, WATCHing and writing keys of
  ONE hash slot.  A transaction that touches keys in two slots is a
  programming error: CrossSlotError names two of the keys and their slots,
  before anything is sent.  Keys share a slot by sharing a hash tag, the
  part between the first `{` and the next `}` (`job:{emails}:ready` and
  `job:{emails}:leased`).
- a script (`run_script`) likewise: its KEYS must share one slot.
- `read_and_run_script`: its reads are plain reads, not part of the
  operation (Store's contract), so reads in other slots than the script's
  are read by their own MGETs, concurrently with the script: the same
  latency, two or more round trips instead of one.  Reads in the script's
  slot go in the same round trip as the script, as on one server.
- `mget` and `Store.delete` are split per slot (MGET / one transaction per
  slot, concurrently); neither promises atomicity across keys.
- `scan` pages through every primary in turn; its cursor names the node
  (by its place in the sorted list of primaries) and that node's cursor.
  A failover or resharding during an iteration may repeat or miss keys
  that moved.

Change notification is RemoteStore's: a write PUBLISHes `helios:changes:<key>`
inside its MULTI (or beside its EVALSHA); a Redis Cluster forwards classic
PUBLISH to every node, so the change feed PSUBSCRIBEs on one node, whichever
answers.  That forwarding is asynchronous: once `Subscription.ready()`
returns, every later change is delivered, but a change announced on another
node just before may still arrive after it (a spare wake-up: subscribers
re-read).  A write made while the feed's node is down is missed as on one
server: the feed reconnects (to another node) and tells its subscribers to
re-read everything.

Replicas (`store.wait_replicas`): WAIT is sent after a write on the same
connection, as RemoteStore does; on a cluster it waits for the replicas of
the primary that took the write.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MaxConnectionsError,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)

from helios_core.errors import CommandError, ConfigError, ConflictError, HeliosError
from helios_core.store.base import Key, Store, Subscription, Txn, glob_escape, to_bytes
from helios_core.store.remote import (
    _LOST,
    CHANNEL_PREFIX,
    MAX_ATTEMPTS,
    POOL_CONNECTIONS,
    POOL_WAIT_SECONDS,
    RemoteStore,
    _ChangeFeed,
    _is_auth_failure,
    _RemoteReads,
    _roundtrip,
    _written_keys,
    script_roundtrip,
)
from helios_core.store.resp import RespConnection, RespMux, RespPool
from helios_core.store.scripts import ScriptOp
from helios_core.store.url import StoreURL, parse_store_url

__all__ = ["ClusterStore", "CrossSlotError", "slot_of", "same_slot"]

T = TypeVar("T")
Conn = Connection | RespConnection

REDIRECTS = 5  # MOVED/ASK/TRYAGAIN followed per round trip before giving up
_PAUSE = 0.05  # seconds before retrying TRYAGAIN / CLUSTERDOWN (a migration or failover in progress)


def slot_of(key: Key) -> int:
    """The hash slot of a key, as Redis Cluster computes it (CRC16 of its hash tag, or of the key)."""
    return key_slot(to_bytes(key))


class CrossSlotError(HeliosError):
    """A transaction or script named keys in different hash slots: a key-layout bug, not a runtime
    condition (nothing was sent)."""

    code = "cross_slot"
    status = 500


def same_slot(keys: Iterable[bytes], what: str, where: str = "a Redis Cluster") -> int | None:
    """The one slot of `keys` (None when there are none); CrossSlotError naming two of them otherwise."""
    slot: int | None = None
    first = b""
    for k in keys:
        s = key_slot(k)
        if slot is None:
            slot, first = s, k
        elif s != slot:
            raise CrossSlotError(
                f"{what} on {where} touches keys in different hash slots: {first!r} (slot {slot}) and "
                f"{k!r} (slot {s}); it runs on one node, so every key it reads or writes must share a hash "
                f"tag (the part between '{{' and '}}', as job:{{emails}}:ready and job:{{emails}}:leased do; "
                f"DESIGN.md section 7)", detail={"keys": [first.decode(errors="replace"), k.decode(errors="replace")],
                                                 "slots": [slot, s]})
    return slot


def _redirect(replies: list[Any]) -> ResponseError | None:
    for r in replies:
        if isinstance(r, AskError | TryAgainError | ClusterDownError):  # (MovedError is an AskError)
            return r
    return None


class _Redirected(Exception):
    def __init__(self, error: ResponseError) -> None:
        super().__init__(str(error))
        self.error = error


class ClusterTxn(_RemoteReads, Txn):
    """A transaction attempt: its first read picks the slot and a connection to its node; every
    later read and write must be in that slot."""

    def __init__(self, store: ClusterStore) -> None:
        Txn.__init__(self)
        self.store = store
        self.slot: int | None = None
        self.first = b""
        self.node: ClusterNode | None = None
        self.conn: Conn | None = None
        self.watched: set[bytes] = set()
        self.lock = asyncio.Lock()
        self.in_flight = False

    def pin(self, keys: list[bytes]) -> None:
        pinned = [self.first] if self.slot is not None else []
        slot = same_slot([*pinned, *keys], "a transaction", self.store.where)
        if self.slot is None and slot is not None:
            self.slot, self.first = slot, keys[0]

    async def connect(self) -> Conn:
        if self.conn is None:
            assert self.slot is not None
            self.node, self.conn = await self.store._acquire(self.slot)
        return self.conn

    async def _read(self, argv: list[bytes], keys: list[bytes]) -> Any:
        async with self.lock:
            self.pin(keys)
            conn = await self.connect()
            new = [k for k in dict.fromkeys(keys) if k not in self.watched]
            commands = [[b"WATCH", *new], argv] if new else [argv]
            self.in_flight = True
            replies = await _roundtrip(conn, commands)
            self.in_flight = False
            self.watched.update(new)
        moved = _redirect(replies)
        if moved is not None:
            raise _Redirected(moved)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise CommandError(str(reply))
        return replies[-1]


class ClusterStore(_RemoteReads, Store):
    def __init__(self, target: StoreURL | str, *, max_attempts: int = MAX_ATTEMPTS, notify: bool = True,
                 wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        """`target`: a redis+cluster:// URL or a parsed one; the rest as RemoteStore's."""
        self.target = parse_store_url(target) if isinstance(target, str) else target
        if self.target.kind != "cluster":
            raise ConfigError(f"ClusterStore needs a redis+cluster:// URL, not {self.target.redacted}")
        self.where = self.target.redacted
        self.max_attempts = max_attempts
        self.notify = notify
        if wait_replicas < 0 or wait_timeout_ms < 1:
            raise ConfigError("wait_replicas must be 0 or more and wait_timeout_ms 1 or more",
                              key="store.wait_replicas")
        self.wait_replicas, self.wait_timeout_ms = wait_replicas, wait_timeout_ms
        self._wait = [[b"WAIT", b"%d" % wait_replicas, b"%d" % wait_timeout_ms]] if wait_replicas else []
        t = self.target
        kwargs: dict[str, Any] = {
            "username": t.username, "password": t.password, "socket_timeout": t.timeout,
            "socket_connect_timeout": t.connect_timeout or 10.0, "decode_responses": False, "protocol": 2}
        if t.ssl:
            kwargs["ssl"] = True
            kwargs.update(t.tls)
        self._kwargs = kwargs
        self._cluster = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in t.sentinels],
                                     max_connections=POOL_CONNECTIONS, **kwargs)
        self._ready_lock = asyncio.Lock()
        self._initialized = False
        # Round trips go over our lean connections (store/resp.py says why), one pool per node; over
        # TLS over redis-py's node pools, which raise at max_connections instead of queueing: queue here.
        self._lean: dict[str, RespPool] = {}
        self._muxes: dict[str, RespMux] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        # The feed only calls _new_connection on its store (see _new_connection).
        self._feed = _ChangeFeed(cast(RemoteStore, self))

    def __repr__(self) -> str:
        return f"ClusterStore({self.where!r})"

    # -- topology and connections ---------------------------------------------------------

    def _unavailable(self, e: BaseException) -> HeliosError:
        if _is_auth_failure(e):
            return HeliosError(f"the cluster at {self.where} refused our credentials: {e}; put the password in "
                               f"the URL (redis+cluster://:PASSWORD@HOST or ?password=...)",
                               code="store_auth", status=503)
        return HeliosError(f"cannot reach the cluster at {self.where}: {e}", code="store_unavailable", status=503)

    async def _ready(self) -> None:
        if self._initialized:
            return
        async with self._ready_lock:
            if not self._initialized:
                try:
                    await self._cluster.initialize()
                except (*_LOST, RedisError, RedisClusterException) as e:
                    raise self._unavailable(e) from e
                self._initialized = True

    async def _refresh(self) -> None:
        """Read the slot map again (after a lost connection: a failover may have moved slots)."""
        try:
            await self._cluster.nodes_manager.initialize()
        except (*_LOST, RedisError, RedisClusterException) as e:
            raise self._unavailable(e) from e

    async def _node_of(self, slot: int) -> tuple[ClusterNode, None]:
        await self._ready()
        try:
            return self._cluster.nodes_manager.get_node_from_slot(slot), None
        except RedisClusterException as e:  # SlotNotCoveredError: a primary is down and not replaced yet
            raise self._unavailable(e) from e

    async def _acquire(self, slot: int) -> tuple[ClusterNode, Conn]:
        node, _ = await self._node_of(slot)
        return node, await self._node_connection(node)

    def _mux_of(self, node: ClusterNode) -> RespMux:
        mux = self._muxes.get(node.name)
        if mux is None:
            mux = self._muxes[node.name] = RespMux(self._opener(node))
        return mux

    def _opener(self, node: ClusterNode) -> Callable[[], Awaitable[RespConnection]]:
        t, host, port = self.target, node.host, int(node.port)

        async def opener() -> RespConnection:
            return await RespConnection.open(host=host, port=port, username=t.username, password=t.password,
                                             connect_timeout=t.connect_timeout or 10.0, timeout=t.timeout)

        return opener

    async def _node_connection(self, node: ClusterNode) -> Conn:
        if not self.target.ssl:
            return await self._lean_connection(node)
        sem = self._slots.get(node.name)
        if sem is None:
            sem = self._slots[node.name] = asyncio.Semaphore(POOL_CONNECTIONS)
        try:
            if sem.locked():  # (wait_for costs a task: only when there is something to wait for)
                await asyncio.wait_for(sem.acquire(), self.target.timeout or POOL_WAIT_SECONDS)
            else:
                await sem.acquire()
        except TimeoutError as e:
            raise HeliosError(f"no free connection to {node.name} of {self.where} within "
                              f"{self.target.timeout or POOL_WAIT_SECONDS} s", code="store_unavailable",
                              status=503) from e
        try:
            conn = node.acquire_connection()
            if not conn.is_connected:
                await conn.connect()
        except BaseException as e:
            sem.release()
            if isinstance(e, MaxConnectionsError | ResponseError | _LOST):
                raise self._unavailable(e) from e
            raise
        return conn

    async def _lean_connection(self, node: ClusterNode) -> RespConnection:
        pool = self._lean.get(node.name)
        if pool is None:
            pool = self._lean[node.name] = RespPool(self._opener(node), POOL_CONNECTIONS,
                                                    self.target.timeout or POOL_WAIT_SECONDS)
        try:
            return await pool.get()
        except ResponseError as e:  # NOAUTH / WRONGPASS while connecting
            raise HeliosError(f"the cluster at {self.where} refused the connection to {node.name}: {e}",
                              code="store_auth", status=503) from e
        except _LOST as e:
            raise self._unavailable(e) from e

    async def _release(self, node: ClusterNode | None, conn: Conn | None, *, clean: bool) -> None:
        if node is None or conn is None:
            return
        if isinstance(conn, RespConnection):
            self._lean[node.name].release(conn, clean=clean)
            return
        if not clean:  # a reply unread, WATCH or MULTI open: start over on a new socket
            await conn.disconnect()
        node.release(conn)
        self._slots[node.name].release()

    def _new_connection(self, **overrides: Any) -> AbstractConnection:
        """A connection outside the pools (the change feed's) to one primary, whichever: any node
        hears every PUBLISH of the cluster."""
        try:
            nodes = self._cluster.get_primaries() if self._initialized else []
        except RedisClusterException:
            nodes = []
        if nodes:
            node = random.choice(nodes)
            return node.connection_class(**{**node.connection_kwargs, **overrides})
        host, port = random.choice(self.target.sentinels)
        from redis.asyncio.connection import SSLConnection

        cls = SSLConnection if self.target.ssl else Connection
        return cls(host=host, port=port, **{**self._kwargs, **overrides})

    async def _on_slot(self, slot: int, commands: list[list[bytes]], *, shared: bool = False) -> list[Any]:
        """One round trip to the primary owning `slot`, following MOVED/ASK/TRYAGAIN; every reply, an
        error reply as a ResponseError in its place.  Retried once on a fresh connection when lost.
        `shared`: the commands never block a connection (reads, scripts without WAIT): they go out on
        the node's multiplexed connection with other callers' (store/resp.py's RespMux)."""
        asking: ClusterNode | None = None
        lost = 0
        for _ in range(REDIRECTS + 2):
            if asking is None and shared and not self.target.ssl:
                node, _ = await self._node_of(slot)
                try:
                    replies = await self._mux_of(node).roundtrip(commands)
                except _LOST as e:
                    lost += 1
                    if lost > 1 or _is_auth_failure(e):
                        raise self._unavailable(e) from e
                    await self._refresh()
                    continue
                except ResponseError as e:  # refused while connecting
                    raise HeliosError(f"the cluster at {self.where} refused the connection to {node.name}: {e}",
                                      code="store_auth", status=503) from e
                moved = _redirect(replies)
                if moved is None:
                    return replies
                asking = await self._follow(moved)
                continue
            if asking is not None:
                node = asking
                conn = await self._node_connection(node)
                sent = [c for argv in commands for c in ([b"ASKING"], argv)]
            else:
                node, conn = await self._acquire(slot)
                sent = commands
            clean = False
            try:
                replies = await _roundtrip(conn, sent)
                clean = True
            except _LOST as e:
                lost += 1
                if lost > 1 or _is_auth_failure(e):
                    raise self._unavailable(e) from e
            finally:
                await self._release(node, conn, clean=clean)
            if not clean:  # lost: a failover may have moved the slot
                await self._refresh()
                asking = None
                continue
            if asking is not None:
                replies = replies[1::2]
                asking = None
            moved = _redirect(replies)
            if moved is None:
                return replies
            asking = await self._follow(moved)
        raise HeliosError(f"the cluster at {self.where} kept redirecting slot {slot} (a resharding or failover "
                          f"in progress?)", code="store_unavailable", status=503)

    async def _follow(self, e: ResponseError) -> ClusterNode | None:
        """Act on a redirect: MOVED updates the slot map, ASK names the node to ask once; else wait a little."""
        if isinstance(e, MovedError):
            await self._cluster.nodes_manager.move_slot(e)
            return None
        if isinstance(e, AskError):
            node = self._cluster.nodes_manager.get_node(host=e.host, port=e.port)
            if node is None:
                await self._refresh()
                return None
            return node
        await asyncio.sleep(_PAUSE)  # TRYAGAIN / CLUSTERDOWN
        return None

    def _waited(self, reply: Any) -> None:
        RemoteStore._waited(cast(RemoteStore, self), reply)  # the same message and checks

    # -- reads ----------------------------------------------------------------------------

    async def _read(self, argv: list[bytes], keys: list[bytes]) -> Any:
        slot = same_slot(keys, argv[0].decode(), self.where)
        (reply,) = await self._on_slot(0 if slot is None else slot, [argv], shared=True)
        if isinstance(reply, ResponseError):
            raise CommandError(str(reply))
        return reply

    async def mget(self, keys: list[Key]) -> list[bytes | None]:
        ks = [to_bytes(k) for k in keys]
        by_slot: dict[int, list[int]] = {}
        for i, k in enumerate(ks):
            by_slot.setdefault(key_slot(k), []).append(i)
        if len(by_slot) <= 1:
            return await super().mget(keys)
        out: list[bytes | None] = [None] * len(ks)

        async def one(idx: list[int]) -> None:
            for i, v in zip(idx, await self._read([b"MGET", *(ks[i] for i in idx)], [ks[i] for i in idx]),
                            strict=True):
                out[i] = v

        await asyncio.gather(*(one(idx) for idx in by_slot.values()))
        return out

    async def execute(self, *args: Key | int | float, **kwargs: Any) -> Any:
        """Any command, routed by redis-py (`target_nodes=` as RedisCluster.execute_command takes it)."""
        await self._ready()
        try:
            return await self._cluster.execute_command(*args, **kwargs)
        except ResponseError as e:
            raise CommandError(str(e)) from e
        except (*_LOST, RedisError, RedisClusterException) as e:
            raise self._unavailable(e) from e

    async def ping(self) -> None:
        """Raise HeliosError unless every primary answers (and accepts our credentials)."""
        await self._ready()
        for node in self._primaries():
            reply = await self._node_call(node, [b"PING"])
            if isinstance(reply, ResponseError):
                raise self._unavailable(reply)

    async def _node_call(self, node: ClusterNode, argv: list[bytes]) -> Any:
        """One command on `node` itself (not routed by slot): its reply, an error reply as a value."""
        conn = await self._node_connection(node)
        clean = False
        try:
            (reply,) = await _roundtrip(conn, [argv])
            clean = True
        except _LOST as e:
            raise self._unavailable(e) from e
        finally:
            await self._release(node, conn, clean=clean)
        return reply

    def _primaries(self) -> list[ClusterNode]:
        return sorted(self._cluster.get_primaries(), key=lambda n: n.name)

    # -- Store ----------------------------------------------------------------------------

    async def scan(self, prefix: Key = b"", cursor: str = "0", count: int = 100) -> tuple[str, list[bytes]]:
        """A page from the primaries in turn: a node's pages, then the next node's, in the same call
        while the page has fewer than `count` keys.  The cursor is "<primary index>:<its cursor>"
        ("0" to start and at the end)."""
        await self._ready()
        primaries = self._primaries()
        index, _, node_cursor = cursor.partition(":") if cursor != "0" else ("0", "", "0")
        try:
            i = int(index)
        except ValueError:
            raise CommandError(f"invalid cursor {cursor!r}") from None
        pattern = glob_escape(to_bytes(prefix)) + b"*"
        page: dict[bytes, None] = {}
        while i < len(primaries):
            nxt, keys = await self._scan_node(primaries[i], node_cursor or "0", pattern, count)
            page.update(dict.fromkeys(keys))
            if nxt != "0":
                node_cursor = nxt
                if len(page) >= count:
                    return f"{i}:{nxt}", list(page)
                continue
            i, node_cursor = i + 1, "0"
            if len(page) >= count and i < len(primaries):
                return f"{i}:0", list(page)
        return "0", list(page)

    async def _scan_node(self, node: ClusterNode, cursor: str, pattern: bytes, count: int) -> tuple[str, list[bytes]]:
        reply = await self._node_call(node, [b"SCAN", cursor.encode(), b"MATCH", pattern, b"COUNT", b"%d" % count])
        if isinstance(reply, ResponseError):
            raise CommandError(str(reply))
        nxt, keys = reply
        return (nxt.decode() if isinstance(nxt, bytes) else str(nxt)), list(keys)

    async def delete(self, *keys: Key) -> None:
        """Per slot: one transaction each (DEL promises no atomicity across keys)."""
        groups: dict[int, list[Key]] = {}
        for k in keys:
            groups.setdefault(slot_of(k), []).append(k)

        async def one(ks: list[Key]) -> None:
            await self.transact(lambda t: t.delete(*ks))

        await asyncio.gather(*(one(ks) for ks in groups.values()))

    async def transact(self, fn: Callable[[Txn], Awaitable[T] | T], *, durable: bool = True) -> T:
        wait = self._wait if durable else []
        await self._feed.settled()
        lost = 0
        watched: set[bytes] = set()
        for attempt in range(1, self.max_attempts + 1):
            txn = ClusterTxn(self)
            clean = sent = False
            try:
                try:
                    result: Any = fn(txn)
                    if inspect.isawaitable(result):
                        result = await result
                except _Redirected as r:  # a read met MOVED/ASK: the slot map changed; start over
                    clean = not txn.in_flight
                    if txn.watched and txn.conn is not None and clean:
                        await _roundtrip(txn.conn, [[b"UNWATCH"]])
                    await self._follow(r.error)
                    continue
                if not txn.writes:
                    if txn.watched and txn.conn is not None:
                        await _roundtrip(txn.conn, [[b"UNWATCH"]])
                    clean = True
                    return result  # type: ignore[no-any-return]
                written = _written_keys(txn.writes)
                txn.pin(written)
                conn = await txn.connect()
                commands = [[b"MULTI"], *txn.writes]
                if self.notify:
                    commands += [[b"PUBLISH", CHANNEL_PREFIX + k, b""] for k in written]
                commands.append([b"EXEC"])
                sent = True
                replies = await _roundtrip(conn, commands + wait)
                clean = True
                waited = replies.pop() if wait else None
                moved = _redirect(replies)
                if moved is not None:  # refused while queueing: EXECABORT, nothing applied
                    await self._follow(moved)
                    continue
                RemoteStore._check_exec(txn.writes, replies)
                if replies[-1] is not None:
                    if wait:
                        self._waited(waited)
                    return result  # type: ignore[no-any-return]
                watched |= txn.watched
            except _LOST as e:
                if sent:
                    raise HeliosError(f"lost the connection to {self.where} while committing a transaction; it "
                                      f"may or may not have been applied: {e}", code="store_unavailable",
                                      status=503) from e
                lost += 1
                if lost > 2:
                    raise self._unavailable(e) from e
                await self._release(txn.node, txn.conn, clean=False)
                txn.node = txn.conn = None
                await self._refresh()
            except BaseException:
                if not sent and not txn.in_flight and txn.conn is not None:
                    try:
                        await _roundtrip(txn.conn, [[b"UNWATCH"]])
                        clean = True
                    except _LOST:
                        pass
                raise
            finally:
                await self._release(txn.node, txn.conn, clean=clean)
            await asyncio.sleep(random.uniform(0, min(0.0005 * 2 ** min(attempt, 7), 0.05)))
        shown = ", ".join(repr(k) for k in sorted(watched)[:5]) or "(none)"
        raise ConflictError(f"a transaction on {self.where} gave up after {self.max_attempts} attempts: keys it "
                            f"read kept changing under it (WATCH conflicts on {shown})", code="transaction_conflict")

    async def run_script(self, op: ScriptOp, keys: list[Key], args: list[Key | int | float], *,
                         durable: bool = True) -> Any:
        """EVALSHA on the primary owning the KEYS' one slot (EVAL when it lacks the script)."""
        return (await self._script([], op, keys, args, durable))[1]

    async def read_and_run_script(self, reads: list[Key], op: ScriptOp, keys: list[Key],
                                  args: list[Key | int | float], *,
                                  durable: bool = True) -> tuple[list[bytes | None], Any]:
        """The reads in the script's slot go in its round trip; any others are read first, by their own
        MGETs (per slot, concurrently): a round trip more, and each value still as it was before the
        script ran, as the contract says."""
        rs = [to_bytes(k) for k in reads]
        slot = same_slot([to_bytes(k) for k in keys], f"script {op.name}", self.where)
        near = [i for i, k in enumerate(rs) if key_slot(k) == slot]
        if len(near) == len(rs):
            return await self._script(rs, op, keys, args, durable)
        far = [i for i, k in enumerate(rs) if key_slot(k) != slot]
        values: list[bytes | None] = [None] * len(rs)
        for i, v in zip(far, await self.mget([rs[i] for i in far]), strict=True):
            values[i] = v
        got, reply = await self._script([rs[i] for i in near], op, keys, args, durable)
        for i, v in zip(near, got, strict=True):
            values[i] = v
        return values, reply

    async def _script(self, reads: list[bytes], op: ScriptOp, keys: list[Key], args: list[Key | int | float],
                      durable: bool) -> tuple[list[bytes | None], Any]:
        ks = [to_bytes(k) for k in keys]
        slot = same_slot(ks, f"script {op.name}", self.where)
        where = 0 if slot is None else slot

        async def send(commands: list[list[bytes]], name: str | None, *, shared: bool) -> list[Any]:
            return await self._on_slot(where, commands, shared=shared)

        return await script_roundtrip(self, send, reads, op, ks, args, durable)

    def slot(self, key: Key) -> int:
        return slot_of(key)

    def subscribe(self, prefix: Key) -> Subscription:
        p = to_bytes(prefix)
        return self._feed.add(CHANNEL_PREFIX + glob_escape(p) + b"*", Subscription(p))

    async def close(self) -> None:
        await self._feed.close()
        for pool in self._lean.values():
            pool.disconnect()
        for mux in self._muxes.values():
            mux.disconnect()
        await self._cluster.aclose()
