"""Named atomic store operations: each hot read-modify-write defined once, as one Lua script.

`Store.run_script(op, keys, args)` runs an operation atomically on the
server: EVALSHA (EVAL the first time) on Redis, Valkey and atlasd, and the
same source through the embedded engine's scripting in one engine step.  So
there is one definition per operation, and a contended key costs one round
trip instead of a WATCH/MULTI retry loop (DESIGN.md section 7).

Each operation keeps a pure Python model of its logic (the rate limit's is
`helios_core.ratelimit.take`, wrapped as `ratelimit.RATE_TAKE_OP`'s `model`)
that tests hold the Lua to, over random inputs, on atlasd and a real
redis-server.  The embedded store runs the model inside one transaction
(one engine step) instead of the Lua, which is ~3x dearer in process.

Writing one: Lua 5.1 numbers are doubles, exact for integers below 2^53;
keep every intermediate below that (and say why it stays there).  Format
numbers written to keys with string.format('%d', n): tostring() would write
1.8e+12.  Name every key the script touches in KEYS (Redis Cluster routes by
them, and atlasd's reveal rule follows them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helios_core.store.base import Txn

__all__ = ["ScriptOp", "Model", "TxnModel", "Write", "RATE_TAKE", "JOB_REGISTER", "JOB_ENQUEUE", "JOB_LEASE",
           "JOB_ACK", "JOB_NACK", "JOB_EXTEND", "JOB_PRUNE_BATCH"]

# (key, new value or None to delete, PX milliseconds or None)
Write = tuple[bytes, bytes | None, int | None]
# An operation's logic in Python: (KEYS, their values, ARGV) -> (reply, writes).  Pure: no I/O, no clock.
Model = Callable[[list[bytes], list[bytes | None], list[bytes]], tuple[Any, list[Write]]]
# An operation's logic in Python over a transaction, for operations that read more than string
# keys (sorted sets, keys found on the way): (txn, KEYS, ARGV) -> reply.  It reads through txn and
# queues its writes on it; no I/O besides, no clock.  The embedded store runs it in one transaction.
TxnModel = Callable[["Txn", list[bytes], list[bytes]], Awaitable[Any]]


@dataclass(frozen=True)
class ScriptOp:
    """One named atomic operation: its Lua source and that source's SHA1 (what EVALSHA sends)."""

    name: str
    source: bytes
    # Announce the KEYS it was given as written on a RemoteStore's change feed (store/remote.py),
    # for operations whose keys someone subscribes to (job queues); rate buckets need not.
    notify: bool = False
    # The same logic as a pure Python function, for a store whose transaction is already one
    # step of its engine (the embedded store): there a Lua call costs ~3x the transaction (lupa's
    # Python<->Lua crossings), and nothing else can interleave anyway.  The Lua source stays the
    # definition servers run; tests hold the two to each other over random inputs.
    model: Model | None = field(default=None, compare=False)
    txn_model: TxnModel | None = field(default=None, compare=False)
    # With notify: announce only the KEYS ending with one of these (empty: all of them); a job
    # enqueue announces the ready/delayed sets long polls wait on, not every record it wrote.
    notify_only: tuple[bytes, ...] = ()
    sha: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source).hexdigest().encode())


# How long a bucket's record lives at least, in ms, although it is full sooner.  A bucket found
# after its refill time reads as full, as a missing one does, so keeping it changes no decision (for
# the same policy); and a caller whose bucket refills in a few ms (a generous limit) rewrites one
# record per request instead of having it expire, logged as a DEL, and written anew.
RATE_MIN_TTL_MS = 1000

