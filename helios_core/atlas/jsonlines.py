"""JSON lines: atlasd's second wire protocol, in the AOF's own record format.

A connection whose first byte is `{` speaks this instead of RESP (the RESP
server sniffs it; see `Connection.data_received`).  Each request is one JSON
object on one line; each reply is one JSON object on one line, in order:

    {"cmd":"SET","key":"foo","value":"bar","ttl":0}    ->  {"ok":"OK"}
    {"cmd":"GET","key":"foo"}                           ->  {"ok":"bar"}
    {"cmd":"ZADD","args":["z","1","m"]}                 ->  {"ok":1}
    {"cmd":"INCR","key":"foo"}                          ->  {"error":"ERR value is not an integer or out of range"}

A request becomes an argv for the one command table: the command name, then
`key`, then `value`, then `args`, each present only if given.  On top of that,
the AOF's record fields mean what they mean there:

  SET      `exp` (absolute ms) -> PXAT exp; `ttl` (seconds, 0: none) -> PX ttl*1000
  EXPIRE / PEXPIRE with `exp` or `ttl` and no `args` -> PEXPIREAT / PEXPIRE (ms)
  ZADD     `members` [[score, member], ...];  ZREM `members` [member, ...]
  HSET     `fields` [[field, value], ...];  HDEL `fields` [field, ...]
  SADD, SREM  `members` [member, ...]
  MULTI    with `ops` (a list of requests): run them as one atomic batch, like
           MULTI ... EXEC; without `ops`, MULTI is the ordinary command
  any      `seq` and `crc` (an AOF line pasted as is) and unknown fields are ignored

Bytes that are not UTF-8 travel as base64 under a `_b64` twin name (`key_b64`,
`value_b64`, `members_b64`, `args_b64`), or as `{"b64": "..."}` in place of
one argument.  Numbers are accepted where a string is and sent as their text.

Replies: `{"ok": R}` where bytes are UTF-8 text or `{"b64": "..."}`, a status
is its text, a float score is a number ("inf"/"-inf" as text), nil is null, an
array is a list, a map an object, an error inside EXEC `{"error": "..."}`;
or `{"error": "<Redis error text>"}`.  Pub/sub messages arrive as
`{"push": [...]}`.  The durability rule is RESP's: a reply that may reveal a
write leaves only once that write is durable.

Malformed input costs one error line, never the connection: lines are
self-delimiting, so the stream resynchronises at the next newline.  Only a
line longer than the limit closes the connection (after an error line and
the replies to the lines before it), like Redis's oversized inline request:
the server will not buffer it.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import orjson

from helios_core.atlas.commands.table import Simple
from helios_core.atlas.commands.zsets import Pairs
from helios_core.atlas.resp import (
    MAX_INLINE,
    MAX_MULTIBULK,
    MAX_QUERY_BUFFER,
    NULL_ARRAY,
    UNAUTH_MAX_BULK,
    UNAUTH_MAX_MULTIBULK,
    Push,
    Replies,
)

__all__ = ["JsonLinesParser", "JsonBad", "JsonBatch", "encode_json", "encode_json_error"]

_E_BIG_LINE = "ERR Protocol error: too big JSON line"


class JsonBad(list):
    """A request line that could not become a command; the connection replies `error`."""

    def __init__(self, error: str) -> None:
        super().__init__([b"json"])
        self.error = error


class JsonBatch(list):
    """`{"cmd":"MULTI","ops":[...]}`: argvs to run as one atomic batch."""

    def __init__(self, ops: list[list[bytes]]) -> None:
        super().__init__([b"multi"])
        self.ops = ops


class _Bad(Exception):
    pass


class JsonLinesParser:
    """Incremental JSON-lines request parser with RespParser's interface (`feed`, `error`, limits)."""

    __slots__ = ("pending", "pending_len", "max_bulk", "max_count", "max_line", "error", "unauth")

    def __init__(self, max_bulk: int = 512 * 1024 * 1024) -> None:
        self.pending: list[bytes] = []  # the start of a line whose newline has not come yet
        self.pending_len = 0
        self.error: str | None = None
        self.max_bulk = max_bulk
        self.max_count = MAX_MULTIBULK
        self.max_line = 0
        self.unauth = False
        self.set_unauthenticated(False, max_bulk)

    def set_unauthenticated(self, on: bool, max_bulk: int) -> None:
        """Before AUTH a line is at most an inline request's size, with RESP's unauthenticated limits,
        and lines come out one at a time: the limits change once AUTH has run."""
        self.unauth = on
        self.max_count = UNAUTH_MAX_MULTIBULK if on else MAX_MULTIBULK
        self.max_bulk = min(max_bulk, UNAUTH_MAX_BULK) if on else max_bulk
        # base64 makes a value 4/3 as long; JSON escapes can do worse, the query buffer caps it all.
        self.max_line = MAX_INLINE if on else min(MAX_QUERY_BUFFER, 2 * max_bulk + MAX_INLINE)

    def buffered(self) -> int:
        return self.pending_len

    def feed(self, data: bytes) -> list[list[bytes]]:
        if self.error is not None:
            return []
        if self.unauth:
            return self._feed_one(data)
        if not data and self.pending:  # asked again for what _feed_one held back
            data = b"".join(self.pending)
            self.pending, self.pending_len = [], 0
        nl = data.rfind(b"\n")
        if nl < 0:
            self.pending.append(data)
            self.pending_len += len(data)
            if self.pending_len > self.max_line:
                self.error = _E_BIG_LINE
                self.pending, self.pending_len = [], 0
            return []
        if self.pending:
            self.pending.append(data)
            data = b"".join(self.pending)
            nl += self.pending_len
            self.pending, self.pending_len = [], 0
        rest = data[nl + 1:]
        if rest:
            self.pending, self.pending_len = [rest], len(rest)
            if len(rest) > self.max_line:
                self.error = _E_BIG_LINE
                self.pending, self.pending_len = [], 0
        out: list[list[bytes]] = []
        for line in data[:nl].split(b"\n"):
            if len(line) > self.max_line:  # as if its newline had come in a later read
                self.error = _E_BIG_LINE
                self.pending, self.pending_len = [], 0
                break
            if line.strip():
                out.append(self.parse_line(line))
        return out

    def _feed_one(self, data: bytes) -> list[list[bytes]]:
        """At most one request; the rest stays buffered until the caller asks again (`feed(b"")`)."""
        buf = b"".join(self.pending) + data if self.pending else data
        while True:
            nl = buf.find(b"\n")
            line = buf if nl < 0 else buf[:nl]
            if len(line) > self.max_line:
                self.error = _E_BIG_LINE
                self.pending, self.pending_len = [], 0
                return []
            if nl < 0:
                self.pending, self.pending_len = ([buf] if buf else []), len(buf)
                return []
            buf = buf[nl + 1:]
            if line.strip():
                self.pending, self.pending_len = ([buf] if buf else []), len(buf)
                return [self.parse_line(line)]

    def parse_line(self, line: bytes) -> list[bytes]:
        """One request line as an argv, a JsonBatch or a JsonBad."""
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            return JsonBad(f"ERR Protocol error: invalid JSON ({e})")
        try:
            if type(obj) is dict and obj.get("ops") is not None and str(obj.get("cmd", "")).upper() == "MULTI":
                ops = obj["ops"]
                if type(ops) is not list:
                    raise _Bad("'ops' must be a list of requests")
                return JsonBatch([self._checked(request_argv(op)) for op in ops])
            return self._checked(request_argv(obj))
        except _Bad as e:
            return JsonBad(f"ERR invalid JSON request: {e}")

    def _checked(self, argv: list[bytes]) -> list[bytes]:
        if len(argv) > self.max_count:
            raise _Bad(f"more than {self.max_count} arguments")
        limit = self.max_bulk
        for a in argv:
            if len(a) > limit:
                raise _Bad(f"an argument of {len(a)} bytes is over the limit of {limit}")
        return argv


