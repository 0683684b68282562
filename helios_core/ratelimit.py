"""Token-bucket rate limiting with its state in the Store.

A bucket of `limit` tokens refills at `limit` tokens per `window_s` seconds
(the IETF RateLimit draft's quota `q` over window `w`).  Arithmetic is in
integer milli-tokens and milliseconds, so no float rounding ever admits a
request the bucket does not hold.

State lives at ``rate:{auth}:CLIENT`` (BUCKET_PREFIX) as ``b"<milli>:<last_ms>"`` with a TTL of
the time it takes to fill up again: an absent key is a full bucket, so idle
clients cost nothing.  Each decision is one atomic store operation,
`store.scripts.RATE_TAKE` (read, decide, write on the server: one EVALSHA
round trip on Redis or atlasd, one engine step embedded), which is what makes
it exact under concurrency: 200 requests racing on a bucket of N admit
exactly N, and none of them waits for or fails on the others (a WATCH retry
loop did, up to 409s).  `take()` below is the model that script must agree
with (tests/contract/test_store_scripts.py).  The write passes
``durable=False``: losing the last second of bucket state in a crash only
forgives a few requests, and a rate limiter that waited for fsync would
rate-limit the disk instead.

Policies (default, per role, per client) come from configuration, overridden
by a settings document an admin can change at run time (`SETTINGS_KEY`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import orjson

from helios_core.errors import ConfigError, HeliosError, InvalidInputError
from helios_core.store.base import Key, Store, Txn
from helios_core.store.scripts import RATE_MIN_TTL_MS, RATE_TAKE, Write

__all__ = [
    "Policy",
    "Bucket",
    "Decision",
    "RateLimitSettings",
    "RateLimiter",
    "SETTINGS_KEY",
    "take",
    "level",
    "parse_policy_entries",
    "validate_overrides",
    "apply_overrides",
]

# The settings and every bucket share the auth keys' hash tag {auth}: RATE_TAKE reads both (one slot
# on Redis Cluster), and the gateway reads a caller's token, user and roles beside them.
SETTINGS_KEY = "config:{auth}:ratelimit"
BUCKET_PREFIX = "rate:{auth}:"
MILLI = 1000
# A decision retried because the settings document changed between choosing the policy and
# taking the token; only a storm of admin changes could use them all.
_SETTINGS_RETRIES = 8


@dataclass(frozen=True)
class Policy:
    limit: int  # bucket capacity in tokens; also the refill per window
    window_s: int  # seconds to refill `limit` tokens
    name: str = "default"

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or isinstance(self.limit, bool) or self.limit < 1:
            raise InvalidInputError(f"rate limit 'limit' must be an integer >= 1, got {self.limit!r}")
        if not isinstance(self.window_s, int) or isinstance(self.window_s, bool) or self.window_s < 1:
            raise InvalidInputError(f"rate limit 'window' must be an integer >= 1 (seconds), got {self.window_s!r}")

    @property
    def capacity_milli(self) -> int:
        return self.limit * MILLI

    def ms_for(self, milli: int) -> int:
        """Milliseconds the bucket takes to gain `milli` milli-tokens (rounded up)."""
        # rate = limit * 1000 milli / (window_s * 1000 ms) = limit / window_s milli per ms
        return -(-milli * self.window_s // self.limit)

    def to_json(self) -> dict[str, int]:
        return {"limit": self.limit, "window": self.window_s}


class Bucket(NamedTuple):  # NamedTuples: built on every request, and much cheaper than frozen dataclasses
    milli: int
    last_ms: int

    def encode(self) -> bytes:
        return b"%d:%d" % (self.milli, self.last_ms)

    @classmethod
    def decode(cls, raw: bytes | None) -> Bucket | None:
        if raw is None:
            return None
        try:
            milli, last = raw.split(b":")
            return cls(int(milli), int(last))
        except ValueError:  # damaged state: treat as a full bucket rather than refuse forever
            return None


class Decision(NamedTuple):
    allowed: bool
    policy: Policy
    remaining: int  # whole tokens left after this request
    reset_ms: int  # until the bucket is full again
    retry_after_ms: int  # until one more token is there (0 when allowed)


def level(bucket: Bucket | None, policy: Policy, now_ms: int) -> Bucket:
    """The bucket refilled up to `now_ms` (a full one when there is no state)."""
    cap = policy.capacity_milli
    if bucket is None:
        return Bucket(cap, now_ms)
    milli = min(bucket.milli, cap)  # the policy may have shrunk since the state was written
    elapsed = now_ms - bucket.last_ms
    if elapsed <= 0:
        return Bucket(milli, bucket.last_ms)
    gained = elapsed * policy.limit // policy.window_s
    if milli + gained >= cap:
        return Bucket(cap, now_ms)
    # Advance the clock only by the time the gained milli-tokens took, so the
    # remainder keeps counting: with many requests per ms-of-refill, setting
    # last_ms = now would throw the fractions away and the bucket never refill.
    return Bucket(milli + gained, bucket.last_ms + gained * policy.window_s // policy.limit)


def take(bucket: Bucket | None, policy: Policy, now_ms: int, cost: int = 1) -> tuple[Decision, Bucket | None]:
    """Decide one request; returns the decision and the state to write (None: nothing changes)."""
    cur = level(bucket, policy, now_ms)
    need = cost * MILLI
    if cur.milli >= need:
        new = Bucket(cur.milli - need, cur.last_ms)
        reset = _until_full(new, policy, now_ms)
        return Decision(True, policy, new.milli // MILLI, reset, 0), new
    retry = max(1, cur.last_ms + policy.ms_for(need - cur.milli) - now_ms) if need <= policy.capacity_milli else 0
    return Decision(False, policy, cur.milli // MILLI, _until_full(cur, policy, now_ms), retry), None


def _until_full(b: Bucket, policy: Policy, now_ms: int) -> int:
    return max(0, b.last_ms + policy.ms_for(policy.capacity_milli - b.milli) - now_ms)


def parse_policy_entries(entries: Iterable[str], what: str) -> dict[str, Policy]:
    """Config entries "NAME LIMIT SECONDS" as {NAME: Policy}; ConfigError names the bad one."""
    out: dict[str, Policy] = {}
    for entry in entries:
        parts = entry.split()
        try:
            if len(parts) != 3:
                raise ValueError
            out[parts[0]] = Policy(int(parts[1]), int(parts[2]), parts[0])
        except (ValueError, InvalidInputError):
            raise ConfigError(f'expected "NAME LIMIT SECONDS" with LIMIT and SECONDS >= 1, got {entry!r}',
                              key=what) from None
    return out


@dataclass(frozen=True)
class RateLimitSettings:
    """Which policy applies to whom: per client beats per role beats the default."""

    default: Policy
    roles: Mapping[str, Policy] = field(default_factory=dict)
    clients: Mapping[str, Policy] = field(default_factory=dict)

    def policy_for(self, client_names: Iterable[str], roles: Iterable[str] = ()) -> Policy:
        """`client_names` such as ("user:alice",) or ("ip:10.0.0.5",); roles of the caller."""
        for name in client_names:
            p = self.clients.get(name)
            if p is not None:
                return p
        best: Policy | None = None
        for r in roles:
            p = self.roles.get(r)
            if p is not None and (best is None or p.limit * best.window_s > best.limit * p.window_s):
                best = p
        return best or self.default

    def merged(self, overrides: Mapping[str, Any]) -> RateLimitSettings:
        """These settings with a stored override document applied (see `validate_overrides`)."""
        default = self.default
        if overrides.get("default"):
            default = _policy(overrides["default"], "default")
        roles = dict(self.roles)
        roles.update({k: _policy(v, k) for k, v in (overrides.get("roles") or {}).items()})
        clients = dict(self.clients)
        clients.update({k: _policy(v, k) for k, v in (overrides.get("clients") or {}).items()})
        return RateLimitSettings(default, roles, clients)

    def to_json(self) -> dict[str, Any]:
        return {
            "default": self.default.to_json(),
            "roles": {k: v.to_json() for k, v in sorted(self.roles.items())},
            "clients": {k: v.to_json() for k, v in sorted(self.clients.items())},
        }


def _policy(value: Any, name: str) -> Policy:
    if not isinstance(value, dict) or set(value) != {"limit", "window"}:
        raise InvalidInputError(f"rate limit {name!r}: expected an object {{\"limit\": N, \"window\": SECONDS}}")
    return Policy(value["limit"], value["window"], name)


def validate_overrides(doc: Any) -> dict[str, Any]:
    """Check an admin's override document: {"default"?: P, "roles"?: {name: P|null}, "clients"?: {...}}."""
    if not isinstance(doc, dict):
        raise InvalidInputError("expected a JSON object with any of: default, roles, clients")
    unknown = set(doc) - {"default", "roles", "clients"}
    if unknown:
        raise InvalidInputError(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: default, roles, clients")
    if doc.get("default") is not None:
        _policy(doc["default"], "default")
    for section in ("roles", "clients"):
        entries = doc.get(section)
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise InvalidInputError(f"{section}: expected an object of name -> {{limit, window}} or null")
        for name, value in entries.items():
            if section == "clients" and not (name.startswith("user:") or name.startswith("ip:")):
                raise InvalidInputError(f"clients: {name!r} must start with 'user:' or 'ip:'")
            if value is not None:
                _policy(value, name)
    return doc


def apply_overrides(current: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a validated change into the stored override document; null removes an entry."""
    out: dict[str, Any] = {"default": current.get("default"), "roles": dict(current.get("roles") or {}),
                           "clients": dict(current.get("clients") or {})}
    if "default" in change:
        out["default"] = change["default"]
    for section in ("roles", "clients"):
        for name, value in (change.get(section) or {}).items():
            if value is None:
                out[section].pop(name, None)
            else:
                out[section][name] = value
    return out


def take_model(keys: list[bytes], values: list[bytes | None], args: list[bytes]) -> tuple[list[Any], list[Write]]:
    """`RATE_TAKE` as a pure function of its KEYS' values and ARGV (its reply and its writes):
    what the embedded store runs in one transaction instead of the Lua (see store/scripts.py)."""
    if len(keys) > 1:  # the caller chose its policy from this settings document: is it still current?
        doc = values[1]
        if (b"-" if doc is None else b"=" + doc) != args[4]:
            return ([-1] if doc is None else [-1, doc]), []
    policy = _policy_of(int(args[0]), int(args[1]))
    now_ms = int(args[2])
    d, new = take(Bucket.decode(values[0]), policy, now_ms, int(args[3]))
    reply = [int(d.allowed), d.remaining, d.reset_ms, d.retry_after_ms]
    return reply, ([] if new is None else [(keys[0], new.encode(), max(RATE_MIN_TTL_MS, d.reset_ms))])


_POLICIES: dict[tuple[int, int], Policy] = {}


def _policy_of(limit: int, window_s: int) -> Policy:
    """A Policy per (limit, window) seen, built once (its checks cost more than the decision)."""
    p = _POLICIES.get((limit, window_s))
    if p is None:
        if len(_POLICIES) > 1024:  # policies come from config: a handful; never let it grow
            _POLICIES.clear()
        p = _POLICIES[(limit, window_s)] = Policy(limit, window_s)
    return p


RATE_TAKE_OP = replace(RATE_TAKE, model=take_model)


_SETTINGS_KEY = SETTINGS_KEY.encode()


def _take_args(policy: Policy, now_ms: int, cost: int, seen: bytes) -> list[Key | int | float]:
    """RATE_TAKE's ARGV, as the bytes every store would make of them (made here: once per request)."""
    return [b"%d" % policy.limit, b"%d" % policy.window_s, b"%d" % now_ms, b"%d" % cost, seen]


def _decision(reply: list[Any], policy: Policy) -> Decision:
    allowed, remaining, reset_ms, retry_ms = reply[:4]
    return Decision(bool(allowed), policy, int(remaining), int(reset_ms), int(retry_ms))


class RateLimiter:
    """Decisions on buckets in a Store; `base` is the configured settings."""

    def __init__(self, store: Store, base: RateLimitSettings, *, prefix: str = BUCKET_PREFIX) -> None:
        self.store = store
        self.base = base
        self.prefix = prefix
        self._cached: tuple[bytes | None, RateLimitSettings] = (None, base)

    def settings_from(self, raw: bytes | None) -> RateLimitSettings:
        """The effective settings for a stored override document (parsed once per distinct document)."""
        cached_raw, cached = self._cached
        if raw == cached_raw:
            return cached
        settings = self.base if raw is None else self.base.merged(orjson.loads(raw))
        self._cached = (raw, settings)
        return settings

    async def settings(self) -> RateLimitSettings:
        return self.settings_from(await self.store.get(SETTINGS_KEY))

    async def overrides(self) -> dict[str, Any]:
        raw = await self.store.get(SETTINGS_KEY)
        return orjson.loads(raw) if raw else {}

    async def update_overrides(self, change: Mapping[str, Any]) -> RateLimitSettings:
        validate_overrides(change)

        async def fn(txn: Txn) -> bytes:
            raw = await txn.get(SETTINGS_KEY)
            doc = apply_overrides(orjson.loads(raw) if raw else {}, change)
            new = orjson.dumps(doc)
            txn.set(SETTINGS_KEY, new)
            return new

        return self.settings_from(await self.store.transact(fn))

    async def hit(self, client_id: str, choose: Callable[[RateLimitSettings], Policy], now_ms: int,
                  cost: int = 1) -> Decision:
        """Take `cost` tokens from `client_id`'s bucket under the policy `choose` picks.

        The policy is chosen from the settings document last seen; the script checks that
        document is still the stored one (else it answers with the new one, and we choose again).
        """
        keys: list[Key] = [(self.prefix + client_id).encode(), _SETTINGS_KEY]
        raw, settings = self._cached
        for _ in range(_SETTINGS_RETRIES):
            policy = choose(settings)
            seen = b"-" if raw is None else b"=" + raw
            reply = await self.store.run_script(RATE_TAKE_OP, keys, _take_args(policy, now_ms, cost, seen),
                                                durable=False)
            if reply[0] != -1:
                return _decision(reply, policy)
            raw = reply[1] if len(reply) > 1 else None
            settings = self.settings_from(raw)
        raise HeliosError("the rate-limit settings kept changing while a request was being decided",
                          code="ratelimit_settings_changing", status=503)

    async def hit_reading(self, client_id: str, choose: Callable[[RateLimitSettings], Policy], now_ms: int,
                          reads: list[Key], cost: int = 1) -> tuple[Decision, list[bytes | None]]:
        """`hit`, and the values of `reads` read in the same step (`Store.read_and_run_script`: one round
        trip on a server).  The values come back whatever the decision: a caller that may not see
        them when refused (the gateway's speculative read of a value) must drop them itself."""
        raw, settings = self._cached
        policy = choose(settings)
        seen = b"-" if raw is None else b"=" + raw
        values, reply = await self.store.read_and_run_script(
            reads, RATE_TAKE_OP, [(self.prefix + client_id).encode(), _SETTINGS_KEY],
            _take_args(policy, now_ms, cost, seen), durable=False)
        if reply[0] != -1:
            return _decision(reply, policy), values
        # The settings changed since they were last seen (nothing was taken): choose again.
        self.settings_from(reply[1] if len(reply) > 1 else None)
        return await self.hit(client_id, choose, now_ms, cost), values

    async def hit_policy(self, client_id: str, policy: Policy, now_ms: int, cost: int = 1) -> Decision:
        """Take from a bucket with a fixed policy (login throttling), ignoring the settings."""
        reply = await self.store.run_script(RATE_TAKE_OP, [self.prefix + client_id],
                                            [policy.limit, policy.window_s, now_ms, cost], durable=False)
        return _decision(reply, policy)

    async def credit(self, client_id: str, policy: Policy, now_ms: int, tokens: int = 1) -> None:
        """Give tokens back (a login that succeeded after all); never above capacity."""
        key = self.prefix + client_id

        async def fn(txn: Txn) -> int:
            cur = level(Bucket.decode(await txn.get(key)), policy, now_ms)
            milli = min(policy.capacity_milli, cur.milli + tokens * MILLI)
            if milli >= policy.capacity_milli:
                txn.delete(key)
            else:
                new = Bucket(milli, cur.last_ms)
                txn.set(key, new.encode(), px=max(1, _until_full(new, policy, now_ms)))
            return milli

        _: int = await self.store.transact(fn, durable=False)

    async def reset(self, client_id: str) -> None:
        await self.store.transact(lambda t: t.delete(self.prefix + client_id), durable=False)
