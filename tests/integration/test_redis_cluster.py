"""The store on Redis Cluster (`redis+cluster://`, store/cluster.py) against a local three-primary cluster.

The Store contract itself runs on the cluster in tests/contract (backend
"cluster"), and so do the job queue's contract tests; here is what is
particular to a cluster: URLs, which keys share a slot (every named
operation's KEYS, as its caller builds them), the clear error a cross-slot
transaction or script gets, per-slot MGET/DEL, a read beside a script in
another slot, a slot moved under a running store (MOVED and ASK), WAIT, a
concurrent workload over keys on every node, and a job workload over queues
on every node.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from helios_core.clock import wall_ms
from helios_core.config import JobsConfig
from helios_core.errors import HeliosError
from helios_core.jobs import AckItem, EnqueueRequest, JobQueue, ops
from helios_core.jobs.model import Job, State, dedup_key, new_job_id, queue_prefix
from helios_core.jobs.registry import register
from helios_core.jobs.stats import read_counts
from helios_core.ratelimit import Policy, RateLimiter, RateLimitSettings
from helios_core.store import open_store, parse_store_url
from helios_core.store.base import Key, to_bytes
from helios_core.store.cluster import ClusterStore, CrossSlotError, same_slot, slot_of
from helios_core.store.scripts import ScriptOp
from tests.integration.test_gateway_process import HELIOS, first_password, start_gateway
from tests.redis_cluster import RedisClusterGroup, redis_cluster  # noqa: F401
from tests.redis_server import _ask

NOW = 1_800_000_000_000

# -- URLs -------------------------------------------------------------------------------------


def test_cluster_urls() -> None:
    u = parse_store_url("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2,[::1]:7002?timeout=2")
    assert u.kind == "cluster" and not u.ssl
    assert u.sentinels == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (u.username, u.password, u.timeout, u.db) == ("app", "s3cret", 2.0, 0)
    assert "s3cret" not in u.redacted and u.where == "cluster 10.0.0.1:7000,10.0.0.2:6379,[::1]:7002"
    tls = parse_store_url("rediss+cluster://h:7000?ssl_cert_reqs=none&password=pw")
    assert tls.ssl and tls.tls == {"ssl_cert_reqs": "none"} and tls.password == "pw"
    assert parse_store_url("redis+cluster://h/0").db == 0


@pytest.mark.parametrize("url, reason", [
    ("redis+cluster://h/1", "one database, db 0"),
    ("redis+cluster://h?db=2", "one database, db 0"),
    ("redis+cluster://h:x", "cluster node port must be a number"),
    ("redis+cluster://h,:7000", "a cluster node without a host"),
    ("redis+cluster://h:0", "out of range"),
    ("redis+cluster://h?ssl_cert_reqs=none", "unknown parameter 'ssl_cert_reqs'"),  # TLS: rediss+cluster://
    ("redis+cluster://h#x", "fragment"),
])
def test_bad_cluster_urls(url: str, reason: str) -> None:
    with pytest.raises(HeliosError) as e:
        parse_store_url(url)
    assert e.value.code == "bad_store_url" and reason in str(e.value) and "redis+cluster://" in str(e.value)


# -- which keys share a slot ------------------------------------------------------------------


class _Captured(Exception):
    pass


class _Recorder:
    """A Store stand-in that records the KEYS of the one named operation a caller runs, then stops it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []

    def slot(self, key: Key) -> int:  # (as a cluster groups keys: callers split their calls by it)
        return slot_of(key)

    async def run_script(self, op: ScriptOp, keys: list[Key], args: list[Any], *, durable: bool = True) -> Any:
        self.calls.append((op.name, [to_bytes(k) for k in keys]))
        raise _Captured

    async def read_and_run_script(self, reads: list[Key], op: ScriptOp, keys: list[Key], args: list[Any], *,
                                  durable: bool = True) -> Any:
        return await self.run_script(op, keys, args)


