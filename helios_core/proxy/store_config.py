"""The proxy's config kept in the Store, changed one record at a time, watched live.

Keys (values are JSON objects), all under one hash tag, ``{proxy}``, so that a
change (its record and the version, in one transaction) stays in one slot on
Redis Cluster (DESIGN.md section 7):

- ``proxy:{proxy}:route:ID``   a route, in the YAML shape (``id``, ``prefix``, ``pool``, ...);
- ``proxy:{proxy}:backend:ID`` a backend (``id``, ``url``, ``weight``) and the ``pool`` it belongs to;
- ``proxy:{proxy}:pool:ID``    a pool's settings (``balancer``, ``health``, ``outlier``, ``breaker``, ...).
  Optional: a pool exists once a backend names it, with the model's defaults;
- ``proxy:{proxy}:version``    an integer, incremented in the same transaction as every change.

Stores written before the tag (``proxy:route:ID`` ... ``proxy:version``) are
moved to these names by the first read or change in a process
(`ensure_current`; see its doc for what it promises).

The records are assembled into the YAML document's shape and validated with
the model's ``parse_config``, so the store form and ``proxy.yaml`` cannot
disagree about what a valid config is.  Every change (`add_route`,
`remove_backend`, ...) validates the whole resulting config before anything
is written: a change that would leave the proxy unable to load its config
(a route naming a pool that has no backends any more, a bad URL) is refused
with an `InvalidInputError` naming the record and the field, and nothing is
written.

Why a version key: a change touches two keys or more (the record and the
version), and the writer reads every record outside the transaction (a
`Txn` cannot scan).  The transaction re-reads ``proxy:version`` and gives up
(and the change is retried) when it moved since the records were read, so
a change is validated against exactly the config it changes.  Watchers
use the same key as the cheap "did anything change" question of their
safety-net poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson

from helios_core.errors import ConfigError, ConflictError, HeliosError, InvalidInputError, NotFoundError
from helios_core.observability.logging import get_logger
from helios_core.proxy.model import ProxyConfig, parse_config
from helios_core.store.base import Store, Subscription, Txn

__all__ = [
    "PREFIX", "VERSION_KEY", "ensure_current", "MAX_ROUTES", "MAX_BACKENDS", "MAX_POOLS", "MAX_RECORD_BYTES", "KINDS",
    "StoreConfigSource", "StoreRecords", "read_records", "assemble", "record_key", "validate_id",
    "add_route", "put_route", "get_route", "remove_route", "list_routes",
    "add_backend", "put_backend", "get_backend", "remove_backend", "list_backends",
    "add_pool", "put_pool", "get_pool", "remove_pool", "list_pools",
]

log = get_logger("proxy")

PREFIX = "proxy:{proxy}:"
VERSION_KEY = PREFIX + "version"
# The names before the hash tag (moved by ensure_current).
OLD_PREFIX = "proxy:"
OLD_VERSION_KEY = "proxy:version"
Kind = Literal["route", "backend", "pool"]
KINDS: tuple[Kind, ...] = ("route", "backend", "pool")

# One admin must not be able to make the store (and every proxy's memory and
# reload time: each change re-validates the whole config) grow without bound.
MAX_ROUTES = 1000
MAX_BACKENDS = 1000
MAX_POOLS = 1000
MAX_RECORD_BYTES = 16384
_CAPS: dict[Kind, int] = {"route": MAX_ROUTES, "backend": MAX_BACKENDS, "pool": MAX_POOLS}

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the model's ids: starts with a letter or digit
_ATTEMPTS = 20  # a change raced by others this often is refused (409) rather than looping
_COALESCE_SECONDS = 0.02


def record_key(kind: Kind, record_id: str) -> str:
    return f"{PREFIX}{kind}:{record_id}"


def validate_id(value: Any, what: str = "id") -> str:
    """An id of a route, backend or pool: 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        shown = repr(value[:80]) if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(f"{what}: expected 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit "
                                f"(got {shown})")
    return value


@dataclasses.dataclass
class StoreRecords:
    """Every proxy record of the store at one version, by kind and id."""

    version: int
    routes: dict[str, dict[str, Any]]
    backends: dict[str, dict[str, Any]]
    pools: dict[str, dict[str, Any]]

    def of(self, kind: Kind) -> dict[str, dict[str, Any]]:
        return {"route": self.routes, "backend": self.backends, "pool": self.pools}[kind]

    def copy(self) -> StoreRecords:
        return StoreRecords(self.version, dict(self.routes), dict(self.backends), dict(self.pools))

    def pool_ids(self) -> list[str]:
        """Pools that exist: those with settings, and those a backend names."""
        return sorted(set(self.pools) | {str(b.get("pool")) for b in self.backends.values()})