# The token-bucket decision of helios_core/ratelimit.py's take(), on the server.
#   KEYS[1]  the bucket (rate:{clientId}); KEYS[2], optional, the settings document the caller
#            chose its policy from (ratelimit.SETTINGS_KEY)
#   ARGV     limit, window_s, now_ms, cost, and with KEYS[2] the settings as the caller saw
#            them ('-' absent, '=' .. document)
#   reply    {allowed 1|0, remaining, reset_ms, retry_after_ms}, or
#            {-1, document or nil} when the settings changed: choose the policy again and retry.
# (The gateway reads a caller's token, user and roles, and the value it asked for, in the same
# round trip: Store.read_and_run_script's MGET, beside the script, not in it.)
# Precision: milli-token amounts stay below limit * 1000 * window_s, and elapsed time is
# capped at window_s * 1000 before it is multiplied, so all products stay exact for any
# policy with limit * window_s below 9e12.
RATE_TAKE = ScriptOp("rate_take", b"local MIN_TTL = %d\n" % RATE_MIN_TTL_MS + b"""\
local got = redis.call('mget', unpack(KEYS))  -- one call for the bucket and the settings
if #KEYS > 1 then
  local doc = got[2]
  if (doc and ('=' .. doc) or '-') ~= ARGV[5] then return {-1, doc} end
end
local limit, window, now, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local cap = limit * 1000
local function ms_for(milli) return math.ceil(milli * window / limit) end
local milli, last = cap, now
local raw = got[1]
if raw then
  local m, l = string.match(raw, '^(%-?%d+):(%-?%d+)$')
  if m then
    milli, last = math.min(tonumber(m), cap), tonumber(l)
    local elapsed = now - last
    if elapsed >= window * 1000 then
      milli, last = cap, now
    elseif elapsed > 0 then
      local gained = math.floor(elapsed * limit / window)
      if milli + gained >= cap then
        milli, last = cap, now
      else
        milli, last = milli + gained, last + math.floor(gained * window / limit)
      end
    end
  end
end
local need = cost * 1000
if milli >= need then
  local left = milli - need
  local reset = math.max(0, last + ms_for(cap - left) - now)
  redis.call('set', KEYS[1], string.format('%d:%d', left, last), 'PX', string.format('%d', math.max(MIN_TTL, reset)))
  return {1, math.floor(left / 1000), reset, 0}
end
local retry = 0
if need <= cap then retry = math.max(1, last + ms_for(need - milli) - now) end
return {0, math.floor(milli / 1000), math.max(0, last + ms_for(cap - milli) - now), retry}
""")


# -- the job queue's hot transitions (helios_core/jobs/ops.py holds their Python models) --
#
# A job record (jobs/model.py) is JSON written one member per line in a fixed order after
# {"v":2,; the scripts split it on ",\n" into the members' raw JSON texts f[1..17] and join it
# back, changing only the members a transition changes.  Payload, result and error texts are
# copied through as they are (no Lua JSON codec re-encodes them).  Members, by position:
#   1 id  2 queue  3 state  4 created_ms  5 available_ms  6 max_attempts  7 visibility_timeout_s
#   8 priority  9 attempts  10 lease  11 last_error  12 result  13 dedup_id  14 trace
#   15 finished_ms  16 updated_ms  17 payload
# States are JSON strings ('"PENDING"'), a missing lease or finish time is 'null'.
# Numbers: ms times (< 2^42), attempts and priorities; a ready score is below 2^53 (model.ready_score).
# Every key of a queue Q is under job:{Q}: (one hash tag: one slot on Redis Cluster), a record is
# job:{Q}:<id>.  The lease finds its jobs in the ready set, and a dedup hit finds its job by the id
# the dedup key holds, so those two read (and the lease writes) records they cannot name in KEYS
# before they run: they name them from the queue's prefix (its index key's name up to the last
# ':'), in the slot of the KEYS.  A script may cover several queues when the store runs it on one
# server (Store.slot: jobs/ops.py groups queues by it); all other keys are KEYS.
JOB_PRUNE_BATCH = 100  # transitions.PRUNE_BATCH

