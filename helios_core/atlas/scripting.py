"""Lua scripting for ATLAS: the runtime behind EVAL, EVALSHA, SCRIPT and FCALL (Redis 7.0 semantics).

One Lua 5.1 state per engine (lupa.lua51, the dialect Redis embeds), holding
every script compiled once and cached by its SHA1.  A script runs as one
engine step (commands/scripting.py): the commands it calls go through the
same `Engine.execute` as a client's, so their effects, not the script, reach
the AOF, in one record, and replay never runs Lua.

What a script sees, as in Redis 7.0:
- `KEYS`, `ARGV`, `redis.call/pcall/error_reply/status_reply/sha1hex/log`,
  the base, string, table, math, cjson and bit libraries; a read or write of an unknown
  global is an error (the globals are read-only).  No os, io, loadfile,
  dofile, require, loadstring, debug or coroutine: nothing reaches outside.
- Replies become Lua values by Redis's rules (integer -> number, bulk ->
  string, nil -> false, array -> table, status -> {ok=}, error -> {err=});
  a script's result goes back the other way (number -> integer, truncated,
  true -> 1, false -> nil, {ok=}/{err=} -> status/error, tables -> arrays up to
  the first nil).
- Errors are shaped as Redis 7.0 shapes them: "<err> script: <sha>, on
  @user_script:<line>."; a function's (FCALL, functions.py) "<err> script: <name>, on
  @user_function:<line>.".

A long script, as in Redis 7.0: past busy-reply-threshold (lua-time-limit,
`busy_after_ms`) the instruction hook lets atlasd serve other clients from
inside the script (`BusyHost`, busy.py): they get BUSY, except for AUTH,
HELLO, QUIT, SCRIPT KILL, FUNCTION KILL, SHUTDOWN NOSAVE and the few others
Redis allows.  SCRIPT KILL ends a script that has not called a write command
(ScriptKilledByUser, Redis's error); one that has is UNKILLABLE.  SHUTDOWN
NOSAVE ends it with its writes undone (they reach the AOF only when a script
ends).  Beyond Redis, a HELIOS cap: a script still running after
`kill_after_ms` (atlas.script_kill_after_ms; 0: never) is killed with its
writes undone, whether it wrote or not, so one client cannot hold the server
forever; memory is capped too (`max_memory`).  `coroutine` is absent (a
coroutine escapes the instruction hook that enforces both limits), and so are
cmsgpack and struct; cjson.decode's error texts are Python's, not lua-cjson's.

`redis.setresp(3)` switches what `redis.call` gives back to Redis 7.0's RESP3 -> Lua rules for the
rest of the run (map -> {map=...}, set -> {set={member=true}}, null -> nil, booleans, double ->
{double=n}, big number -> {big_number=s}, verbatim -> {verbatim_string={format=, string=}}), and
a returned boolean is then a RESP3 boolean (`:1`/`:0` to a RESP2 client).  Whatever the setting, a
script may return {double=}, {big_number=}, {verbatim_string=}, {map=} and {set=} tables.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import lupa.lua51 as lua51  # type: ignore[import-untyped]

import helios_core.atlas.cmdstats as cmdstats  # (a module reference: cmdstats imports the command table)
from helios_core.atlas.commands.subcommands import BY_CONTAINER, find_sub, sub_flags
from helios_core.atlas.commands.table import TABLE, Command, Simple
from helios_core.atlas.lua_libs import LibError, lua_libs
from helios_core.atlas.resp import BigNumber, OrderedSet, Verbatim, encode
from helios_core.errors import CommandError, HeliosError

__all__ = ["Scripting", "BusyHost", "ScriptKilled", "ScriptKilledByUser", "script_sha", "DEFAULT_BUSY_AFTER_MS",
           "DEFAULT_KILL_AFTER_MS", "DEFAULT_MAX_MEMORY", "LOAD_TIMEOUT_MS"]

DEFAULT_BUSY_AFTER_MS = 5000   # busy-reply-threshold (lua-time-limit), as Redis 7.0's default
DEFAULT_KILL_AFTER_MS = 60000  # atlas.script_kill_after_ms
DEFAULT_MAX_MEMORY = 256 * 1024 * 1024
LOAD_TIMEOUT_MS = 500  # FUNCTION LOAD: a library's top-level code, as Redis 7.0
_HOOK_EVERY = 50_000  # Lua instructions between two looks at the clock
_SERVE_EVERY = 0.002  # CPU seconds between two calls of the busy host while a script is busy
_SERVE_ROOM = 1024 * 1024  # no call into Python within this many bytes of the memory cap

NOSCRIPT = "NOSCRIPT No matching script. Please use EVAL."

_BOOT = r"""
local py_call, py_pcall, py_unwrap, py_sha1, py_log, py_setresp, py_serve, py_json, py_bit = ...
local clock, wall, gc_count, huge = os.clock, os.time, collectgarbage, math.huge
local dbg, error, type, tostring, select, setmetatable, setfenv, xpcall, pcall, rawget, rawset =
      debug, error, type, tostring, select, setmetatable, setfenv, xpcall, pcall, rawget, rawset

local function readonly(t, k, v) error("Attempt to modify a readonly table", 2) end
local function ro(tbl) return setmetatable({}, {__index = tbl, __newindex = readonly, __metatable = false}) end

-- The kill signal of the time limit: scripts' pcall/xpcall pass it on instead of catching it.
local KILL = {}
local function pass_kill(ok, ...)
  if ok then return ok, ... end
  if (...) == KILL then error(KILL, 0) end
  return ok, ...