def _version_of(raw: bytes | None) -> int:
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise HeliosError(f"{VERSION_KEY} holds {raw[:40]!r}, not an integer: the proxy config in the store "
                          f"was written by something else", code="bad_proxy_store") from None


async def _keys(store: Store, prefix: str) -> list[bytes]:
    return sorted(await store.scan_all(prefix))


async def _read_once(store: Store) -> StoreRecords | None:
    before = _version_of(await store.get(VERSION_KEY))
    keys = [k for k in await _keys(store, PREFIX) if k != VERSION_KEY.encode()]
    values = await store.mget(list(keys)) if keys else []
    after = _version_of(await store.get(VERSION_KEY))
    if after != before:
        return None  # changed while we read: the caller reads again
    out = StoreRecords(before, {}, {}, {})
    for key, raw in zip(keys, values, strict=True):
        if raw is None:
            continue  # deleted between the scan and the read (only by a writer that skips the version)
        kind, _, rid = key.decode(errors="replace")[len(PREFIX):].partition(":")
        if kind not in KINDS or not rid:
            continue  # not ours (a later kind of record): ignored, as an older proxy would
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            raise HeliosError(f"{key.decode(errors='replace')}: not a JSON object; remove it or write it again "
                              f"with `helios proxy {kind} add`", code="bad_proxy_store")
        doc["id"] = rid  # the key is the truth about the id
        out.of(kind)[rid] = doc
    return out


# Stores this process has seen in the current layout (ensure_current).
_CURRENT: weakref.WeakSet[Store] = weakref.WeakSet()


async def ensure_current(store: Store) -> int:
    """Move records of the layout before the `{proxy}` hash tag to their current names, once per
    store per process; returns how many keys moved.

    Each record moves in a transaction that reads its old and its new name: the one of two
    processes migrating at once that commits second finds the old key gone and does nothing, and
    a record already under its new name (written since by a current process) wins over the old
    one, which is dropped.  Every move increments the version, and the old version is folded into
    it last (the new one ends above both), so a proxy watching the store reloads.  A migration
    cut short is done again by the next process.  Not covered: a process of the older version
    still writing meanwhile (stop those first).  On Redis Cluster no old record can exist (its
    change transaction was cross-slot and refused), so there is nothing to move.
    """
    if store in _CURRENT:
        return 0
    moved = 0
    old = [k for k in await _keys(store, OLD_PREFIX) if _old_record(k)]
    for key in old:
        one: int = await store.transact(_mover(key))
        moved += one
    if await store.get(OLD_VERSION_KEY) is not None:
        folded: int = await store.transact(_fold_version)
        moved += folded
    _CURRENT.add(store)
    return moved


def _old_record(key: bytes) -> bool:
    kind, _, rid = key.decode(errors="replace")[len(OLD_PREFIX):].partition(":")
    return kind in KINDS and bool(rid) and ":" not in rid and not key.startswith(PREFIX.encode())


def _mover(old: bytes) -> Callable[[Txn], Awaitable[int]]:
    new = PREFIX.encode() + old[len(OLD_PREFIX):]

    async def move(txn: Txn) -> int:
        raw, current = await txn.mget([old, new])
        if raw is None:
            return 0  # moved by another process meanwhile
        if current is None:
            txn.set(new, raw)
        txn.delete(old)
        txn.incrby(VERSION_KEY, 1)
        return 1

    return move


async def _fold_version(txn: Txn) -> int:
    before, now = await txn.mget([OLD_VERSION_KEY, VERSION_KEY])
    if before is None:
        return 0
    txn.set(VERSION_KEY, max(_version_of(before), _version_of(now)) + 1)
    txn.delete(OLD_VERSION_KEY)
    return 1


async def read_records(store: Store) -> StoreRecords:
    """Every proxy record, as one consistent snapshot (re-read while writers move the version)."""
    await ensure_current(store)
    for _ in range(_ATTEMPTS):
        got = await _read_once(store)
        if got is not None:
            return got
        await asyncio.sleep(0.005)
    raise ConflictError("the proxy config keeps changing while it is read; try again", code="proxy_busy")