_JOB_LIB = b"""\
local FIELDS = {'id', 'queue', 'state', 'created_ms', 'available_ms', 'max_attempts', 'visibility_timeout_s',
  'priority', 'attempts', 'lease', 'last_error', 'result', 'dedup_id', 'trace', 'finished_ms', 'updated_ms',
  'payload'}
local HEAD = '{"v":2,\\n'
local function d(n) return string.format('%d', n) end
-- A key of a queue -> its queue's prefix (job:{Q}:) and what follows it (a job id, 'ready', ...).
local function split(key) return string.match(key, '^(.*:)([^:]*)$') end
local function parse(key, raw)
  if not raw then return nil end
  if string.sub(raw, 1, #HEAD) ~= HEAD then
    return redis.error_reply('job record ' .. key .. ' is in an older format: run jobs.migrate first')
  end
  local f, pos = {}, #HEAD + 1
  for n = 1, #FIELDS - 1 do
    local e = string.find(raw, ',\\n', pos, true)
    f[n] = string.sub(raw, pos + #FIELDS[n] + 3, e - 1)
    pos = e + 2
  end
  f[#FIELDS] = string.sub(raw, pos + #FIELDS[#FIELDS] + 3, -2)
  return f
end
local function load(key)
  local f = parse(key, redis.call('get', key))
  if f and f.err then error(f) end
  return f
end
local function enc(f)
  local parts = {}
  for n = 1, #FIELDS do parts[n] = '"' .. FIELDS[n] .. '":' .. f[n] end
  return HEAD .. table.concat(parts, ',\\n') .. '}'
end
local function put(key, f, px)
  if px then redis.call('set', key, enc(f), 'PX', d(px)) else redis.call('set', key, enc(f)) end
end
local function ready_score(f)
  return (1000 - tonumber(f[8])) * 4398046511104 + tonumber(f[5]) % 4398046511104
end
local function lease_of(f)  -- token, worker JSON, deadline
  local token, worker, deadline = string.match(f[10], '^{"token":"([^"]*)","worker":(.*),"deadline_ms":(%-?%d+)}$')
  return token, worker, tonumber(deadline)
end
local function lease_json(token, worker, deadline)
  return '{"token":"' .. token .. '","worker":' .. worker .. ',"deadline_ms":' .. d(deadline) .. '}'
end
-- Up to a batch of members of a done/DLQ index past retention: their records have expired.
local function prune(key, cutoff)
  local stale = redis.call('zrangebyscore', key, '-inf', '(' .. d(cutoff), 'LIMIT', 0, PRUNE_BATCH)
  if #stale > 0 then redis.call('zrem', key, unpack(stale)) end
end
-- Record `key` of job `id` -> PENDING due at `at` (ready now, or delayed); kept without TTL.
local function to_pending(key, id, f, at, now, ready, delayed)
  f[3], f[5], f[10], f[15], f[16] = '"PENDING"', d(at), 'null', 'null', d(now)
  put(key, f)
  if at <= now then redis.call('zadd', ready, d(ready_score(f)), id)
  else redis.call('zadd', delayed, d(at), id) end
end
-- -> FAILED into the DLQ, kept for its retention.
local function to_failed(key, id, f, err, now, dlq, dlq_ms)
  f[3], f[10], f[11], f[15], f[16] = '"FAILED"', 'null', err, d(now), d(now)
  put(key, f, dlq_ms)
  redis.call('zadd', dlq, d(now), id)
end
-- The holder check of ack, nack, extend: the record if `token` holds its lease, else a reply
-- {0, false, ''} (no such job, or on another queue than `queue` when one is given) or
-- {2, state, 'state'|'token'}.
local function holder(key, token, queue)
  local f = load(key)
  if not f or (queue ~= '' and f[2] ~= '"' .. queue .. '"') then return nil, {0, false, ''} end
  local held = lease_of(f)
  if f[3] ~= '"IN_PROGRESS"' or not held then return nil, {2, f[3], 'state'} end
  if held ~= token then return nil, {2, f[3], 'token'} end
  return f
end
""".replace(b"PRUNE_BATCH", b"%d" % JOB_PRUNE_BATCH)