# -- requests -------------------------------------------------------------------------

def _arg(v: Any, what: str) -> bytes:
    t = type(v)
    if t is str:
        return v.encode()  # type: ignore[no-any-return]
    if t is int:
        return b"%d" % v
    if t is float:
        if not math.isfinite(v):  # orjson never yields these; kept for callers passing Python objects
            return b"inf" if v > 0 else (b"-inf" if v < 0 else b"nan")
        return repr(v).encode()
    if t is dict and len(v) == 1 and type(v.get("b64")) is str:
        return _b64(v["b64"], what)
    raise _Bad(f"{what} must be a string, a number or {{\"b64\": ...}}, not {_json_type(v)}")


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad(f"{what} is not valid base64") from None


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}.get(type(v), type(v).__name__)


def _field(obj: dict, name: str) -> bytes | None:
    """`name` as bytes, from `name` or its base64 twin `name_b64`; None when neither is there."""
    if name in obj:
        return _arg(obj[name], f"'{name}'")
    twin = name + "_b64"
    if twin in obj:
        v = obj[twin]
        if type(v) is not str:
            raise _Bad(f"'{twin}' must be a base64 string")
        return _b64(v, f"'{twin}'")
    return None


def _list(obj: dict, name: str) -> list[bytes] | None:
    if name in obj:
        items = obj[name]
        if type(items) is not list:
            raise _Bad(f"'{name}' must be a list")
        return [_arg(v, f"an item of '{name}'") for v in items]
    twin = name + "_b64"
    if twin in obj:
        items = obj[twin]
        if type(items) is not list or not all(type(v) is str for v in items):
            raise _Bad(f"'{twin}' must be a list of base64 strings")
        return [_b64(v, f"an item of '{twin}'") for v in items]
    return None


def _ms(ttl: Any) -> bytes:
    if type(ttl) not in (int, float):
        raise _Bad(f"'ttl' must be a number of seconds, not {_json_type(ttl)}")
    ms = ttl * 1000
    if not math.isfinite(ms):  # 1e308 seconds: no integer of ms (found by tests/fuzz)
        raise _Bad(f"'ttl' {ttl!r} is out of range")
    return b"%d" % int(ms)


