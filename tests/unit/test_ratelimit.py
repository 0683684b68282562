"""Token buckets: the pure arithmetic (time passed in), then exactness on a real embedded store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_core.config import AtlasConfig
from helios_core.errors import ConfigError, InvalidInputError
from helios_core.ratelimit import (
    Bucket,
    Policy,
    RateLimiter,
    RateLimitSettings,
    apply_overrides,
    level,
    parse_policy_entries,
    take,
    validate_overrides,
)
from helios_core.store import EmbeddedStore

T0 = 1_700_000_000_000


def drain(policy: Policy, now_ms: int, bucket: Bucket | None = None) -> tuple[int, Bucket | None]:
    n = 0
    while True:
        d, new = take(bucket, policy, now_ms)
        if not d.allowed:
            return n, bucket
        n, bucket = n + 1, new


def test_a_fresh_bucket_admits_exactly_its_capacity() -> None:
    p = Policy(5, 60)
    n, b = drain(p, T0)
    assert n == 5
    d, new = take(b, p, T0)
    assert not d.allowed and new is None
    assert d.remaining == 0
    assert d.retry_after_ms == 12_000  # one token per 60/5 s
    assert d.reset_ms == 60_000


def test_refill_is_exact_in_milli_tokens() -> None:
    p = Policy(5, 60)  # 1 token per 12 s = 1 milli-token per 12 ms
    _, b = drain(p, T0)
    assert b is not None
    assert level(b, p, T0 + 11_999).milli == 999
    assert not take(b, p, T0 + 11_999)[0].allowed
    assert take(b, p, T0 + 12_000)[0].allowed
    assert level(b, p, T0 + 10 * 60_000).milli == 5000  # never above capacity


def test_slow_refill_is_not_lost_to_frequent_requests() -> None:
    # 1 token per 300 s: each ms adds 1/300 milli-token.  Checking every ms must
    # still refill one token after 300 s (fractions carried, not dropped).
    p = Policy(1, 300)
    _, b = drain(p, T0)
    assert b is not None
    now = T0
    for _ in range(300):
        now += 1000
        d, new = take(b, p, now)
        if d.allowed:
            break
        b = level(b, p, now)  # the state a denied request would have seen
    assert now == T0 + 300_000 and d.allowed


def test_remaining_and_reset_report_the_state_after_the_request() -> None:
    p = Policy(10, 10)
    d, b = take(None, p, T0)
    assert d.allowed and d.remaining == 9 and d.reset_ms == 1000 and d.retry_after_ms == 0
    assert b == Bucket(9000, T0)


def test_clock_going_back_gives_nothing() -> None:
    p = Policy(10, 10)
    b = Bucket(0, T0)
    assert level(b, p, T0 - 5000).milli == 0


def test_shrunk_policy_caps_old_state() -> None:
    assert level(Bucket(100_000, T0), Policy(5, 60), T0).milli == 5000


@given(st.integers(1, 1000), st.integers(1, 3600), st.lists(st.integers(0, 5000), max_size=40))
def test_never_more_than_capacity_plus_refill(limit: int, window: int, gaps: list[int]) -> None:
    p = Policy(limit, window)
    b: Bucket | None = None
    now = T0
    admitted = 0
    for gap in gaps:
        now += gap
        d, new = take(b, p, now)
        if d.allowed:
            admitted += 1
            b = new
    elapsed = now - T0
    assert admitted <= limit + elapsed * limit // (window * 1000) + 1


def test_decode_tolerates_damage() -> None:
    assert Bucket.decode(b"garbage") is None
    assert Bucket.decode(Bucket(5, 7).encode()) == Bucket(5, 7)


def test_policy_validation() -> None:
    with pytest.raises(InvalidInputError, match="limit"):
        Policy(0, 10)
    with pytest.raises(InvalidInputError, match="window"):
        Policy(10, 0)
    assert parse_policy_entries(["admin 100 60"], "ratelimit.roles") == {"admin": Policy(100, 60, "admin")}
    with pytest.raises(ConfigError, match="ratelimit.roles"):
        parse_policy_entries(["admin 100"], "ratelimit.roles")


def test_settings_choose_client_then_best_role_then_default() -> None:
    s = RateLimitSettings(Policy(10, 60), {"a": Policy(100, 60, "a"), "b": Policy(50, 10, "b")},
                          {"user:vip": Policy(1000, 1, "user:vip")})
    assert s.policy_for(["user:vip"], ["a"]).name == "user:vip"
    assert s.policy_for(["user:x"], ["a", "b"]).name == "b"  # 5/s beats 1.67/s
    assert s.policy_for(["ip:1.2.3.4"], []).limit == 10


def test_overrides_validate_merge_and_remove() -> None:
    with pytest.raises(InvalidInputError, match="unknown field"):
        validate_overrides({"defualt": {}})
    with pytest.raises(InvalidInputError, match="user:"):
        validate_overrides({"clients": {"bob": {"limit": 1, "window": 1}}})
    with pytest.raises(InvalidInputError, match="limit"):
        validate_overrides({"default": {"limit": 1}})
    doc = apply_overrides({}, {"roles": {"x": {"limit": 5, "window": 5}}})
    doc = apply_overrides(doc, {"roles": {"x": None}, "default": {"limit": 7, "window": 1}})
    assert doc == {"default": {"limit": 7, "window": 1}, "roles": {}, "clients": {}}
    merged = RateLimitSettings(Policy(1, 1)).merged(doc)
    assert merged.default.limit == 7


def run(tmp_path: Path, body) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        store = await EmbeddedStore.open(tmp_path / "data", AtlasConfig(appendfsync="always", save=()))
        try:
            await asyncio.wait_for(body(store), 60)
        finally:
            await store.close()

    asyncio.run(main())


def test_two_hundred_concurrent_hits_admit_exactly_capacity(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        limiter = RateLimiter(store, RateLimitSettings(Policy(37, 3600)))
        decisions = await asyncio.gather(*(limiter.hit("ip:1.1.1.1", lambda s: s.default, T0) for _ in range(200)))
        assert sum(d.allowed for d in decisions) == 37
        state = await store.get("rate:{auth}:ip:1.1.1.1")
        assert state == b"0:%d" % T0
        assert 0 < await store.pttl("rate:{auth}:ip:1.1.1.1") <= 3600_000

    run(tmp_path, body)


def test_admin_overrides_apply_to_the_next_decision(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        limiter = RateLimiter(store, RateLimitSettings(Policy(1, 3600)))

        def choose(s: RateLimitSettings) -> Policy:
            return s.policy_for(["user:bob"], [])

        assert (await limiter.hit("user:u1", choose, T0)).allowed
        assert not (await limiter.hit("user:u1", choose, T0)).allowed
        await limiter.update_overrides({"clients": {"user:bob": {"limit": 3, "window": 3600}}})
        # The bucket keeps its level; it now refills at 3 per hour: a token every 20 min, not 60.
        assert (await limiter.hit("user:u1", choose, T0 + 1_200_000)).allowed
        assert (await limiter.settings()).clients["user:bob"].limit == 3

    run(tmp_path, body)


def test_credit_and_reset(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        limiter = RateLimiter(store, RateLimitSettings(Policy(1, 1)))
        p = Policy(2, 3600)
        await limiter.hit_policy("login-ip:x", p, T0)
        await limiter.hit_policy("login-ip:x", p, T0)
        assert not (await limiter.hit_policy("login-ip:x", p, T0)).allowed
        await limiter.credit("login-ip:x", p, T0)
        assert (await limiter.hit_policy("login-ip:x", p, T0)).allowed
        await limiter.reset("login-ip:x")
        assert await store.get("rate:{auth}:login-ip:x") is None

    run(tmp_path, body)