def _job_op(name: str, body: bytes, **kw: Any) -> ScriptOp:
    return ScriptOp(name, _JOB_LIB + body, **kw)


_WAKES = (b":ready", b":delayed")  # what a long poll waits on (jobs/waker.py): job:{Q}:ready, job:{Q}:delayed

# Register queues in the registry job:queues (a slot of its own: jobs/registry.py), refusing one
# more than the cap allows.
#   KEYS   job:queues
#   ARGV   now, max queues (-1: no cap: a queue registered again after a race with forgetting it),
#          then per queue: name, configured 0|1 (configured queues do not count against the cap)
#   reply  {1} | {-2, first queue refused, live queues} (nothing registered)
JOB_REGISTER = ScriptOp("job_register", b"""\
local now, cap = ARGV[1], tonumber(ARGV[2])
if cap >= 0 then
  local capped, first = 0, nil
  for i = 3, #ARGV, 2 do
    if ARGV[i + 1] == '0' and not redis.call('zscore', KEYS[1], ARGV[i]) then
      capped = capped + 1
      first = first or ARGV[i]
    end
  end
  if capped > 0 then
    local live = redis.call('zcard', KEYS[1])
    if live + capped > cap then return {-2, first, live} end
  end
end
for i = 3, #ARGV, 2 do redis.call('zadd', KEYS[1], now, ARGV[i]) end
return {1}
""")

# Enqueue a batch (of the queues of one slot): check that each queue is still registered (its
# job:{Q}:listed key; or mark it so, for queues the caller has just registered), skip the jobs
# whose dedup key already names a live job, write the rest.
#   KEYS   per queue: its listed key; then per job: its record, its index (ready or delayed), its
#          dedup key if any
#   ARGV   dedup window ms, number of queues, then per queue: 1 (just registered: mark it listed)
#          or 0 (must be listed), then per job: has dedup 0|1, index score, record
#   reply  {1, created 1|0, the existing record (a dedup hit) or false, ...}, or {-3, i...} when
#          the i-th queues (1-based) are not listed (forgotten since: register them again); then
#          nothing was written
JOB_ENQUEUE = _job_op("job_enqueue", b"""\
local window, nq = ARGV[1], tonumber(ARGV[2])
local unlisted = {-3}
for i = 1, nq do
  if ARGV[2 + i] ~= '1' and redis.call('exists', KEYS[i]) == 0 then unlisted[#unlisted + 1] = i end
end
if #unlisted > 1 then return unlisted end
for i = 1, nq do
  if ARGV[2 + i] == '1' then redis.call('set', KEYS[i], '1') end
end
local out, made = {1}, {}
local k, a = nq + 1, 3 + nq
while a <= #ARGV do
  local rec_key, index = KEYS[k], KEYS[k + 1]
  local dedup = ARGV[a] == '1' and KEYS[k + 2] or nil
  local pre, id = split(rec_key)
  local existing = nil
  if dedup then
    existing = made[dedup]
    if not existing then
      local first = redis.call('get', dedup)
      if first then existing = redis.call('get', pre .. first) or nil end
    end
  end
  if existing then
    out[#out + 1], out[#out + 2] = 0, existing
  else
    redis.call('set', rec_key, ARGV[a + 2])
    redis.call('zadd', index, ARGV[a + 1], id)
    if dedup then
      redis.call('set', dedup, id, 'PX', window)
      made[dedup] = ARGV[a + 2]
    end
    out[#out + 1], out[#out + 2] = 1, false
  end
  k = k + (dedup and 3 or 2)
  a = a + 3
end
return out
""", notify=True, notify_only=_WAKES)

