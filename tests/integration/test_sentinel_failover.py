"""Failover under load on Redis with Sentinel: what a HELIOS store acknowledged, and what survived.

A primary and a replica (appendonly yes) and three sentinels run on unused
ports, the replica replicating through a FaultRelay; a RemoteStore opened
with a `redis+sentinel://` URL writes KV keys and enqueues jobs (JobQueue
over that store) from several tasks.  Mid-load the replication link stalls
(the relay blackholes it: a network hiccup, a replica busy for a moment) for
STALL_SECONDS, then the primary is SIGKILLed: what it acknowledged during the
stall never reached the replica.  The sentinels promote the replica, the
store follows it, the killed server comes back as a replica of the new
primary, and the writers go on.  Afterwards every acknowledged key and job is
looked up on the new primary.  It runs twice: with `store.wait_replicas` 0
(asynchronous replication: writes acknowledged during the stall are lost)
and 1 (a write is acknowledged only once the replica has it, and that
replica is the only one that can be promoted here: nothing acknowledged is
lost; the writes made during the stall fail with 503 instead).

What must hold either way: the store reaches the new primary (writes are
acknowledged after the failover), every failed write is a 503-class
HeliosError (`store_unavailable`, `store_replication`), never a hang; and
with wait_replicas 1 no acknowledged write or job is lost.  The counts are
printed (`pytest -s`) and are what README "Scaling HELIOS" reports.
`HELIOS_HA_SECONDS` lengthens the load before and after the kill (default
1 s each); `HELIOS_HA_STALL` sets the stall (default 0.3 s; 0: no stall, the
primary is killed with the link healthy).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from helios_core.config import JobsConfig
from helios_core.errors import ConfigError, HeliosError
from helios_core.jobs.model import job_key
from helios_core.jobs.queue import EnqueueRequest, JobQueue
from helios_core.store.remote import RemoteStore
from tests.faultrelay import FaultRelay
from tests.redis_server import RedisServer, SentinelGroup, redis_server  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

LOAD_SECONDS = float(os.environ.get("HELIOS_HA_SECONDS", "1.0"))
STALL_SECONDS = float(os.environ.get("HELIOS_HA_STALL", "0.3"))
KV_WRITERS = 6
JOB_WRITERS = 2
OP_TIMEOUT = 30.0  # an operation still unanswered after this long is a hang
CHANGE_SECONDS = 90.0  # generous: failover and resync on two busy cores
RESYNC_NUDGE_SECONDS = 40.0  # a resync normally takes ~6 s (repl-diskless-sync-delay 5)


@dataclass
class Setup:
    group: SentinelGroup
    relay: FaultRelay  # the replica's replication link


@pytest.fixture
def setup() -> Iterator[Setup]:
    server, sentinel = shutil.which("redis-server"), shutil.which("redis-sentinel")
    if server is None or sentinel is None:
        pytest.skip("redis-server and redis-sentinel are not installed")
    relays: list[FaultRelay] = []

    def link(primary_port: int) -> int:
        relays.append(FaultRelay(("127.0.0.1", primary_port)).start())
        return relays[-1].port

    try:
        g = SentinelGroup(server, sentinel, link=link).start()
        try:
            yield Setup(g, relays[0])
        finally:
            g.stop()
    finally:
        for relay in relays:
            relay.close()


@dataclass
class Tally:
    kv_acked: list[str] = field(default_factory=list)
    jobs_acked: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    acked_after_failover: int = 0
    hangs: int = 0
    failed_over: bool = False
    killed_at: float | None = None  # monotonic time of the SIGKILL
    outage_s: float | None = None  # from the SIGKILL to the first write begun after it and acknowledged


async def _writer(n: int, prefix: str, store: RemoteStore, queue: JobQueue | None, tally: Tally,
                  stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        started = time.monotonic()
        try:
            if queue is None:
                key = f"{prefix}:kv:{n}:{i}"
                await asyncio.wait_for(store.set(key, b"x" * 64), OP_TIMEOUT)
                tally.kv_acked.append(key)
            else:
                job, _ = await asyncio.wait_for(
                    queue.enqueue(EnqueueRequest(queue=f"{prefix}-q", payload={"n": n, "i": i}),
                                  int(time.time() * 1000)), OP_TIMEOUT)
                tally.jobs_acked.append(job.id)
            if tally.killed_at is not None and started > tally.killed_at and tally.outage_s is None:
                tally.outage_s = time.monotonic() - tally.killed_at
            if tally.failed_over:
                tally.acked_after_failover += 1
        except TimeoutError:
            tally.hangs += 1
        except HeliosError as e:
            tally.failures[f"{e.status} {e.code}"] += 1
            await asyncio.sleep(0.01)  # the primary is down: do not spin on refused connections


def _roles(group: SentinelGroup) -> tuple[RedisServer, RedisServer]:
    assert group.primary is not None and group.replica is not None
    port = group.primary_port()
    return (group.primary, group.replica) if port == group.primary.port else (group.replica, group.primary)


def _linked(server: RedisServer) -> bool:
    from tests.redis_server import _ask

    info = _ask(server.port, "INFO", "replication")
    return isinstance(info, dict) and info.get("role") == "slave" and info.get("master_link_status") == "up"


async def _run(setup: Setup, prefix: str, wait_replicas: int) -> Tally:
    group = setup.group
    primary, replica = _roles(group)
    store = RemoteStore(f"{group.url}?timeout=10&connect_timeout=2", wait_replicas=wait_replicas,
                        wait_timeout_ms=1000)
    queue = JobQueue(store, JobsConfig())
    tally, stop = Tally(), asyncio.Event()
    tasks = [asyncio.create_task(_writer(n, prefix, store, None, tally, stop)) for n in range(KV_WRITERS)]
    tasks += [asyncio.create_task(_writer(n, prefix, store, queue, tally, stop)) for n in range(JOB_WRITERS)]
    try:
        await _until(lambda: len(tally.kv_acked) >= 50 and len(tally.jobs_acked) >= 10, "writes before the kill")
        await asyncio.sleep(LOAD_SECONDS)  # load for a while: the kill lands mid-stream
        if STALL_SECONDS:
            # Left blackholed: what the primary sent meanwhile never arrives (the promoted
            # replica drops the link when the sentinels make it primary).
            await asyncio.to_thread(setup.relay.blackhole)
            before = len(tally.kv_acked) + len(tally.jobs_acked)
            await asyncio.sleep(STALL_SECONDS)
            if not wait_replicas:  # on a busy machine, make sure the stall saw writes acknowledged
                await _until(lambda: len(tally.kv_acked) + len(tally.jobs_acked) - before >= 20,
                             "writes acknowledged during the stall")
        primary.kill()
        tally.killed_at = time.monotonic()
        await _until(lambda: group.all_agree_on(replica.port), "the sentinels to promote the replica", group)
        tally.failed_over = True
        # The killed server comes back, as an operator (or its supervisor) brings it back, as a
        # replica of the new primary: until then, with wait_replicas 1, writes cannot be acknowledged.
        primary.restart("--replicaof", "127.0.0.1", str(replica.port))
        await _resynced(group, primary, replica)
        start = tally.acked_after_failover
        await _until(lambda: tally.acked_after_failover - start >= 50, "writes after the failover")
        await asyncio.sleep(LOAD_SECONDS)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    try:
        values = await store.mget(list(tally.kv_acked))
        tally.failures["lost kv"] = sum(v is None for v in values)
        jobs = await store.mget([job_key(f"{prefix}-q", j) for j in tally.jobs_acked])
        tally.failures["lost jobs"] = sum(v is None for v in jobs)
    finally:
        await store.close()
    return tally


async def _resynced(group: SentinelGroup, old: RedisServer, new: RedisServer) -> None:
    """Wait for the restarted old primary to link to the new one.  CI saw it not link within 90 s
    twice in many runs (cause not known: not seen here in 14 loaded runs).  Redis's replication is the
    scaffolding here, not what is tested: after RESYNC_NUDGE_SECONDS the operator's next step is
    taken (the server started again if it died, else REPLICAOF sent again), and the logs of that
    moment go out as a warning, which pytest prints even when the test passes."""
    from tests.redis_server import _ask

    try:
        await _until(lambda: _linked(old), "the old primary to resync as a replica", seconds=RESYNC_NUDGE_SECONDS)
        return
    except AssertionError:
        pass
    died = old.proc is None or old.proc.poll() is not None
    warnings.warn(f"the old primary had not resynced after {RESYNC_NUDGE_SECONDS:.0f} s "
                  f"({'it had exited: restarting it' if died else 'sending REPLICAOF again'}):\n{group.log_tails()}",
                  stacklevel=1)
    if died:
        old.restart()
    else:
        await asyncio.to_thread(_ask, old.port, "REPLICAOF", "127.0.0.1", str(new.port))
    await _until(lambda: _linked(old), "the old primary to resync as a replica", group)


async def _until(check: object, what: str, group: SentinelGroup | None = None,
                 seconds: float = CHANGE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(check):  # type: ignore[arg-type]
        if time.monotonic() > deadline:
            logs = f"\n{group.log_tails()}" if group is not None else ""
            raise AssertionError(f"timed out waiting for {what}{logs}")
        await asyncio.sleep(0.05)


def _report(label: str, t: Tally) -> None:
    print(f"\nsentinel failover, {label}: acknowledged kv={len(t.kv_acked)} jobs={len(t.jobs_acked)}, "
          f"lost kv={t.failures['lost kv']} jobs={t.failures['lost jobs']}, acknowledged after failover="
          f"{t.acked_after_failover}, failed writes={dict((k, v) for k, v in t.failures.items() if 'lost' not in k)}, "
          f"hangs={t.hangs}, writes acknowledged again {t.outage_s:.1f} s after the kill")


def _check_common(t: Tally) -> None:
    assert t.hangs == 0
    assert t.acked_after_failover >= 50  # the store followed the failover
    for what in t.failures:
        if "lost" not in what:
            assert what.split()[0] == "503" and what.split()[1] in ("store_unavailable", "store_replication"), what


@pytest.mark.parametrize("wait_replicas", [0, 1])
def test_failover_under_load(setup: Setup, wait_replicas: int) -> None:
    t = asyncio.run(_run(setup, f"w{wait_replicas}", wait_replicas))
    _report(f"wait_replicas={wait_replicas}", t)
    _check_common(t)
    if wait_replicas:
        # Each acknowledged write reached the replica, and that replica is the one promoted.
        assert t.failures["lost kv"] == 0 and t.failures["lost jobs"] == 0
    elif STALL_SECONDS:
        # Asynchronous replication: what the primary acknowledged during the stall is gone.
        assert t.failures["lost kv"] + t.failures["lost jobs"] > 0


def test_wait_replicas_without_replicas_fails_the_write_clearly(request: pytest.FixtureRequest) -> None:
    """A lone redis-server has no replica: a durable write is applied but reported as not replicated."""
    lone: RedisServer = request.getfixturevalue("redis_server")

    async def main() -> None:
        store = RemoteStore(f"redis://127.0.0.1:{lone.port}/0", wait_replicas=1, wait_timeout_ms=20)
        try:
            with pytest.raises(HeliosError) as e:
                await store.set("ha:lone", b"v")
            assert (e.value.status, e.value.code) == (503, "store_replication")
            assert e.value.detail == {"acknowledged": 0, "wanted": 1}
            assert "applied on the primary" in str(e.value)
            assert await store.get("ha:lone") == b"v"  # applied, as the error says
            await store.set("ha:fast", b"v", durable=False)  # not durable: never waits
            with pytest.raises(HeliosError, match="store_replication|replicas acknowledged"):
                await store.delete("ha:lone")
        finally:
            await store.close()

    asyncio.run(main())


def test_wait_replicas_on_a_server_without_wait_names_the_setting() -> None:
    """A server that refuses WAIT (here a redis-server with WAIT renamed away, as a proxy or a locked
    down server would refuse it): the write is applied, and the error says which setting to change.
    (atlasd answers WAIT as a Redis with no replicas does: test_differential_cluster_acl.)"""
    from tests.redis_server import RedisServer

    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(executable, args=("--rename-command", "WAIT", "")).start()
    try:
        async def main() -> None:
            store = RemoteStore(f"redis://127.0.0.1:{server.port}/0", wait_replicas=1)
            try:
                with pytest.raises(ConfigError) as e:
                    await store.set("ha:nowait", b"v")
                assert e.value.key == "store.wait_replicas" and "applied without waiting" in str(e.value)
                assert "unknown command" in str(e.value)  # (the server's own words)
                assert await store.get("ha:nowait") == b"v"
            finally:
                await store.close()

        asyncio.run(main())
    finally:
        server.stop()


def test_helios_health_asks_the_sentinels_for_the_primary(setup: Setup) -> None:
    """`helios health --url redis+sentinel://…` pings the primary the sentinels name (exit 0), and
    says so when they name none for the service (exit 1)."""
    from click.testing import CliRunner

    from helios_cli.main import cli

    ok = CliRunner().invoke(cli, ["health", "--url", setup.group.url, "--timeout", "5"])
    assert ok.exit_code == 0, ok.output
    assert "healthy" in ok.output and "PONG" in ok.output
    url = setup.group.url.rsplit("/", 1)[0] + "/no-such-service"
    bad = CliRunner().invoke(cli, ["health", "--url", url, "--timeout", "5"])
    assert bad.exit_code == 1, bad.output
    assert "no sentinel names a primary for 'no-such-service'" in bad.output