end
-- Redis 7.0's pcall gives an error table's message as a string (redis.call's error included).
local function pcall_result(ok, ...)
  if ok then return ok, ... end
  local e = ...
  if e == KILL then error(KILL, 0) end
  local unwrapped = type(e) == 'userdata'
  if unwrapped then e = (py_unwrap(e)) end
  if type(e) == 'table' and type(rawget(e, 'err')) == 'string' then return ok, rawget(e, 'err') end
  if unwrapped then return ok, e end
  return ok, ...
end

local redis = {}
-- Python callables, not Lua functions: `return redis.call(...)` must not be a tail call that
-- drops the script's frame (its line goes into the error text), and a C call is not one.
-- sha1hex and setresp too: `return redis.setresp(5)`'s error names the script's line.
redis.call, redis.pcall, redis.sha1hex, redis.setresp = py_call, py_pcall, py_sha1, py_setresp
redis.error_reply = function(...)
  local s = ...
  if select('#', ...) ~= 1 or type(s) ~= 'string' then return {err = 'ERR wrong number or type of arguments'} end
  if s:sub(1, 1) ~= '-' then s = '-' .. s end
  local sp = s:find(' ', 1, true)
  if not sp then return {err = 'ERR ' .. s:sub(2):gsub('[\r\n]+$', '')} end
  return {err = s:sub(2, sp - 1) .. ' ' .. (s:sub(sp + 1):gsub('[\r\n]+$', ''))}
end
redis.status_reply = function(...)
  local s = ...
  if select('#', ...) ~= 1 or type(s) ~= 'string' then return {err = 'ERR wrong number or type of arguments'} end
  return {ok = s}
end
redis.log = function(level, ...) py_log(level, ...) end
redis.replicate_commands = function() return true end
redis.set_repl = function() end
redis.breakpoint = function() return false end
redis.debug = function() end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.REPL_NONE, redis.REPL_AOF, redis.REPL_SLAVE, redis.REPL_REPLICA, redis.REPL_ALL = 0, 1, 2, 2, 3
redis.REDIS_VERSION, redis.REDIS_VERSION_NUM = '7.0.15', 0x07000f

local base = {}
for _, name in ipairs({'assert', 'error', 'ipairs', 'next', 'pairs', 'rawequal', 'rawget', 'rawset',
                       'select', 'setmetatable', 'getmetatable', 'tonumber', 'tostring', 'type', 'unpack',
                       'gcinfo', '_VERSION'}) do
  base[name] = _G[name]
end
base.pcall = function(...) return pcall_result(pcall(...)) end
base.xpcall = function(f, h)
  return pass_kill(xpcall(f, function(e)
    if e == KILL then return KILL end
    if type(e) == 'userdata' then e = (py_unwrap(e)) end
    return h(e)
  end))
end
base.string, base.table, base.math = ro(string), ro(table), ro(math)
-- cjson and bit as Redis has them, done in Python (lua_libs.py): Python callables,
-- so that `return cjson.encode(x)` is no tail call and an error names the script's line.
base.cjson, base.bit = ro(py_json), ro(py_bit)
base.redis = ro(redis)
-- ("x"):upper() reaches the string table through the strings' metatable: hide it from scripts.
dbg.getmetatable('').__metatable = false

-- Globals resolve through tables (no Lua call per access); only a miss reaches the function.
setmetatable(base, {__index = function(t, k)
  error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
end, __newindex = readonly, __metatable = false})
local env_mt = {__index = base, __newindex = readonly, __metatable = false}

-- Redis 7.0's error handler: a string becomes {err='ERR ...'}; the script's line is added.
local function handler(err)
  if err == KILL then return KILL end
  local where = false
  if type(err) == 'userdata' then err, where = py_unwrap(err) end
  local level, info = 2, nil
  repeat
    info = dbg.getinfo(level, 'Sl')
    level = level + 1
  until info == nil or info.source == '@user_script' or info.source == '@user_function'
  if type(err) ~= 'table' then
    if where and info then err = info.source:sub(2) .. ':' .. info.currentline .. ': ' .. tostring(err) end
    err = {err = 'ERR ' .. tostring(err)}
  end
  if info then err.source, err.line = info.source, info.currentline end
  return err
end

-- Where a script is, for the error of one killed by SCRIPT KILL: the first frame of its own code.
local function locate(level)
  local info
  repeat
    info = dbg.getinfo(level, 'Sl')
    level = level + 1
  until info == nil or info.source == '@user_script' or info.source == '@user_function'
  if info then return info.source, info.currentline end
  return false, false
end

-- The clock: a count hook in Lua.  os.clock is CPU time, which a busy script spends 1:1 on an idle
-- machine; on a crowded one the wall clock (whole seconds: os.time) stops it too, one second or so
-- past the hard limit.  The CPU clock is first read by the hook, not when the script starts:
-- os.clock is a system call (no vDSO for CPU clocks) costing more than the rest of a short
-- script's set-up, and a script the hook never sees ran under HOOK_EVERY instructions.  So the
-- limits count from the first hook (under a millisecond in); the wall one from the start.
--
-- Two limits: past `serve_after` seconds (busy-reply-threshold) the hook lets atlasd serve other
-- clients (py_serve, busy.py), at most every SERVE_EVERY seconds, and py_serve's answer may kill
-- the script (SCRIPT KILL, SHUTDOWN NOSAVE); past `limit` (atlas.script_kill_after_ms) it is
-- killed.  The hook calls into Python only then, and only with room under the memory cap: a Lua
-- allocation that fails inside a call out of a hook may abort the process, so within SERVE_ROOM
-- bytes of the cap nobody is served that time round.
local started, limit, wall_deadline, killed = false, 0, 0, false
local serve_after, serve_at, serve_room, kill_source, kill_line = huge, huge, 0, false, false
dbg.sethook(function()
  local now = clock()
  if not started then started = now; serve_at = now + serve_after end
  if killed or now - started > limit or wall() > wall_deadline then
    if not killed then killed = 'KILL' end
    error(KILL, 0)
  end
  if now >= serve_at then
    serve_at = now + SERVE_EVERY
    if gc_count('count') < serve_room then
      local verdict = py_serve()
      if verdict then
        killed = verdict
        kill_source, kill_line = locate(2)
        error(KILL, 0)
      end
    end
  end
end, '', HOOK_EVERY)

-- A run's limits (seconds; a negative one: none) and the memory, in KB, below which Python is called.
local function arm(seconds, serve, room)
  if seconds < 0 then
    limit, wall_deadline = huge, huge
  else
    limit, wall_deadline = seconds, wall() + math.ceil(seconds)
  end
  started, killed, serve_at, kill_source, kill_line = false, false, huge, false, false
  if serve < 0 then serve_after = huge else serve_after = serve end
  serve_room = room
end

local function kill_info() return killed, kill_source, kill_line end

-- Each script gets its environment once (globals are read-only, so nothing a run leaves in it
-- outlives the next run's KEYS and ARGV); weak keys let a flushed script go.
local envs = setmetatable({}, {__mode = 'k'})

-- KEYS and ARGV arrive as one vararg list (building them here is cheaper than two tables
-- made from Python).
local function run(fn, seconds, serve, room, nkeys, ...)
  local keys, argv, n = {...}, {}, select('#', ...)
  for i = nkeys + 1, n do argv[i - nkeys] = keys[i]; keys[i] = nil end
  arm(seconds, serve, room)
  local env = envs[fn]
  if env == nil then
    env = setmetatable({}, env_mt)
    envs[fn] = env
    setfenv(fn, env)
  end
  rawset(env, 'KEYS', keys)
  rawset(env, 'ARGV', argv)
  local ok, res = xpcall(fn, handler)
  if killed or (not ok and res == KILL) then return false, killed or 'KILL' end
  return ok, res
end

-- Functions (FUNCTION LOAD, FCALL; functions.py).  A library's top-level code runs with nothing
-- but the load API, as in Redis 7.0: `redis` holds register_function, log, the log levels and
-- the version; any other global is an error.  The functions it registers run later with the
-- globals scripts see (the library's environment switches over once its code returned), KEYS
-- and ARGV excepted: a function gets those as its two arguments.
local function strict(tbl)
  return setmetatable({}, {__index = function(t, k)
    local v = tbl[k]
    if v == nil then error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2) end
    return v
  end, __newindex = readonly, __metatable = false})
end
local FLAGS = {['no-writes'] = true, ['allow-oom'] = true, ['allow-stale'] = true, ['no-cluster'] = true,
               ['allow-cross-slot-keys'] = true}
local registering = nil  -- the registrations of the library being loaded
local function reg_error(msg) error({err = 'ERR ' .. msg}, 0) end
local function isstr(v) local t = type(v) return t == 'string' or t == 'number' end
local function register_function(...)
  local reg = registering
  if reg == nil then reg_error('redis.register_function can only be called on FUNCTION LOAD command') end
  local n = select('#', ...)
  if n < 1 or n > 2 then reg_error('wrong number of arguments to redis.register_function') end
  local name, fn, desc, flags = nil, nil, false, {}
  if n == 1 then
    local args = ...
    if type(args) ~= 'table' then
      reg_error('calling redis.register_function with a single argument is only applicable to Lua table '
                .. '(representing named arguments).')
    end
    for k, v in next, args do
      if not isstr(k) then reg_error('named argument key given to redis.register_function is not a string') end
      k = string.lower(tostring(k))
      if k == 'function_name' then
        if not isstr(v) then reg_error('function_name argument given to redis.register_function must be a string') end
        name = tostring(v)
      elseif k == 'description' then
        if not isstr(v) then reg_error('description argument given to redis.register_function must be a string') end
        desc = tostring(v)
      elseif k == 'callback' then
        if type(v) ~= 'function' then
          reg_error('callback argument given to redis.register_function must be a function')
        end
        fn = v
      elseif k == 'flags' then
        if type(v) ~= 'table' then
          reg_error('flags argument to redis.register_function must be a table representing function flags')
        end
        for _, f in next, v do
          if not isstr(f) or not FLAGS[tostring(f)] then reg_error('unknown flag given') end
          flags[#flags + 1] = tostring(f)
        end
      else
        reg_error('unknown argument given to redis.register_function')
      end
    end
    if name == nil then reg_error('redis.register_function must get a function name argument') end
    if fn == nil then reg_error('redis.register_function must get a callback argument') end
  else
    local a, b = ...
    if not isstr(a) then reg_error('first argument to redis.register_function must be a string') end
    if type(b) ~= 'function' then reg_error('second argument to redis.register_function must be a function') end
    name, fn = tostring(a), b
  end
  if not string.find(name, '^[%w_]+$') then
    reg_error('Library names can only contain letters, numbers, or underscores(_) and must be at least one '
              .. 'character long')
  end
  if reg.names[name] then reg_error('Function already exists in the library') end
  reg.names[name] = true
  reg.list[#reg.list + 1] = {name, fn, desc, flags}
end
local load_redis = {register_function = register_function, log = redis.log, LOG_DEBUG = redis.LOG_DEBUG,
                    LOG_VERBOSE = redis.LOG_VERBOSE, LOG_NOTICE = redis.LOG_NOTICE,
                    LOG_WARNING = redis.LOG_WARNING, REDIS_VERSION = redis.REDIS_VERSION,
                    REDIS_VERSION_NUM = redis.REDIS_VERSION_NUM}
local load_globals = strict({redis = strict(load_redis)})

-- Run a library's code: (true, {{name, fn, description or false, {flags}}, ...}) or (false, error).
local function load_library(chunk, seconds)
  local lib_mt = {__index = load_globals, __newindex = readonly, __metatable = false}
  setfenv(chunk, setmetatable({}, lib_mt))
  registering = {names = {}, list = {}}
  arm(seconds, -1, 0)
  local ok, res = xpcall(chunk, handler)
  local reg = registering
  registering = nil
  if killed or (not ok and res == KILL) then return false, 'KILL' end
  if not ok then return false, res end
  lib_mt.__index = base
  return true, reg.list
end

-- Call a registered function with its keys and arguments (one vararg list, as `run`).
local function call_function(fn, seconds, serve, room, nkeys, ...)
  local keys, argv, n = {...}, {}, select('#', ...)
  for i = nkeys + 1, n do argv[i - nkeys] = keys[i]; keys[i] = nil end
  arm(seconds, serve, room)
  local ok, res = xpcall(function() return fn(keys, argv) end, handler)
  if killed or (not ok and res == KILL) then return false, killed or 'KILL' end
  return ok, res
end
return run, load_library, call_function, kill_info
"""


def script_sha(body: bytes) -> str:
    return hashlib.sha1(body).hexdigest()


# The mark of an {err=} table whose error INFO errorstats counted already (Redis's field).
_COUNTED = b"ignore_error_stats_update"


class _CallError(Exception):
    """redis.call's error on its way through Lua to the script's error handler."""

    def __init__(self, table: Any) -> None:
        super().__init__("redis.call failed")
        self.table = table


class ScriptKilled(CommandError):
    """A script ran past the hard time limit or the memory cap, or SHUTDOWN NOSAVE ended it; its
    writes are undone."""


class ScriptKilledByUser(CommandError):
    """SCRIPT KILL or FUNCTION KILL ended a script, which had not written (one that wrote is
    UNKILLABLE): nothing to undo, an error like any other failed script's."""


class BusyHost(Protocol):
    """Who serves other clients while a script is busy (busy.py, atlasd's): `serve` is called from
    the script's hook, every few milliseconds past the threshold, and answers None to go on or
    the kill's kind (b"USER": SCRIPT/FUNCTION KILL, b"SHUTDOWN": SHUTDOWN NOSAVE); `finish` once
    the script ended, if `serve` was called."""

    def serve(self, script: Scripting) -> bytes | None: ...

    def finish(self, script: Scripting) -> None: ...


class Scripting:
    """The Lua state of one engine: compiled scripts by SHA1, and running one of them."""

    def __init__(self, execute: Callable[[list[bytes]], Any], pending_seq: Callable[[], int], *,
                 kill_after_ms: int = DEFAULT_KILL_AFTER_MS, busy_after_ms: int = DEFAULT_BUSY_AFTER_MS,
                 max_memory: int = DEFAULT_MAX_MEMORY,
                 reject: Callable[[list[bytes], str], Any] = lambda argv, text: None,
                 count_error: Callable[[str], None] = lambda text: None) -> None:
        self._execute = execute          # Engine.execute: a nested command of the running script
        self._pending_seq = pending_seq  # Engine.pending_seq: what that command's reply may reveal
        self._reject = reject            # Engine.reject: a call refused here counts as rejected (INFO)
        self._count_error = count_error  # INFO errorstats: an error reply the script returns
        self.kill_after_ms = kill_after_ms  # the hard limit (0: none); writes undone
        self.busy_after_ms = busy_after_ms  # busy-reply-threshold: the host serves others past it
        self.lua = lua51.LuaRuntime(encoding=None, max_memory=max_memory, register_eval=False,
                                    register_builtins=False, unpack_returned_tuples=True)
        boot = _BOOT.replace("HOOK_EVERY", str(_HOOK_EVERY)).replace("SERVE_EVERY", repr(_SERVE_EVERY))
        self._run, self._load_library, self._call_function, self._kill_info = self.lua.execute(
            boot, self._call_raise, self._call, self._unwrap, self._sha1hex, _log, self._setresp, self._serve,
            *lua_libs(self.lua))
        self._tonumber = self.lua.eval("tonumber")
        self._new_table = self.lua.table_from
        self._load = self.lua.eval(
            "function(src, name) local f, e = loadstring(src, name) if f then return f, '' end return false, e end")
        self._gc = self.lua.eval("function() collectgarbage() end")
        self.max_memory = max_memory
        self.scripts: dict[str, Any] = {}      # sha -> compiled chunk
        self.scripts_bytes = 0                 # their bodies' and SHA1s' bytes (INFO used_memory_scripts_eval)
        self._checked: dict[bytes, tuple[Command | None, str | None, str | None]] = {}
        self.readonly_scripts: set[str] = set()  # shebang flags=no-writes
        self.registry: Any = None  # the function libraries (functions.py), made on first use
        # The running script: read-only?, and the newest pending record its commands saw.
        self._readonly = False
        self._resp = 2  # redis.setresp: the protocol of redis.call's replies and of a returned boolean
        self.seen = 0
        self.running = False
        # The running script, as the busy host sees it (set per run by commands/scripting.py).
        self.host: BusyHost | None = None  # None: nobody to serve (an embedded engine, a test)
        self.caller: Any = None            # the connection that runs it (never served while busy)
        self.command: list[bytes] = []     # what it runs as (FUNCTION STATS shows it)
        self.kind = "eval"                 # or "function": which KILL ends it, which BUSY text
        self.name = ""                     # its sha or function name
        self.wrote = False                 # it called a write command: SCRIPT KILL refuses (UNKILLABLE)
        self.started = 0.0                 # time.monotonic() when it started
        self._served = False               # the host was called during this run

    # -- the cache ----------------------------------------------------------------------

    def load(self, body: bytes) -> str:
        """Compile `body` (once) and return its SHA1; Redis's error text when it does not compile."""
        sha = script_sha(body)
        if sha in self.scripts:
            return sha
        src, no_writes = _shebang(body)
        self.scripts[sha] = self._compile(src, b"@user_script", "script (new function)")
        self.scripts_bytes += len(body) + len(sha)
        if no_writes:
            self.readonly_scripts.add(sha)
        return sha

    def _compile(self, src: bytes, chunk_name: bytes, what: str) -> Any:
        """The compiled chunk of `src`, or Redis's "Error compiling <what>" error."""
        try:
            fn, message = self._load(src, chunk_name)
        except lua51.LuaMemoryError:
            raise CommandError(f"ERR Error compiling {what}: not enough memory") from None
        if not fn:
            raise CommandError(f"ERR Error compiling {what}: {_text(message)}")
        return fn

    def exists(self, sha: bytes) -> bool:
        return sha.decode(errors="replace").lower() in self.scripts

    def flush(self) -> None:
        self.scripts.clear()
        self.scripts_bytes = 0
        self.readonly_scripts.clear()
        self._collect()

    def memory_used(self) -> int:
        """Bytes the Lua state holds now (its scripts, libraries and their data), as lupa counts them."""
        return int(self.lua.get_memory_used())

    # -- running ------------------------------------------------------------------------

    def run(self, sha: str, keys: list[bytes], argv: list[bytes], *, readonly: bool) -> Any:
        """Run a loaded script; its reply (an error reply as a CommandError *value*), or raise.

        Raises CommandError for an error the script raised (its writes stand, as
        in Redis), ScriptKilledByUser after SCRIPT KILL (it wrote nothing) and
        ScriptKilled past the hard time limit, the memory cap or on SHUTDOWN
        NOSAVE (the caller undoes its writes).
        """
        fn = self.scripts.get(sha)
        if not fn:
            raise CommandError(NOSCRIPT)
        self.kind = "eval"
        return self._run_lua(self._run, fn, sha, keys, argv, readonly or sha in self.readonly_scripts)

    def call_function(self, name: str, fn: Any, keys: list[bytes], argv: list[bytes], *, readonly: bool) -> Any:
        """Run a registered function (functions.py), as `run` runs a script; errors name the function."""
        self.kind = "function"
        return self._run_lua(self._call_function, fn, name, keys, argv, readonly)

    def load_library(self, src: bytes,
                     limit_ms: int | None = None) -> list[tuple[bytes, Any, bytes | None, list[bytes]]]:
        """Compile a library's Lua source and run its top-level code: what it registered,
        [(name, function, description or None, [flags])], or Redis 7.0's error.  Its code may run
        `limit_ms` (by default 500 ms, as Redis 7.0 allows, or the hard limit if lower; 0: none)."""
        chunk = self._compile(src, b"@user_function", "function")
        if self.running:
            raise CommandError("ERR a script is already running")
        self.running = True
        try:
            if limit_ms is None:
                limit_ms = min(self.kill_after_ms or LOAD_TIMEOUT_MS, LOAD_TIMEOUT_MS)
            ok, res = self._load_library(chunk, limit_ms / 1000 if limit_ms else -1)
        except lua51.LuaMemoryError:
            self._collect()
            raise CommandError("ERR Error registering functions: not enough memory") from None
        finally:
            self.running = False
        if not ok and res == b"KILL":
            raise CommandError("ERR Error registering functions: ERR FUNCTION LOAD timeout")
        if not ok:
            err = res[b"err"] if lua51.lua_type(res) == "table" else res
            raise CommandError(f"ERR Error registering functions: {_text(err) if type(err) is bytes else err}")
        out = []
        for i in range(1, len(res) + 1):
            row = res[i]
            desc, flags = row[3], row[4]
            out.append((row[1], row[2], desc if type(desc) is bytes else None,
                        [flags[j] for j in range(1, len(flags) + 1)]))
        return out

    def _run_lua(self, runner: Any, fn: Any, ident: str, keys: list[bytes], argv: list[bytes],
                 readonly: bool) -> Any:
        if self.running:  # (EVAL and FCALL are flagged noscript, so this is a bug elsewhere)
            raise CommandError("ERR a script is already running")
        sha = ident
        self._readonly = readonly
        self._resp = 2
        self.seen = 0
        self.running = True
        self.name = ident
        self.wrote = False
        self.started = time.monotonic()
        self._served = False
        kill_after = self.kill_after_ms / 1000 if self.kill_after_ms else -1
        serve_after = self.busy_after_ms / 1000 if self.host is not None else -1
        try:
            ok, res = runner(fn, kill_after, serve_after, (self.max_memory - _SERVE_ROOM) / 1024, len(keys),
                             *keys, *argv)
        except lua51.LuaMemoryError:
            self._collect()
            raise ScriptKilled(f"ERR Script used more memory than ATLAS scripts may ({self.max_memory} bytes) "
                               f"script: {sha}") from None
        finally:
            self.running = False
            if self._served:
                self._served = False
                if self.host is not None:
                    self.host.finish(self)
        if ok:
            t = type(res)
            return res if t is bytes or t is int else self._from_lua(res, top=True)
        if res == b"USER":
            _, source, line = self._kill_info()
            where = f", on {_text(source)}:{int(line)}." if type(source) is bytes else ""
            raise ScriptKilledByUser(f"ERR Script killed by user with SCRIPT KILL... script: {sha}{where}")
        if res == b"SHUTDOWN":
            raise ScriptKilled(f"ERR Script killed by SHUTDOWN NOSAVE script: {sha}")
        if res == b"KILL":
            raise ScriptKilled(f"ERR Script killed: it ran longer than atlas.script_kill_after_ms "
                               f"({self.kill_after_ms} ms) script: {sha}")
        if type(res) is bytes:
            # Only a memory error skips the error handler (which makes every other error a table).
            self._collect()
            raise ScriptKilled(f"ERR Script used more memory than ATLAS scripts may ({self.max_memory} bytes) "
                               f"script: {sha}")
        # (an error one of its calls made is counted already: the connection must not count it again)
        counted = lua51.lua_type(res) == "table" and res[_COUNTED] is True
        raise (cmdstats.CountedError if counted else CommandError)(_raised_text(res, sha))

    def _serve(self) -> bytes | None:
        """The hook's call past busy-reply-threshold: let the host serve others; its verdict."""
        host = self.host
        if host is None:
            return None
        self._served = True
        try:
            return host.serve(self)
        except Exception as e:  # (raising into the hook would surface as the script's own error)
            from helios_core.observability.logging import get_logger

            get_logger("atlasd").opt(exception=e).error("serving clients while a script is busy failed")
            return None

    def _collect(self) -> None:
        try:
            self._gc()
        except lua51.LuaError:
            pass

    def _call_raise(self, *args: Any) -> Any:
        """redis.call: the reply as a Lua value; an error is raised (the script's handler unwraps it)."""
        ok, value = self._run_command(args)
        if not ok:
            raise _CallError(value)
        return value

    def _call(self, *args: Any) -> Any:
        """redis.pcall: the reply as a Lua value, an error as an {err=...} table."""
        return self._run_command(args)[1]

    def _setresp(self, *args: Any) -> None:
        """redis.setresp(2|3): the running script's protocol from now on.  The argument is read as
        Redis reads it (lua_tonumber, truncated: '0x3' and 3.7 are 3; what is no number is 0)."""
        if len(args) != 1:
            raise _CallError(self._err("ERR redis.setresp() requires one argument."))
        n = self._tonumber(args[0])
        resp = int(n) if type(n) in (int, float) and math.isfinite(n) else 0
        if resp != 2 and resp != 3:
            raise _CallError(self._err("ERR RESP version must be 2 or 3."))
        self._resp = resp

    def _sha1hex(self, *args: Any) -> bytes:
        """redis.sha1hex(s): a string as it is, a number as Lua prints it (%.14g), anything else as
        the empty string (Redis's lua_tolstring gives it no bytes)."""
        if len(args) != 1:
            raise _CallError(self._err("ERR wrong number of arguments"))
        s = args[0]
        t = type(s)
        data = s if t is bytes else b"%.14g" % s if (t is int or t is float) else b""
        return _sha1(data)

    def _unwrap(self, exc: Any) -> tuple[Any, bool]:
        """The Lua error value for a Python exception raised through Lua, and whether it still
        needs the script's line in front (a library error, as Lua's own C functions raise them)."""
        if isinstance(exc, _CallError):
            return exc.table, False
        if isinstance(exc, LibError):
            return str(exc).encode(), True
        return self._err(f"ERR internal error in a script call: {type(exc).__name__}: {exc}"), False

    def _run_command(self, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """One command a script calls: (True, reply as a Lua value) or (False, {err=...})."""
        if not args:
            return False, self._err("ERR Please specify at least one argument for this redis lib call")
        argv = list(args)
        for a in args:
            if type(a) is not bytes:  # (Lua numbers: converted here, off the path of plain strings)
                for i, a in enumerate(args):
                    t = type(a)
                    if t is bytes:
                        continue
                    if t is int:
                        argv[i] = b"%d" % a if -(1 << 53) <= a <= (1 << 53) else b"%.17g" % a
                    elif t is float:
                        argv[i] = b"%.17g" % a
                    else:
                        return False, self._err("ERR Lua redis lib command arguments must be strings or integers")
                break
        name = argv[0]
        checked = self._checked.get(name)
        if checked is None:
            checked = self._check(name)
        cmd, refused_rw, refused_ro = checked
        # A refused or failed call's error counts in INFO errorstats here, as Redis counts it (the
        # engine's reject and execute count it), whether or not the script then returns it.
        if cmd is None:
            return False, self._refused(argv, "ERR Unknown Redis command called from script")
        n = len(argv)
        if n != cmd.arity and (cmd.arity > 0 or n < -cmd.arity):
            return False, self._refused(argv, "ERR Wrong number of args calling Redis command from script")
        subs = BY_CONTAINER.get(cmd.name) if n > 1 else None
        if subs is not None:
            # Redis 7.0's lookup finds the subcommand: an unknown one is an unknown command, and
            # its own arity is checked, both before the noscript refusal (SCRIPT FLUSH's); its own
            # flags decide as a command's do (CONFIG HELP may run in a script, CONFIG GET not).
            found = find_sub(subs, argv[1])
            if found is None:
                return False, self._refused(argv, "ERR Unknown Redis command called from script")
            full, arity = found
            if n != arity and (arity > 0 or n < -arity):
                return False, self._refused(argv, "ERR Wrong number of args calling Redis command from script")
            refused = _sub_refused(cmd, sub_flags(full), self._readonly)
        else:
            refused = refused_ro if self._readonly else refused_rw
        if refused:
            return False, self._refused(argv, refused)
        if cmd.is_write or (subs is not None and "write" in sub_flags(full)):
            self.wrote = True  # (as Redis marks it, before the call: a write that fails counts too)
        try:
            reply = self._execute(argv)
        except CommandError as e:
            return False, self._counted_err(_error_table_text(str(e)))
        except HeliosError as e:
            return False, self._counted_err(f"ERR {e}")
        finally:
            seq = self._pending_seq()
            if seq > self.seen:
                self.seen = seq
        if self._resp == 3:
            value, _ = self._parse_resp3(encode(reply, True), 0)
            return True, value
        t = type(reply)
        return True, reply if t is bytes or t is int else self._to_lua(reply)

    def _check(self, name: bytes) -> tuple[Command | None, str | None, str | None]:
        """(the command, why a script may not call it, why a read-only one may not), remembered by
        name as sent (bounded: scripts may spell names in any case)."""
        cmd = TABLE.get(name)
        checked = (cmd, _refused(cmd, False), _refused(cmd, True)) if cmd is not None else (None, None, None)
        if len(self._checked) < 512:
            self._checked[name] = checked
        return checked

    def _err(self, text: str) -> Any:
        return self._new_table({b"err": text.encode()})

    def _counted_err(self, text: str) -> Any:
        """The {err=} table of an error counted already, marked as Redis marks it (a script sees the
        mark too: cjson.encode(redis.pcall(...)) shows it in Redis)."""
        table = self._err(text)
        table[_COUNTED] = True
        return table

    def _refused(self, argv: list[bytes], text: str) -> Any:
        self._reject(argv, text)
        return self._counted_err(text)

    # -- conversions ------------------------------------------------------------------------

    def _to_lua(self, reply: Any) -> Any:
        """A command's reply as Lua sees it (Redis's RESP2 -> Lua rules)."""
        t = type(reply)
        if t is bytes or t is int:
            return reply
        if reply is None:
            return False
        if t is Simple:
            return self._new_table({b"ok": reply.encode()})
        if t is list:
            return self._new_table([self._to_lua(x) for x in reply])
        # Everything else (scores, maps, sets, nested errors, ...) the way a RESP2 client reads it.
        value, _ = _parse_resp2(encode(reply, False), 0)
        return self._from_parsed(value)

    def _parse_resp3(self, data: bytes, i: int) -> tuple[Any, int]:
        """One RESP3 reply from data[i:] as a Lua value, by Redis 7.0's RESP3 -> Lua rules."""
        end = data.index(b"\r\n", i)
        kind, rest = data[i:i + 1], data[i + 1:end]
        i = end + 2
        if kind in (b"$", b"="):
            n = int(rest)
            if n < 0:
                return None, i
            body = data[i:i + n]
            if kind == b"$":
                return body, i + n + 2
            verbatim = self._new_table({b"format": body[:3], b"string": body[4:]})
            return self._new_table({b"verbatim_string": verbatim}), i + n + 2
        if kind == b":":
            return int(rest), i
        if kind == b"+":
            return self._new_table({b"ok": rest}), i
        if kind == b"-":
            return self._err(_error_table_text(rest.decode("utf-8", "replace"))), i
        if kind == b"_":
            return None, i
        if kind == b"#":
            return rest == b"t", i
        if kind == b",":
            return self._new_table({b"double": float(rest)}), i
        if kind == b"(":
            return self._new_table({b"big_number": rest}), i
        if kind in (b"*", b"~", b"%", b">"):
            n = int(rest)
            if n < 0:
                return None, i
            items = []
            for _ in range(2 * n if kind == b"%" else n):
                item, i = self._parse_resp3(data, i)
                items.append(item)
            if kind == b"%":
                pairs = dict(zip(items[::2], items[1::2], strict=True))
                return self._new_table({b"map": self._new_table(pairs)}), i
            if kind == b"~":
                return self._new_table({b"set": self._new_table(dict.fromkeys(items, True))}), i
            return self._new_table(items), i
        raise ValueError(f"unexpected reply {kind!r}")

    def _from_parsed(self, v: Any) -> Any:
        if type(v) is list:
            return self._new_table([self._from_parsed(x) for x in v])
        if type(v) is Simple:
            return self._new_table({b"ok": v.encode()})
        if type(v) is CommandError:
            return self._err(_error_table_text(str(v)))
        return v

    def _from_lua(self, v: Any, top: bool = False) -> Any:
        """A script's value as a reply (Redis's Lua -> RESP rules); an {err=} is a CommandError value."""
        t = type(v)
        if t is bytes or t is int:
            return v
        if t is float:
            return int(v) if math.isfinite(v) else 0
        if t is bool:
            if self._resp == 3:
                return v  # a RESP3 boolean (:1 / :0 to a RESP2 client)
            return 1 if v else None
        if v is None or lua51.lua_type(v) != "table":
            return None
        err = v[b"err"]
        if type(err) is bytes:
            if v[_COUNTED] is True:
                return cmdstats.CountedError(_text(err))
            self._count_error(_text(err))  # (each error in the reply counts, as nested ones do in Redis)
            return cmdstats.CountedError(_text(err))
        ok = v[b"ok"]
        if type(ok) is bytes:
            return Simple(_text(ok))
        typed = self._typed_reply(v)
        if typed is not None:
            return typed
        out = []
        i = 1
        while True:
            item = v[i]
            if item is None:
                break
            out.append(self._from_lua(item))
            i += 1
        return out


    def _typed_reply(self, v: Any) -> Any:
        """A returned {double=}, {big_number=}, {verbatim_string=}, {map=} or {set=} table as its
        reply (checked in Redis's order), else None."""
        double = v[b"double"]
        if type(double) in (int, float):
            return float(double)
        big = v[b"big_number"]
        if type(big) is bytes:
            return BigNumber(big.replace(b"\r", b" ").replace(b"\n", b" "))
        verbatim = v[b"verbatim_string"]
        if verbatim is not None and lua51.lua_type(verbatim) == "table":
            fmt, text = verbatim[b"format"], verbatim[b"string"]
            if type(fmt) is bytes and type(text) is bytes:
                return Verbatim(text, fmt)
        mapping = v[b"map"]
        if mapping is not None and lua51.lua_type(mapping) == "table":
            out: dict[Any, Any] = {}
            for key, value in mapping.items():
                k = self._from_lua(key)
                out[tuple(k) if type(k) is list else k] = self._from_lua(value)
            return out
        members = v[b"set"]
        if members is not None and lua51.lua_type(members) == "table":
            return OrderedSet(self._from_lua(key) for key in members.keys())
        return None


def _refused(cmd: Command, readonly: bool) -> str | None:
    # (SCRIPT and FUNCTION have no flags in Redis 7.0: their subcommands are the noscript ones.)
    # A blocking command is not refused for being one: from a script it runs as its non-blocking
    # form (BLMPOP on an empty list answers nil at once), as in MULTI.  Redis 7.0 flags BLPOP,
    # BRPOP, BLMOVE, BRPOPLPUSH and BZPOPMIN/MAX `noscript`, and refuses them for that.
    if (cmd.name in ("script", "function") or "noscript" in cmd.flags
            or cmd.conn & {"multi_control", "no_multi"}):
        return "ERR This Redis command is not allowed from script"
    if readonly and cmd.is_write:
        return "ERR Write commands are not allowed from read-only scripts."
    return None


def _sub_refused(cmd: Command, flags: tuple[str, ...], readonly: bool) -> str | None:
    """_refused for a container's call, by its subcommand's flags, as Redis 7.0's scriptCall judges it."""
    if "noscript" in flags or cmd.conn & {"multi_control", "no_multi"}:
        return "ERR This Redis command is not allowed from script"
    if readonly and "write" in flags:
        return "ERR Write commands are not allowed from read-only scripts."
    return None


def _error_table_text(text: str) -> str:
    """What redis.pcall's {err=} holds for an error reply (Redis's luaPushErrorBuff)."""
    code, sep, msg = text.partition(" ")
    if not sep:
        return "ERR " + text.rstrip("\r\n")
    return f"{code} {msg.rstrip(chr(13) + chr(10))}"


def _raised_text(res: Any, sha: str) -> str:
    """A raised error's reply text: "<err> script: <sha>, on @user_script:<line>."."""
    if lua51.lua_type(res) != "table":
        return f"ERR {_text(res) if type(res) is bytes else res} script: {sha}"
    err = res[b"err"]
    text = _text(err) if type(err) is bytes else "ERR unknown error"
    source, line = res[b"source"], res[b"line"]
    if type(source) is bytes and line is not None:
        return f"{text} script: {sha}, on {_text(source)}:{int(line)}."
    return f"{text} script: {sha}"


def _text(raw: Any) -> str:
    s = raw.decode("utf-8", "replace") if type(raw) is bytes else str(raw)
    return s.replace("\r", " ").replace("\n", " ") if ("\r" in s or "\n" in s) else s


def _shebang(body: bytes) -> tuple[bytes, bool]:
    """Redis 7's `#!lua flags=...` first line: (the source Lua compiles, no-writes?)."""
    if not body.startswith(b"#!"):
        return body, False
    line, nl, rest = body.partition(b"\n")
    parts = line[2:].split()
    if not parts or parts[0] != b"lua":
        raise CommandError(f"ERR Unexpected engine in script shebang: {_text(line[2:])}")
    no_writes = False
    for p in parts[1:]:
        if p.startswith(b"flags="):
            for flag in p[6:].split(b","):
                if flag == b"no-writes":
                    no_writes = True
                elif flag not in (b"", b"allow-oom", b"allow-stale", b"no-cluster", b"allow-cross-slot-keys"):
                    raise CommandError(f"ERR Unexpected flag in script shebang: {_text(flag)}")
        else:
            raise CommandError(f"ERR Unknown lua shebang option: {_text(p)}")
    return nl + rest, no_writes  # the first line kept empty: error lines still count from 1


def _sha1(s: bytes) -> bytes:
    return hashlib.sha1(s).hexdigest().encode()


def _log(level: Any, *parts: Any) -> None:
    """redis.log: scripts' messages go to ATLAS's log."""
    from helios_core.observability.logging import get_logger

    get_logger("atlas.script").info(" ".join(_text(p) for p in parts), level=level)


def _parse_resp2(data: bytes, i: int) -> tuple[Any, int]:
    """One RESP2 reply from data[i:]: bytes, int, False for nil, Simple, CommandError, list."""
    end = data.index(b"\r\n", i)
    kind, rest = data[i:i + 1], data[i + 1:end]
    i = end + 2
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return False, i
        return data[i:i + n], i + n + 2
    if kind == b":":
        return int(rest), i
    if kind == b"+":
        return Simple(rest.decode("utf-8", "replace")), i
    if kind == b"-":
        return CommandError(rest.decode("utf-8", "replace")), i
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return False, i
        items = []
        for _ in range(n):
            item, i = _parse_resp2(data, i)
            items.append(item)
        return items, i
    raise ValueError(f"unexpected reply {kind!r}")
