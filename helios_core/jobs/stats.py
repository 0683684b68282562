"""A queue's counts read as one consistent snapshot: one atomic script instead of several reads.

Read one after another, the counts of a busy queue came from different
moments (seen: done=20008 and in_progress=56 with 20,008 jobs in existence),
because jobs moved between the reads.  QUEUE_STATS reads every index of the
queue in one server step (Redis, Valkey, atlasd: EVALSHA; embedded: one
engine step), so the numbers add up to the jobs that existed at one instant.

The oldest pending job is the smallest id in the ready and delayed sets (ids
are ULIDs: they sort by creation time), found on the server, so only the
counts and one id cross the network.  That is still O(pending) work for the
server per call, as reading the sets was before.
"""

from __future__ import annotations

from helios_core.jobs.model import delayed_key, dlq_key, done_key, job_id_ms, leased_key, ready_key
from helios_core.store.base import Store
from helios_core.store.scripts import ScriptOp

__all__ = ["QUEUE_STATS", "read_counts", "Counts"]

# KEYS   ready, delayed, leased, done, dlq of one queue
# ARGV   done cutoff, dlq cutoff: exclusive score bounds "(MS"; entries below are past retention
#        (records already expired, their index entries not pruned yet) and are not counted
# reply  {pending, delayed, in_progress, done, failed, oldest pending job id or nil}
QUEUE_STATS = ScriptOp("queue_stats", b"""\
local function live(key, cutoff)
  return redis.call('zcard', key) - redis.call('zcount', key, '-inf', cutoff)
end
local oldest = false
for i = 1, 2 do
  for _, m in ipairs(redis.call('zrange', KEYS[i], 0, -1)) do
    if not oldest or m < oldest then oldest = m end
  end
end
return {redis.call('zcard', KEYS[1]), redis.call('zcard', KEYS[2]), redis.call('zcard', KEYS[3]),
        live(KEYS[4], ARGV[1]), live(KEYS[5], ARGV[2]), oldest}
""")

# (pending, delayed, in_progress, done, failed, created ms of the oldest pending job or None)
Counts = tuple[int, int, int, int, int, int | None]


async def read_counts(store: Store, queue: str, done_cutoff_ms: int, dlq_cutoff_ms: int) -> Counts:
    """The queue's counts at one instant; done/failed entries scored below their cutoff are left out."""
    keys = [ready_key(queue), delayed_key(queue), leased_key(queue), done_key(queue), dlq_key(queue)]
    # durable=False: it writes nothing, so there is nothing to wait for (nor any replica to ask).
    reply = await store.run_script(QUEUE_STATS, list(keys), [f"({done_cutoff_ms}", f"({dlq_cutoff_ms}"],
                                   durable=False)
    pending, delayed, in_progress, done, failed = (int(v) for v in reply[:5])
    oldest = reply[5] if len(reply) > 5 else None
    if isinstance(oldest, bytes):
        oldest = oldest.decode()
    return pending, delayed, in_progress, done, failed, (job_id_ms(oldest) if oldest else None)