def assemble(records: StoreRecords) -> dict[str, Any]:
    """The records in the YAML document's shape (what `parse_config` takes)."""
    pools: dict[str, Any] = {}
    for pid in records.pool_ids():
        settings = {k: v for k, v in records.pools.get(pid, {}).items() if k != "id"}
        members = sorted((b for b in records.backends.values() if b.get("pool") == pid), key=lambda b: b["id"])
        pools[pid] = {**settings, "backends": [{k: v for k, v in b.items() if k != "pool"} for b in members]}
    return {"pools": pools, "routes": [records.routes[r] for r in sorted(records.routes)]}


def _located_message(err: ConfigError, records: StoreRecords) -> str:
    """The model's error with list positions replaced by the ids an admin knows.

    ``routes[2].pool: unknown pool`` reads ``route 'api': pool: unknown pool``;
    ``pools.web.backends[0].url: ...`` reads ``backend 'web1': url: ...``.
    """
    route_ids = sorted(records.routes)

    def named(kind: str, rid: str, rest: str | None) -> str:
        return f"{kind} {rid!r}" + (": " if rest else "")

    def route(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return named("route", route_ids[i], m.group(2)) if i < len(route_ids) else m.group(0)

    def backend(m: re.Match[str]) -> str:
        pid, i = m.group(1), int(m.group(2))
        members = sorted(b["id"] for b in records.backends.values() if b.get("pool") == pid)
        return named("backend", members[i], m.group(3)) if i < len(members) else m.group(0)

    text = re.sub(r"\bpools\.([^\s\[\]:']+?)\.backends\[(\d+)\](\.)?", backend, err.message)
    text = re.sub(r"\bpools\.([^\s\[\]:']+?)(\.)(?=[a-z_]+\b)",
                  lambda m: named("pool", m.group(1), m.group(2)), text)
    return re.sub(r"\broutes\[(\d+)\](\.)?", route, text)


def _parse(records: StoreRecords) -> ProxyConfig:
    config = parse_config(assemble(records))
    return dataclasses.replace(config, version=str(records.version))


def _check_record(kind: Kind, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise InvalidInputError(f"a {kind}: expected a JSON object")
    rec: dict[str, Any] = {str(k): v for k, v in record.items()}
    validate_id(rec.get("id"), "id")
    if kind == "backend":
        if "pool" not in rec:
            raise InvalidInputError("pool: required (the pool this backend belongs to)")
        validate_id(rec["pool"], "pool")
    elif kind == "pool" and "backends" in rec:
        raise InvalidInputError("backends: not part of a pool's settings; add each backend with its pool "
                                "(POST /admin/proxy/backends, helios proxy backend add)")
    size = len(orjson.dumps(rec))
    if size > MAX_RECORD_BYTES:
        raise InvalidInputError(f"a {kind} of {size} bytes exceeds the limit of {MAX_RECORD_BYTES} bytes")
    return rec


async def _change(store: Store, kind: Kind, rid: str, new: dict[str, Any] | None, *,
                  mode: Literal["add", "put", "remove"], cap: int | None = None) -> bool:
    """Write (or with `new` None, delete) one record if the resulting config is valid.

    Returns True when the record did not exist before.  Raises ConflictError
    (add of an existing id, a cap reached), NotFoundError (remove of a
    missing one), InvalidInputError (the result would not load).
    """
    key = record_key(kind, rid)
    for _ in range(_ATTEMPTS):
        records = await read_records(store)
        existing = records.of(kind)
        created = rid not in existing
        if mode == "add" and not created:
            raise ConflictError(f"{kind} {rid!r} exists already (replace it with PUT, or remove it first)",
                                code="exists")
        if mode == "remove" and created:
            if kind == "pool" and rid in records.pool_ids():
                raise NotFoundError(f"pool {rid!r} has no settings of its own to remove (it exists because "
                                    f"backends name it: remove those)", code="not_found")
            raise NotFoundError(f"no {kind} {rid!r}", code="not_found")
        limit = _CAPS[kind] if cap is None else cap
        if new is not None and created and len(existing) >= limit:
            raise ConflictError(f"too many proxy {kind}s: at most {limit} may be stored; remove one first",
                                code=f"too_many_{kind}s")
        after = records.copy()
        changed = dict(existing)
        if new is None:
            del changed[rid]
        else:
            changed[rid] = new
        setattr(after, f"{kind}s", changed)
        if kind == "backend" and new is not None and new["pool"] not in records.pool_ids() \
                and len(records.pool_ids()) >= (MAX_POOLS if cap is None else cap):
            raise ConflictError(f"too many proxy pools: at most {MAX_POOLS if cap is None else cap} may exist",
                                code="too_many_pools")
        try:
            _parse(after)
        except ConfigError as e:
            if not (new is None and _is_invalid(records)):
                verb = {"add": "added", "put": "stored", "remove": "removed"}[mode]
                raise InvalidInputError(f"{kind} {rid!r} not {verb}: the proxy config would be invalid: "
                                        f"{_located_message(e, after)}", code="invalid_proxy_config") from None
            # Removing from a config that is invalid already: allowed, so an operator can dig out.

        written: bool = await store.transact(_writer(key, new, records.version))
        if written:
            return created
    raise ConflictError("the proxy config keeps changing under this change; try again", code="proxy_busy")


def _writer(key: str, new: dict[str, Any] | None, version: int) -> Callable[[Txn], Awaitable[bool]]:
    async def write(txn: Txn) -> bool:
        if _version_of(await txn.get(VERSION_KEY)) != version:
            return False  # another change landed since we read: validate again
        if new is None:
            txn.delete(key)
        else:
            txn.set(key, orjson.dumps(new))
        txn.incrby(VERSION_KEY, 1)
        return True

    return write


def _is_invalid(records: StoreRecords) -> bool:
    try:
        _parse(records)
    except ConfigError:
        return True
    return False


async def _get(store: Store, kind: Kind, rid: str) -> dict[str, Any]:
    records = await read_records(store)
    found = records.of(kind).get(rid)
    if found is None:
        raise NotFoundError(f"no {kind} {rid!r}", code="not_found")
    return found


# -- routes ------------------------------------------------------------------------------------------


async def add_route(store: Store, record: dict[str, Any], *, cap: int | None = None) -> dict[str, Any]:
    """Store a new route (409 if its id exists); returns the record as stored."""
    rec = _check_record("route", record)
    await _change(store, "route", rec["id"], rec, mode="add", cap=cap)
    return rec


async def put_route(store: Store, record: dict[str, Any], *, cap: int | None = None) -> bool:
    """Create or replace a route; True when it was created."""
    rec = _check_record("route", record)
    return await _change(store, "route", rec["id"], rec, mode="put", cap=cap)


async def get_route(store: Store, route_id: str) -> dict[str, Any]:
    return await _get(store, "route", route_id)


async def remove_route(store: Store, route_id: str) -> None:
    await _change(store, "route", route_id, None, mode="remove")


async def list_routes(store: Store) -> list[dict[str, Any]]:
    records = await read_records(store)
    return [records.routes[r] for r in sorted(records.routes)]


# -- backends ----------------------------------------------------------------------------------------


async def add_backend(store: Store, record: dict[str, Any], *, cap: int | None = None) -> dict[str, Any]:
    """Store a new backend (its record names its ``pool``); 409 if its id exists."""
    rec = _check_record("backend", record)
    await _change(store, "backend", rec["id"], rec, mode="add", cap=cap)
    return rec


async def put_backend(store: Store, record: dict[str, Any], *, cap: int | None = None) -> bool:
    rec = _check_record("backend", record)
    return await _change(store, "backend", rec["id"], rec, mode="put", cap=cap)


async def get_backend(store: Store, backend_id: str) -> dict[str, Any]:
    return await _get(store, "backend", backend_id)


async def remove_backend(store: Store, backend_id: str) -> None:
    await _change(store, "backend", backend_id, None, mode="remove")


async def list_backends(store: Store) -> list[dict[str, Any]]:
    records = await read_records(store)
    return [records.backends[b] for b in sorted(records.backends)]


# -- pools -------------------------------------------------------------------------------------------


def _pool_view(records: StoreRecords, pid: str) -> dict[str, Any]:
    """A pool's stored settings (if any) and the ids of its backends (read-only here)."""
    members = sorted(b["id"] for b in records.backends.values() if b.get("pool") == pid)
    return {**records.pools.get(pid, {"id": pid}), "backends": members}


async def add_pool(store: Store, record: dict[str, Any], *, cap: int | None = None) -> dict[str, Any]:
    """Store a pool's settings (409 if it has settings already); returns the pool with its backend ids."""
    rec = _check_record("pool", record)
    await _change(store, "pool", rec["id"], rec, mode="add", cap=cap)
    return await get_pool(store, rec["id"])


async def put_pool(store: Store, record: dict[str, Any], *, cap: int | None = None) -> bool:
    rec = _check_record("pool", record)
    return await _change(store, "pool", rec["id"], rec, mode="put", cap=cap)


async def get_pool(store: Store, pool_id: str) -> dict[str, Any]:
    records = await read_records(store)
    if pool_id not in records.pool_ids():
        raise NotFoundError(f"no pool {pool_id!r}", code="not_found")
    return _pool_view(records, pool_id)


async def remove_pool(store: Store, pool_id: str) -> None:
    """Remove a pool's settings (its backends, if any, keep the pool alive with default settings)."""
    await _change(store, "pool", pool_id, None, mode="remove")


async def list_pools(store: Store) -> list[dict[str, Any]]:
    records = await read_records(store)
    return [_pool_view(records, p) for p in records.pool_ids()]


# -- the live source ---------------------------------------------------------------------------------


class StoreConfigSource:
    """The proxy's config from the Store, reloaded when it changes.

    A change is seen through the store's change notification on ``proxy:``
    (the embedded engine's in process; atlasd and Redis through the pub/sub
    channel RemoteStore writers publish on), and, as the safety net for a
    lost notification (a reconnect, a writer that does not publish), by
    polling ``proxy:version`` every `poll_interval` seconds.
    """

    def __init__(self, store: Store, *, poll_interval: float = 5.0) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.store = store
        self.poll_interval = poll_interval
        self.version: int | None = None  # of the last config load() returned
        self.config: ProxyConfig | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._sub: Subscription | None = None
        self._failed_version: int | None = None  # of the last load() that found an invalid config
        self._logged_version: int | None = None

    def describe(self) -> str:
        """For the proxy's start-up log line: which store (a remote one's URL, password hidden)."""
        shown = repr(self.store)
        return f"store {shown}" if not shown.startswith("<") else f"store ({type(self.store).__name__})"

    async def load(self) -> ProxyConfig:
        """The config as stored now; raises ConfigError when what is stored does not validate."""
        records = await read_records(self.store)
        try:
            config = _parse(records)
        except ConfigError as e:
            self._failed_version = records.version
            raise ConfigError(f"the proxy config in the store (version {records.version}) is invalid: "
                              f"{_located_message(e, records)}") from None
        self.version, self.config = records.version, config
        return config

    async def watch(self, on_change: Callable[[ProxyConfig], None]) -> None:
        """Call `on_change(config)` with every new valid config until cancelled or closed.

        The first call is made at once if `load()` has not run yet.  An invalid
        stored config is logged (once per version) and skipped: the running
        config stays.
        """
        if self._closed:
            return
        sub = self._sub = self.store.subscribe(PREFIX)
        pump = asyncio.ensure_future(self._pump(sub))
        try:
            with contextlib.suppress(TimeoutError):
                await sub.ready(min(self.poll_interval, 5.0))  # a slow confirmation: the poll covers it
            # A change between the caller's load() and the subscription: caught by this first check.
            await self._check(on_change, full=self.version is None)
            while not self._closed:
                woken = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                    woken = True
                    # One change notifies twice (its record and the version) and an admin script
                    # makes several: one reload for the lot.
                    await asyncio.sleep(_COALESCE_SECONDS)
                self._wake.clear()
                if self._closed:
                    break
                await self._check(on_change, full=woken)
        finally:
            pump.cancel()
            sub.close()
            self._sub = None

    async def _pump(self, sub: Subscription) -> None:
        async for _key in sub:
            self._wake.set()

    async def _check(self, on_change: Callable[[ProxyConfig], None], *, full: bool) -> None:
        """Reload when notified (`full`), or when the version moved (the poll)."""
        try:
            if not full and self.version is not None \
                    and _version_of(await self.store.get(VERSION_KEY)) == self.version:
                return
            previous = self.config
            try:
                config = await self.load()
            except ConfigError as e:
                if self._logged_version != self._failed_version:
                    self._logged_version = self._failed_version
                    log.error("proxy config in the store not applied; the running config stays", error=str(e))
                return
        except Exception as e:  # a store hiccup (a restart, a timeout) must not end the watch
            log.warning("proxy config: cannot read the store; will retry", error=str(e))
            return
        if config != previous:
            try:
                on_change(config)
            except Exception:
                log.opt(exception=True).error("proxy config: applying a new config failed")

    def close(self) -> None:
        """End `watch` (it returns) and drop the subscription; the store stays open (the caller's)."""
        self._closed = True
        self._wake.set()
        if self._sub is not None:
            self._sub.close()