# Lease: per queue, return its expired leases (PENDING due now, or FAILED without attempts left),
# promote its due delayed jobs, then lease the best ready ones while the batch has room.
#   KEYS   per queue: leased, delayed, ready, dlq
#   ARGV   now, max jobs, worker (JSON string), visibility override s (0: the job's), the bound up to
#          which leases and delayed jobs are read ('+inf' to learn the next due time, or now),
#          DLQ retention ms, maintenance batch, then max jobs fresh lease tokens
#   reply  {next due ms or -1, leased record...}: next due is when the first lease deadline or
#          delayed job read past now is due (now when a full batch was due: more may be)
JOB_LEASE = _job_op("job_lease", b"""\
local now, max, worker, vis_over = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local upto, dlq_ms, batch = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local out, next_due = {}, -1
local function due_of(entries)
  for i = 2, #entries, 2 do
    local s = tonumber(entries[i])
    if s > now then return s end
  end
  if #entries / 2 >= batch then return now end
  return -1
end
local function earliest(a, b)
  if a < 0 then return b end
  if b < 0 then return a end
  return math.min(a, b)
end
for qi = 0, #KEYS / 4 - 1 do
  local leased, delayed, ready, dlq = KEYS[4 * qi + 1], KEYS[4 * qi + 2], KEYS[4 * qi + 3], KEYS[4 * qi + 4]
  local pre = split(leased)
  local expiring = redis.call('zrangebyscore', leased, '-inf', upto, 'WITHSCORES', 'LIMIT', 0, batch)
  local later = redis.call('zrangebyscore', delayed, '-inf', upto, 'WITHSCORES', 'LIMIT', 0, batch)
  local failed = false
  for i = 1, #expiring, 2 do
    local id = expiring[i]
    if tonumber(expiring[i + 1]) > now then break end
    local f = load(pre .. id)
    local token, _, deadline = nil, nil, nil
    if f then token, _, deadline = lease_of(f) end
    if not f or f[3] ~= '"IN_PROGRESS"' or not token then
      redis.call('zrem', leased, id)
    elseif deadline > now then
      redis.call('zadd', leased, d(deadline), id)  -- the index disagrees with the record: the record wins
    else
      local ms = deadline - tonumber(f[16])
      local held = math.floor(ms / 1000)
      local rest = ms - held * 1000
      if rest > 500 or (rest == 500 and held % 2 == 1) then held = held + 1 end  -- Python's round()
      local err = '"lease expired after ' .. d(math.max(1, held)) .. ' s (attempt ' .. f[9] .. ' of ' .. f[6] .. ')"'
      redis.call('zrem', leased, id)
      if tonumber(f[9]) >= tonumber(f[6]) then
        to_failed(pre .. id, id, f, err, now, dlq, dlq_ms)
        failed = true
      else
        f[11] = err
        to_pending(pre .. id, id, f, now, now, ready, delayed)
      end
    end
  end
  for i = 1, #later, 2 do
    local id = later[i]
    if tonumber(later[i + 1]) > now then break end
    local f = load(pre .. id)
    redis.call('zrem', delayed, id)
    if f and f[3] == '"PENDING"' then redis.call('zadd', ready, d(ready_score(f)), id) end
  end
  if failed then prune(dlq, now - dlq_ms) end
  local room = max - #out
  if room > 0 then
    for _, id in ipairs(redis.call('zrange', ready, 0, room - 1)) do
      local f = load(pre .. id)
      redis.call('zrem', ready, id)
      if f and f[3] == '"PENDING"' then
        local vis = vis_over > 0 and vis_over or tonumber(f[7])
        local deadline = now + vis * 1000
        f[3], f[9], f[16] = '"IN_PROGRESS"', d(tonumber(f[9]) + 1), d(now)
        f[10] = lease_json(ARGV[8 + #out], worker, deadline)
        put(pre .. id, f)
        redis.call('zadd', leased, d(deadline), id)
        out[#out + 1] = enc(f)
      end
    end
  end
  next_due = earliest(next_due, earliest(due_of(expiring), due_of(later)))
end
table.insert(out, 1, next_due)
return out
""")

