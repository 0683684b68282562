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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ScriptOp", "Model", "Write", "RATE_TAKE"]

# (key, new value or None to delete, PX milliseconds or None)
Write = tuple[bytes, bytes | None, int | None]
# An operation's logic in Python: (KEYS, their values, ARGV) -> (reply, writes).  Pure: no I/O, no clock.
Model = Callable[[list[bytes], list[bytes | None], list[bytes]], tuple[Any, list[Write]]]


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
    sha: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source).hexdigest().encode())


# The token-bucket decision of helios_core/ratelimit.py's take(), on the server.
#   KEYS[1]  the bucket (rate:{clientId}); KEYS[2], optional, the settings document the caller
#            chose its policy from (ratelimit.SETTINGS_KEY)
#   ARGV     limit, window_s, now_ms, cost, and with KEYS[2] the settings as the caller saw
#            them ('-' absent, '=' .. document)
#   reply    {allowed 1|0, remaining, reset_ms, retry_after_ms}, or {-1, document or nil}
#            when the settings changed: choose the policy again and retry.
# Precision: milli-token amounts stay below limit * 1000 * window_s, and elapsed time is
# capped at window_s * 1000 before it is multiplied, so all products stay exact for any
# policy with limit * window_s below 9e12.
RATE_TAKE = ScriptOp("rate_take", b"""\
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
  redis.call('set', KEYS[1], string.format('%d:%d', left, last), 'PX', string.format('%d', math.max(1, reset)))
  return {1, math.floor(left / 1000), reset, 0}
end
local retry = 0
if need <= cap then retry = math.max(1, last + ms_for(need - milli) - now) end
return {0, math.floor(milli / 1000), math.max(0, last + ms_for(cap - milli) - now), retry}
""")