def _job(queue: str, n: int = 0, dedup: str | None = None) -> Job:
    return Job(id=new_job_id(NOW + n), queue=queue, payload={"n": n}, state=State.PENDING, created_ms=NOW,
               available_ms=NOW if n % 2 == 0 else NOW + 60_000, max_attempts=3, visibility_timeout_s=30,
               dedup_id=dedup)


def _calls() -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """Each named operation as its real caller runs it, for realistic names."""
    jobs = [_job("emails", 0, "order-17"), _job("emails", 1), _job("emails", 2)]
    limiter = RateLimiter  # (constructed per call: it keeps the store)
    return {
        "rate_take (gateway hit: bucket + settings)": lambda s: limiter(s, RateLimitSettings(Policy(10, 60))).hit(
            "user:alice", lambda st: Policy(10, 60), NOW),
        "rate_take (login throttle: bucket alone)": lambda s: limiter(s, RateLimitSettings(Policy(10, 60))).hit_policy(
            "ip:10.0.0.7", Policy(5, 60), NOW),
        "job_register": lambda s: register(s, [("emails", False), ("reports", True)], NOW, 100),
        "job_enqueue": lambda s: ops.enqueue(s, jobs, [dedup_key("emails", "u1", "order-17"), None, None],
                                             NOW, 60_000, frozenset({"emails"})),
        "job_lease": lambda s: ops.lease(s, ["emails"], 10, NOW, "w1", None, 60_000, wake=False),
        "job_lease (several queues: a script per slot)": lambda s: ops.lease(
            s, ["emails", "reports"], 10, NOW, "w1", None, 60_000, wake=True),
        "job_ack": lambda s: ops.ack(s, [(jobs[0].id, "tok", None, "emails"), (jobs[1].id, "tok", None, "emails")],
                                     NOW, 60_000),
        "job_nack": lambda s: ops.nack(s, jobs[0].id, "tok", "emails", NOW, release=False, error="x", delay_ms=0,
                                       dlq_ms=60_000),
        "job_extend": lambda s: ops.extend(s, jobs[0].id, "tok", "emails", 30, NOW),
        "queue_stats": lambda s: read_counts(s, "emails", 0, 0),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_every_named_operation_keeps_its_keys_in_one_slot(name: str) -> None:
    """Redis Cluster runs a script on the node of its KEYS' one slot."""
    rec = _Recorder()
    with pytest.raises(_Captured):
        asyncio.run(_calls()[name](rec))  # type: ignore[arg-type]
    (op, keys), = rec.calls
    assert same_slot(keys, f"script {op}") is not None


def test_hash_tags_put_keys_in_one_slot() -> None:
    assert slot_of("job:{emails}:ready") == slot_of("job:{emails}:01J0000000000000000000000") == slot_of("emails")
    assert slot_of("job:{emails}:ready") != slot_of("job:{reports}:ready")
    with pytest.raises(CrossSlotError, match=r"b'job:ready:emails' \(slot \d+\) and b'job:leased:emails'"):
        same_slot([b"job:ready:emails", b"job:leased:emails"], "a transaction")


# -- on a running cluster ---------------------------------------------------------------------


@pytest.fixture
def cluster(redis_cluster: RedisClusterGroup) -> RedisClusterGroup:  # noqa: F811  (one per test process)
    return redis_cluster


def _run(group: RedisClusterGroup, body: Callable[[ClusterStore], Awaitable[None]], **kw: Any) -> None:
    async def main() -> None:
        store = ClusterStore(group.url, **kw)
        try:
            await asyncio.wait_for(body(store), 60)
        finally:
            await store.close()

    group.flushall()
    asyncio.run(main())


def _on_each_node(group: RedisClusterGroup, n: int = 12) -> list[str]:
    """`n` plain keys that land on every primary (their slots are spread over the three)."""
    keys = [f"kv:{i}" for i in range(n)]
    owners = {_slot_port(group, slot_of(k)) for k in keys}
    assert len(owners) == 3, owners
    return keys


def _slot_port(group: RedisClusterGroup, slot: int) -> int:
    reply = _ask(group.ports[0], "CLUSTER", "SLOTS")
    for start, end, primary, *_ in reply:  # type: ignore[union-attr]
        if start <= slot <= end:
            return int(primary[1])
    raise AssertionError(f"no node serves slot {slot}")


def test_a_cross_slot_transaction_or_script_is_refused_naming_the_keys(cluster: RedisClusterGroup) -> None:
    async def body(s: ClusterStore) -> None:
        async def fn(t: Any) -> None:
            await t.get("{a}x")
            t.set("{b}y", "1")

        with pytest.raises(CrossSlotError, match=r"a transaction on redis\+cluster://.* b'\{a\}x' \(slot \d+\) "
                                                 r"and b'\{b\}y' \(slot \d+\).*share a hash tag") as e:
            await s.transact(fn)
        assert e.value.code == "cross_slot" and e.value.detail["keys"] == ["{a}x", "{b}y"]
        op = ScriptOp("test_two_keys", b"return redis.call('mget', KEYS[1], KEYS[2])")
        with pytest.raises(CrossSlotError, match="script test_two_keys .* b'rate:user:alice'"):
            await s.run_script(op, ["rate:user:alice", "config:ratelimit"], [])
        assert await s.get("{b}y") is None  # nothing was sent
        # The same keys under one tag are fine.
        await s.transact(lambda t: (t.set("{a}x", "1"), t.set("{a}y", "2")))
        assert await s.run_script(op, ["{a}x", "{a}y"], []) == [b"1", b"2"]

    _run(cluster, body)


def test_mget_and_delete_are_split_per_slot(cluster: RedisClusterGroup) -> None:
    keys = _on_each_node(cluster)

    async def body(s: ClusterStore) -> None:
        for k in keys:
            await s.set(k, k.upper())
        assert await s.mget([*keys, "missing"]) == [k.upper().encode() for k in keys] + [None]
        sub = s.subscribe("kv:")
        await sub.ready(timeout=5)
        await s.delete(*keys[:6], "missing")
        assert await s.mget(keys) == [None] * 6 + [k.upper().encode() for k in keys[6:]]
        # A Redis Cluster forwards a PUBLISH to the other nodes asynchronously: a set's announcement
        # made on another node before the subscription may still arrive after it (a spare wake-up).
        seen: set[bytes | None] = set()
        while not {k.encode() for k in keys[:6]} <= seen:
            seen.add(await sub.get(timeout=5))
        sub.close()

    _run(cluster, body)


def test_reads_in_other_slots_than_the_script_are_read_before_it(cluster: RedisClusterGroup) -> None:
    keys = _on_each_node(cluster)
    op = ScriptOp("test_incr_all", b"for _, k in ipairs(KEYS) do redis.call('incr', k) end return #KEYS")

    async def body(s: ClusterStore) -> None:
        for k in keys:
            await s.set(k, "1")
        near = "{" + keys[0] + "}n"
        await s.set(near, "1")
        # kv:* are in other slots than {kv:0}n except kv:0 itself: values from before the script either way.
        values, reply = await s.read_and_run_script([*keys, near], op, [near], [])
        assert values == [b"1"] * (len(keys) + 1) and reply == 1
        assert await s.get(near) == b"2"

    _run(cluster, body)


def test_open_store_gives_a_cluster_store(cluster: RedisClusterGroup) -> None:
    async def main() -> None:
        store = await open_store(url=cluster.url)
        try:
            assert isinstance(store, ClusterStore)
            await store.set("k", "v")
            assert await store.get("k") == b"v"
        finally:
            await store.close()

    asyncio.run(main())


def test_wait_replicas_without_replicas_fails_the_write_clearly(cluster: RedisClusterGroup) -> None:
    async def body(s: ClusterStore) -> None:
        with pytest.raises(HeliosError, match="only 0 of 1 replicas acknowledged") as e:
            await s.set("k", "v")
        assert e.value.code == "store_replication" and e.value.status == 503
        await s.set("fast", "v", durable=False)  # (durable=False never waits)

    _run(cluster, body, wait_replicas=1, wait_timeout_ms=50)


def _node_ids(group: RedisClusterGroup) -> dict[int, str]:
    return {port: str(_ask(port, "CLUSTER", "MYID")) for port in group.ports}


def _move_slot(group: RedisClusterGroup, slot: int, src: int, dst: int, keys: list[str], *, finish: bool) -> None:
    """Migrate `slot` from port src to dst as redis-cli --cluster reshard does; with finish=False
    it stays half-moved (MIGRATING/IMPORTING: clients get ASK for keys already moved)."""
    ids = _node_ids(group)
    assert _ask(dst, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[src])
    assert _ask(src, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[dst])
    for k in keys:
        assert _ask(src, "MIGRATE", "127.0.0.1", str(dst), k, "0", "5000") in (True, "OK", b"OK")
    if finish:
        for port in group.ports:
            _ask(port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[dst])


def test_a_slot_moved_under_a_running_store_is_followed(cluster: RedisClusterGroup) -> None:
    """MOVED (the slot has a new owner) and ASK (mid-migration, the key already on the target)."""
    op = ScriptOp("test_incr", b"return redis.call('incr', KEYS[1])")

    async def body(s: ClusterStore) -> None:
        moved, asked = "{mv}n", "{ask}n"
        await s.set(moved, "1")
        await s.set(asked, "1")  # the store now knows both slots' owners
        for key, finish in ((moved, True), (asked, False)):
            slot = slot_of(key)
            src = _slot_port(cluster, slot)
            dst = next(p for p in cluster.ports if p != src)
            _move_slot(cluster, slot, src, dst, [key], finish=finish)
            assert await s.get(key) == b"1", key
            assert await s.run_script(op, [key], []) == 2
            if finish:  # (a transaction in a slot being migrated gets TRYAGAIN/ASK until it is done)
                assert await s.transact(lambda t, k=key: t.incrby(k, 1)) is None
                assert await s.get(key) == b"3"
        # Leave the cluster whole for the other tests.
        slot = slot_of(asked)
        ids = _node_ids(cluster)
        owner = next(p for p in cluster.ports
                     if _ask(p, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) == 1)
        for port in cluster.ports:
            _ask(port, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[owner])

    _run(cluster, body)


def test_concurrent_transactions_over_every_node_lose_no_update(cluster: RedisClusterGroup) -> None:
    """A workload: 40 tasks bump 8 counters (each with its own tag, spread over the nodes), each bump a
    WATCH transaction reading the counter and writing it and a log entry in its slot."""
    counters = [f"{{c{i}}}n" for i in range(8)]

    async def body(s: ClusterStore) -> None:
        async def bump(i: int) -> None:
            key = counters[i % len(counters)]
            tag = key[:key.index("}") + 1]

            async def fn(t: Any) -> None:
                cur = int(await t.get(key) or 0)
                t.set(key, cur + 1)
                t.zadd(tag + "log", {f"{i}": cur})

            for _ in range(5):
                await s.transact(fn)

        await asyncio.gather(*(bump(i) for i in range(40)))
        assert await s.mget(counters) == [b"25"] * len(counters)
        for key in counters:
            assert await s.zcard(key[:key.index("}") + 1] + "log") == 5

    _run(cluster, body)


# -- the job queue on a cluster -----------------------------------------------------------------


def _queues_on_every_node(group: RedisClusterGroup, n: int = 4) -> list[str]:
    """`n` queue names whose tags land on every primary."""
    names = [f"q{i}" for i in range(n)]
    assert len({_slot_port(group, slot_of(queue_prefix(q))) for q in names}) == 3, names
    return names


def test_a_job_workload_over_queues_on_every_node(cluster: RedisClusterGroup) -> None:
    """A producer enqueues N jobs over four queues (their slots on all three primaries); six workers,
    each its own JobQueue (a process of its own), lease over all the queues and ack through another
    JobQueue than the one that leased (the job found by its id), two of them long-polling; every job
    runs exactly once.  Then stats, listing, get, cancel and redrive on the same cluster."""
    names = _queues_on_every_node(cluster)
    total = 240

    async def body(s: ClusterStore) -> None:
        cfg = JobsConfig()
        producer = JobQueue(s, cfg, random.Random(0))
        await producer.prepare()
        for start in range(0, total, 60):
            reqs = [EnqueueRequest(names[i % len(names)], {"i": i}) for i in range(start, start + 60)]
            assert all(created for _, created in await producer.enqueue_batch(reqs, wall_ms()))
        ran: Counter[int] = Counter()
        acker = JobQueue(s, cfg, random.Random(9))  # never leased anything: finds each job by id

        async def worker(n: int) -> None:
            mine = JobQueue(s, cfg, random.Random(n + 1))
            order = names[n % len(names):] + names[:n % len(names)]
            while sum(ran.values()) < total:
                if n < 2:
                    got = await mine.lease_wait(order, 5, wall_ms, 200, worker=f"w{n}")
                else:
                    got = await mine.lease(order, 5, wall_ms(), worker=f"w{n}")
                if not got:
                    await asyncio.sleep(0.01)
                    continue
                for job in got:
                    ran[job.payload["i"]] += 1
                out = await acker.ack_batch([AckItem(j.id, j.lease.token, n) for j in got if j.lease], wall_ms())
                assert all(isinstance(r, Job) and r.state is State.DONE for r in out), out

        await asyncio.gather(*(worker(n) for n in range(6)))
        assert sorted(ran) == list(range(total)) and set(ran.values()) == {1}, "each job ran exactly once"
        stats = {st.queue: st for st in await producer.stats(wall_ms())}
        assert sorted(stats) == names
        assert sum(st.done for st in stats.values()) == total
        assert all(st.pending == st.in_progress == st.failed == 0 for st in stats.values())

        jobs, cursor = await producer.list(names[1], State.DONE, wall_ms(), limit=1000)
        assert len(jobs) == total // len(names) and cursor is None
        assert all(j.state is State.DONE and j.result in range(6) for j in jobs)
        other = JobQueue(s, cfg)  # another process
        assert (await other.get(jobs[0].id)).result == jobs[0].result

        (keep, _), (drop, _), (fail, _) = await producer.enqueue_batch(
            [EnqueueRequest(names[2], "keep"), EnqueueRequest(names[3], "drop"),
             EnqueueRequest(names[0], "fail", max_attempts=1)], wall_ms())
        assert (await other.cancel(drop.id, wall_ms())).state is State.CANCELLED
        (leased,) = await other.lease([names[0]], 1, wall_ms(), worker="w")
        assert leased.id == fail.id and leased.lease
        assert (await JobQueue(s, cfg).nack(fail.id, leased.lease.token, "boom", wall_ms())).state is State.FAILED
        assert (await JobQueue(s, cfg).redrive(fail.id, wall_ms())).state is State.PENDING
        (again,) = await other.lease([names[0]], 1, wall_ms(), worker="w")
        assert again.lease
        await JobQueue(s, cfg).nack(again.id, again.lease.token, "boom", wall_ms())
        assert await JobQueue(s, cfg).redrive_all(wall_ms()) == 1
        after = {st.queue: (st.pending, st.done) for st in await other.stats(wall_ms())}
        assert after[names[0]][0] == 1 and after[names[2]][0] == 1 and after[names[3]][1] == total // 4 + 1
        assert (await other.get(keep.id)).state is State.PENDING

    _run(cluster, body)


def test_the_job_queue_migrates_a_cluster_store_too(cluster: RedisClusterGroup) -> None:
    """Format "3" runs key by key, each step in one slot: an older layout's keys on a cluster (which no
    older process could have written there, but a copied dataset may hold) move like elsewhere."""
    async def body(s: ClusterStore) -> None:
        now = wall_ms()
        job = Job(id=new_job_id(now), queue="emails", payload={"n": 1}, state=State.PENDING, created_ms=now,
                  available_ms=now, max_attempts=3, visibility_timeout_s=30, updated_ms=now)
        await s.set(b"job:" + job.id.encode(), job.encode())
        await s.transact(lambda t: t.zadd("job:ready:emails", {job.id: 1.0}))
        q = JobQueue(s, JobsConfig())
        (got,) = await q.lease(["emails"], 1, now, worker="w")
        assert got.id == job.id and await s.get(b"job:" + job.id.encode()) is None
        assert await s.exists("job:{emails}:" + job.id) and not await s.exists("job:ready:emails")

    _run(cluster, body)


_TASKS = """
def run(payload, ctx):
    return {"i": payload["i"], "attempt": ctx.attempt}
"""


@pytest.mark.slow
def test_a_gateway_and_workers_on_the_cluster(cluster: RedisClusterGroup, tmp_path: Path) -> None:
    """As an operator runs it: `helios gateway --store redis+cluster://...` (users and jobs on the
    cluster) and two `helios worker --burst` processes over three queues on every primary; every job
    ends DONE after one delivery, and the API's stats, listing, get and cancel answer."""
    cluster.flushall()
    names = _queues_on_every_node(cluster, 3)
    (tmp_path / "ctasks.py").write_text(_TASKS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env.update({"HELIOS_AUTH__BCRYPT_COST": "4", "HELIOS_RATELIMIT__ENABLED": "false",
                "HELIOS_AUTH__JWT_KEYS": "k1=" + "s" * 48})
    with tempfile.TemporaryFile("w+") as log:
        gw, url, lines = start_gateway(["--store", cluster.url], env, stderr=log, timeout=60)
        workers: list[subprocess.Popen[bytes]] = []
        try:
            password = first_password(lines)
            token = _api(url, "POST", "/api/v1/auth/login", {"username": "admin", "password": password})[
                "access_token"]
            jobs = [{"queue": names[i % 3], "payload": {"i": i}} for i in range(150)]
            ids = [j["job"]["id"] for start in range(0, 150, 50)
                   for j in _api(url, "POST", "/api/v1/jobs/batch", {"jobs": jobs[start:start + 50]}, token)["jobs"]]
            assert len(set(ids)) == 150
            for n in range(2):
                args = [HELIOS, "worker", "--name", f"w{n}", "--handler", "ctasks:run", "--burst", "-c", "4"]
                args += [a for q in names for a in ("-q", q)]
                wenv = {**env, "HELIOS_URL": url, "HELIOS_TOKEN": token, "PYTHONPATH": str(tmp_path)}
                workers.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                cwd=tmp_path, env=wenv))
            assert [w.wait(120) for w in workers] == [0, 0]
            stats = {s["queue"]: s for s in _api(url, "GET", "/api/v1/jobs/stats", token=token)["queues"]}
            assert {q: (stats[q]["done"], stats[q]["pending"], stats[q]["in_progress"]) for q in names} == \
                {q: (50, 0, 0) for q in names}
            for job_id in ids[::7]:
                job = _api(url, "GET", f"/api/v1/jobs/{job_id}", token=token)["job"]
                assert job["state"] == "DONE" and job["attempts"] == 1 and job["result"]["attempt"] == 1, job
            listed = _api(url, "GET", f"/api/v1/jobs?queue={names[0]}&state=DONE&limit=100", token=token)["jobs"]
            assert len(listed) == 50
            extra = _api(url, "POST", "/api/v1/jobs", {"queue": names[1], "payload": {"i": -1}}, token)["job"]
            assert _api(url, "POST", f"/api/v1/jobs/{extra['id']}/cancel", {}, token)["job"]["state"] == "CANCELLED"
        finally:
            for w in workers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
            gw.send_signal(signal.SIGTERM)
            code = gw.wait(30)
            log.seek(0)
            out = log.read()
            assert code == 0 and "cross_slot" not in out and "Traceback" not in out, out[-3000:]


def _api(url: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