# Ack a batch: each IN_PROGRESS job whose lease the token holds -> DONE with its result.
#   KEYS   per item: record, leased, done (of the job's queue)
#   ARGV   now, done retention ms, then per item: token, result (JSON), queue the job must be on
#          ('' any: its done/leased keys then follow from the record)
#   reply  per item three values: 1, record, '' | 0, false, '' (no such job) | 2, state, 'state'|'token'
JOB_ACK = _job_op("job_ack", b"""\
local now, done_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local out, finished = {}, {}
for i = 0, #KEYS / 3 - 1 do
  local rec_key, leased, done = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local _, id = split(rec_key)
  local f, refused = holder(rec_key, ARGV[3 + 3 * i], ARGV[5 + 3 * i])
  if f then
    f[3], f[10], f[12], f[15], f[16] = '"DONE"', 'null', ARGV[4 + 3 * i], d(now), d(now)
    put(rec_key, f, done_ms)
    redis.call('zrem', leased, id)
    redis.call('zadd', done, d(now), id)
    finished[done] = true
    out[#out + 1], out[#out + 2], out[#out + 3] = 1, enc(f), ''
  else
    out[#out + 1], out[#out + 2], out[#out + 3] = refused[1], refused[2], refused[3]
  end
end
for key in pairs(finished) do prune(key, now - done_ms) end
return out
""")

# Nack one job: give it back (PENDING after a delay) or, with no attempts left, fail it into the
# DLQ; or release it (it never ran: PENDING now, the attempt not counted, last_error kept).
#   KEYS   record, leased, ready, delayed, dlq
#   ARGV   now, token, queue ('' any), mode 'retry'|'release', error (JSON), delay ms, DLQ retention ms
#   reply  {1, record, ''} | {0, false, ''} | {2, state, 'state'|'token'} (as JOB_ACK's per item)
JOB_NACK = _job_op("job_nack", b"""\
local now = tonumber(ARGV[1])
local _, id = split(KEYS[1])
local f, refused = holder(KEYS[1], ARGV[2], ARGV[3])
if not f then return refused end
redis.call('zrem', KEYS[2], id)
if ARGV[4] == 'release' then
  f[9] = d(math.max(0, tonumber(f[9]) - 1))
  to_pending(KEYS[1], id, f, now, now, KEYS[3], KEYS[4])
elseif tonumber(f[9]) >= tonumber(f[6]) then
  to_failed(KEYS[1], id, f, ARGV[5], now, KEYS[5], tonumber(ARGV[7]))
  prune(KEYS[5], now - tonumber(ARGV[7]))
else
  f[11] = ARGV[5]
  to_pending(KEYS[1], id, f, now + tonumber(ARGV[6]), now, KEYS[3], KEYS[4])
end
return {1, enc(f), ''}
""", notify=True, notify_only=_WAKES)

# Extend a lease: deadline now + visibility, same token.
#   KEYS   record, leased
#   ARGV   now, token, queue ('' any), visibility s
#   reply  {1, record, ''} | {0, false, ''} | {2, state, 'state'|'token'} (as JOB_ACK's per item)
JOB_EXTEND = _job_op("job_extend", b"""\
local now = tonumber(ARGV[1])
local _, id = split(KEYS[1])
local f, refused = holder(KEYS[1], ARGV[2], ARGV[3])
if not f then return refused end
local token, worker = lease_of(f)
local deadline = now + tonumber(ARGV[4]) * 1000
f[10], f[16] = lease_json(token, worker, deadline), d(now)
put(KEYS[1], f)
redis.call('zadd', KEYS[2], d(deadline), id)
return {1, enc(f), ''}
""")