def _exp(obj: dict) -> bytes:
    exp = obj["exp"]
    if type(exp) is not int:
        raise _Bad(f"'exp' must be an integer (ms since the epoch), not {_json_type(exp)}")
    return b"%d" % exp


def _pairs(obj: dict, name: str, what: tuple[str, str], *, b64_first: bool) -> list[bytes]:
    """`name` (or `name_b64`: base64 items) as [a, b] pairs, flattened: ZADD's [score, member],
    HSET's [field, value].  A score is never base64 (`b64_first` False)."""
    b64 = name not in obj
    key = name + "_b64" if b64 else name
    pairs = obj[key]
    if type(pairs) is not list or not all(type(p) is list and len(p) == 2 for p in pairs):
        raise _Bad(f"'{name}' must be a list of [{what[0]}, {what[1]}] pairs")
    out = []
    for pair in pairs:
        for i, item in enumerate(pair):
            if b64 and (i == 1 or b64_first):
                if type(item) is not str:
                    raise _Bad(f"a {what[i]} in '{key}' must be a base64 string")
                out.append(_b64(item, f"a {what[i]} in '{key}'"))
            else:
                out.append(_arg(item, f"a {what[i]}"))
    return out


def request_argv(obj: Any) -> list[bytes]:
    """The argv a JSON request stands for (see the module docstring); raises _Bad."""
    if type(obj) is not dict:
        raise _Bad(f"a request must be a JSON object, not {_json_type(obj)}")
    cmd = obj.get("cmd")
    if type(cmd) is not str or not cmd:
        raise _Bad("a request needs \"cmd\", the command name")
    name = cmd.upper()
    args = _list(obj, "args")
    key = _field(obj, "key")
    if args is None and name in ("EXPIRE", "PEXPIRE") and key is not None and ("exp" in obj or "ttl" in obj):
        if obj.get("exp") is not None:
            return [b"PEXPIREAT", key, _exp(obj)]
        return [b"PEXPIRE", key, _ms(obj["ttl"])]
    argv = [cmd.encode()]
    if key is not None:
        argv.append(key)
    value = _field(obj, "value")
    if value is not None:
        argv.append(value)
    if args is not None:
        argv += args
        return argv
    if name == "SET":
        if obj.get("exp") is not None:
            argv += [b"PXAT", _exp(obj)]
        elif obj.get("ttl") not in (None, 0):
            argv += [b"PX", _ms(obj["ttl"])]
    elif name == "ZADD" and ("members" in obj or "members_b64" in obj):
        argv += _pairs(obj, "members", ("score", "member"), b64_first=False)
    elif name in ("ZREM", "SADD", "SREM"):
        argv += _list(obj, "members") or []
    elif name == "HDEL":
        argv += _list(obj, "fields") or []
    elif name == "HSET" and ("fields" in obj or "fields_b64" in obj):
        argv += _pairs(obj, "fields", ("field", "value"), b64_first=True)
    elif name == "SELECT" and "db" in obj:  # (the AOF's database records, as requests)
        argv.append(_arg(obj["db"], "db"))
    elif name == "SWAPDB" and "db1" in obj and "db2" in obj:
        argv += [_arg(obj["db1"], "db1"), _arg(obj["db2"], "db2")]
    return argv


# -- replies ---------------------------------------------------------------------------

def _jsonable(r: Any) -> Any:
    t = type(r)
    if t is bytes:
        try:
            return r.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(r).decode()}
    if t is int or r is None or t is bool:
        return r
    if t is Simple or t is str:
        return str(r)
    if t is float:
        return r if math.isfinite(r) else ("inf" if r > 0 else "-inf")
    if t is Pairs:
        return [[_jsonable(m), _jsonable(s)] for m, s in r]
    if t in (list, tuple, Push, Replies) or isinstance(r, list | tuple | set | frozenset):
        return [_jsonable(x) for x in r]
    if isinstance(r, dict):
        if all(type(k) in (bytes, str) for k in r):
            return {(k.decode(errors="replace") if type(k) is bytes else k): _jsonable(v) for k, v in r.items()}
        return [[_jsonable(k), _jsonable(v)] for k, v in r.items()]
    if r is NULL_ARRAY:
        return None
    if isinstance(r, BaseException):
        return {"error": _error_text(r)}
    if isinstance(r, bytearray | memoryview):
        return _jsonable(bytes(r))
    if isinstance(r, int):
        return int(r)
    if isinstance(r, float):
        return _jsonable(float(r))
    raise TypeError(f"cannot encode a {type(r).__name__} reply as JSON")


def _error_text(exc: BaseException | str) -> str:
    return str(exc) or "ERR"


def encode_json(reply: Any, resp3: bool = False) -> bytes:
    """The reply line(s) for `reply` (several for `Replies`, e.g. SUBSCRIBE a b)."""
    t = type(reply)
    if t is Replies:
        return b"".join(encode_json(r) for r in reply)
    if t is Push:
        return orjson.dumps({"push": _jsonable(reply)}) + b"\n"
    return orjson.dumps({"ok": _jsonable(reply)}) + b"\n"


def encode_json_error(exc: BaseException | str) -> bytes:
    return orjson.dumps({"error": _error_text(exc)}) + b"\n"
