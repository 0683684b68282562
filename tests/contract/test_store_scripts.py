"""Named atomic store operations (store/scripts.py) on every backend: embedded, atlasd, redis-server.

The rate-limit bucket take (RATE_TAKE) must agree with its pure model,
`ratelimit.take()`, over random policies, states, clocks and costs, on each
backend — both as Lua and as RATE_TAKE_OP (which the embedded store runs as
`take_model` in one transaction); and the limiter built on it stays exact under 200 concurrent hits.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.errors import CommandError
from helios_core.ratelimit import RATE_TAKE_OP, Bucket, Policy, RateLimiter, RateLimitSettings, take
from helios_core.store import Store
from helios_core.store.scripts import RATE_MIN_TTL_MS, RATE_TAKE, ScriptOp

T0 = 1_800_000_000_000


@st.composite
def cases(draw: st.DrawFn) -> tuple[Policy, Bucket | None, int, int]:
    policy = Policy(draw(st.integers(1, 1_000_000)), draw(st.integers(1, 86_400)))
    now = T0 + draw(st.integers(0, 10_000_000))
    bucket = draw(st.none() | st.builds(
        Bucket, st.integers(0, policy.capacity_milli * 2),
        st.integers(now - policy.window_s * 2000, now + 5000)))
    cost = draw(st.integers(1, 5) | st.integers(1, policy.limit + 2))
    return policy, bucket, now, cost


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(cases(), min_size=5, max_size=25))
def test_rate_take_agrees_with_the_model(run_store, batch: list) -> None:
    async def body(s: Store) -> None:
        for i, (policy, bucket, now, cost) in enumerate(batch):
            for op in (RATE_TAKE, RATE_TAKE_OP):
                key = f"rate:case{i}"
                if bucket is None:
                    await s.delete(key)  # (examples share the backend's keyspace)
                else:
                    await s.set(key, bucket.encode())
                want, new = take(bucket, policy, now, cost)
                got = await s.run_script(op, [key], [policy.limit, policy.window_s, now, cost])
                assert got == [int(want.allowed), want.remaining, want.reset_ms, want.retry_after_ms], \
                    (policy, bucket, now, cost)
                stored = await s.get(key)
                if new is None:
                    assert stored == (None if bucket is None else bucket.encode())
                else:  # (a short TTL may be over by now on a real server, on a busy machine)
                    assert stored == new.encode() or (stored is None and want.reset_ms < 30_000)

    run_store(body)


def test_a_bucket_that_refills_in_a_few_ms_lives_a_second(run_store) -> None:
    """A generous limit refills one token in 1 ms; the record stays (RATE_MIN_TTL_MS) rather than
    expiring between a caller's requests (one write a request, not an expiry's DEL and a new write),
    and found later it decides as a missing bucket does: full."""
    async def body(s: Store) -> None:
        policy = Policy(1000, 1)
        for i, op in enumerate((RATE_TAKE, RATE_TAKE_OP)):
            key = f"rate:{{fast}}{i}"
            got = await s.run_script(op, [key], [policy.limit, policy.window_s, T0, 1])
            assert got == [1, 999, 1, 0], op  # the reply still says: full again in 1 ms
            assert 500 < await s.pttl(key) <= RATE_MIN_TTL_MS
            d = take(None, policy, T0 + 5)[0]  # what a missing bucket decides 5 ms later
            later = await s.run_script(op, [key], [policy.limit, policy.window_s, T0 + 5, 1])
            assert later == [int(d.allowed), d.remaining, d.reset_ms, d.retry_after_ms] == [1, 999, 1, 0], op

    run_store(body)


def test_two_hundred_concurrent_hits_admit_exactly_capacity(run_store) -> None:
    async def body(s: Store) -> None:
        limiter = RateLimiter(s, RateLimitSettings(Policy(37, 3600)))
        decisions = await asyncio.gather(*(limiter.hit("user:u", lambda st_: st_.default, T0)
                                           for _ in range(200)))  # (more than the pool's 100 connections)
        assert sum(d.allowed for d in decisions) == 37
        assert not (await limiter.hit_policy("user:u", Policy(37, 3600), T0)).allowed

    run_store(body)


def test_a_settings_change_is_seen_by_the_next_hit(run_store) -> None:
    async def body(s: Store) -> None:
        limiter = RateLimiter(s, RateLimitSettings(Policy(1, 3600)))
        other = RateLimiter(s, RateLimitSettings(Policy(1, 3600)))  # another gateway process

        def choose(st_: RateLimitSettings) -> Policy:
            return st_.policy_for(["user:bob"])

        assert (await limiter.hit("user:bob", choose, T0)).allowed
        assert not (await limiter.hit("user:bob", choose, T0)).allowed
        await other.update_overrides({"clients": {"user:bob": {"limit": 5, "window": 3600}}})
        d = await limiter.hit("user:bob", choose, T0)  # this process still caches the old document
        assert d.policy.limit == 5 and d.retry_after_ms == 3600_000 // 5  # the empty bucket refills 5x faster

    run_store(body)


def test_read_and_run_script_reads_then_runs_in_one_call(run_store) -> None:
    """Store.read_and_run_script: the values of `reads` (as mget: missing keys None, in order, binary
    safe) as they were just before the operation ran, and the operation's reply, for a Lua op (its first
    run is a NOSCRIPT on a server), the rate take as Lua and as its model; no reads is the op alone."""
    async def body(s: Store) -> None:
        await s.set("auth:a", b"one")
        await s.set("kv:c", b"\x00\xff three")
        await s.set("n", b"2")
        op = ScriptOp("test_incr_reading", b"return redis.call('incrby', KEYS[1], ARGV[1])")
        assert await s.read_and_run_script(["n", "auth:a", "auth:b"], op, ["n"], [3]) == ([b"2", b"one", None], 5)
        assert await s.read_and_run_script(["n"], op, ["n"], [1]) == ([b"5"], 6)
        assert await s.read_and_run_script([], op, ["n"], [1]) == ([], 7)
        reads = ["auth:a", "auth:b", "kv:c"]
        for i, rate_op in enumerate((RATE_TAKE, RATE_TAKE_OP)):
            # (a script's keys share a hash tag: one slot on Redis Cluster)
            got = await s.read_and_run_script(reads, rate_op, [f"rate:{{r}}{i}", "ratelimit:{r}none"],
                                              [2, 3600, T0, 1, b"-"], durable=False)
            assert got == ([b"one", None, b"\x00\xff three"], [1, 1, 1800_000, 0]), rate_op
            assert await s.get(f"rate:{{r}}{i}") == Bucket(1000, T0).encode()  # the script wrote, the reads did not

    run_store(body)


def test_read_and_run_script_raises_what_the_operation_raises(run_store) -> None:
    """An operation that fails fails the call (its reads are dropped); the store stays usable."""
    async def body(s: Store) -> None:
        await s.set("str", "x")
        op = ScriptOp("test_incr_failing", b"return redis.call('incrby', KEYS[1], ARGV[1])")
        with pytest.raises(CommandError, match="not an integer"):
            await s.read_and_run_script(["str"], op, ["str"], [1])
        assert await s.read_and_run_script(["str"], op, ["m"], [1]) == ([b"x"], 1)

    run_store(body)


def test_a_hit_reads_other_keys_in_the_same_step(run_store) -> None:
    """hit_reading: the bucket taken and the caller's keys read in one call (the gateway's token, user,
    roles and requested value beside its bucket); the values come back with a refusal too (the caller
    drops them); a settings change since last seen is taken under the new policy, reads kept."""
    async def body(s: Store) -> None:
        await s.set("auth:a", b"one")
        await s.set("auth:c", b"three")
        limiter = RateLimiter(s, RateLimitSettings(Policy(2, 3600)))
        reads = ["auth:a", "auth:b", "auth:c"]
        first = await limiter.hit_reading("user:r", lambda st_: st_.default, T0, reads)
        assert first[0].allowed and first[1] == [b"one", None, b"three"]
        second = await limiter.hit_reading("user:r", lambda st_: st_.default, T0, reads)
        assert second[0].allowed and second[0].remaining == 0
        third = await limiter.hit_reading("user:r", lambda st_: st_.default, T0, reads)
        assert not third[0].allowed and third[1] == [b"one", None, b"three"]
        other = RateLimiter(s, RateLimitSettings(Policy(2, 3600)))
        await other.update_overrides({"clients": {"user:r": {"limit": 9, "window": 3600}}})
        # (the empty bucket has gained one token of the new policy 400 s on)
        d, values = await limiter.hit_reading("user:r", lambda st_: st_.policy_for(["user:r"]), T0 + 400_000, reads)
        assert d.allowed and d.policy.limit == 9 and values == [b"one", None, b"three"]

    run_store(body)


def test_script_errors_and_noscript_fallback(run_store) -> None:
    async def body(s: Store) -> None:
        op = ScriptOp("test_incr", b"return redis.call('incrby', KEYS[1], ARGV[1])")
        assert await s.run_script(op, ["n"], [2]) == 2  # first run: not cached on the server yet
        assert await s.run_script(op, ["n"], [3]) == 5
        await s.set("str", "x")
        with pytest.raises(CommandError, match="not an integer"):
            await s.run_script(op, ["str"], [1])

    run_store(body)
