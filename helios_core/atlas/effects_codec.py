"""The AOF record codec of effects: one JSON object per line, checksummed.

`encode_record` writes a batch of effects (the vocabulary in `effects`) as one
line; `decode_line` reads one back, accepting the original design's lines
(no seq, crc or absolute expiry) too.  Kept apart from `effects`, which
applies and undoes them: the codec is what the AOF reader, writer, `helios
aof-check` and the fuzz tests exercise.
"""

from __future__ import annotations

import base64
import math
import zlib
from typing import Any

import orjson

__all__ = ["Effect", "LIST_CMDS", "LIBRARY_CMDS", "DB_CMDS", "KEYLESS_CMDS", "KNOWN_CMDS", "RecordError",
           "encode_record", "decode_line"]

# An effect is a plain tuple, ("SET", key, value, exp) and so on (listed in `effects`).
Effect = tuple
LIST_CMDS = frozenset({"LPUSH", "RPUSH", "LPOP", "RPOP", "LSET", "LINSERT", "LREM", "LTRIM"})
STREAM_CMDS = frozenset({"XADD", "XDEL", "XTRIM", "XSETID", "XGROUP", "XGDEL", "XCONSUMER", "XCDEL", "XNACK",
                         "XACK", "XNODES"})
# The function libraries (FUNCTION LOAD/DELETE/FLUSH/RESTORE): server state, no key.
LIBRARY_CMDS = frozenset({"FLOAD", "FDEL", "FFLUSH"})
# Numbered databases (databases.py): {"cmd":"SELECT","db":N}, {"cmd":"FLUSHDB"}, {"cmd":"SWAPDB","db1":A,"db2":B}.
DB_CMDS = frozenset({"SELECT", "FLUSHDB", "SWAPDB"})
# Effects that name no key.
KEYLESS_CMDS = frozenset({"FLUSHALL"}) | DB_CMDS | LIBRARY_CMDS
# {"cmd":"ENCODING","key":K,"encoding":"hashtable"}: how the hash, set or zset at K is held (effects.py).
ENCODINGS = frozenset({"hashtable", "listpack", "intset", "skiplist"})
KNOWN_CMDS = frozenset({"SET", "DEL", "EXPIRE", "PERSIST", "ZADD", "ZREM", "HSET", "HDEL", "SADD", "SREM",
                        "FLUSHALL", "MULTI", "SETRANGE", "ENCODING"}) | LIST_CMDS | STREAM_CMDS | LIBRARY_CMDS | DB_CMDS


# -- AOF line codec -----------------------------------------------------------------
#
# One JSON object per line.  Bytes fields are written as UTF-8 text when they
# decode, else under a `_b64` twin name.  `crc` (CRC-32 of the line without the
# crc field) is the last field, so a reader strips it by position and checks
# bit flips anywhere in the record.

class RecordError(ValueError):
    """A line that is not a valid AOF record; the message says why."""


def _put_bytes(rec: dict, name: str, value: bytes) -> None:
    try:
        rec[name] = value.decode()
    except UnicodeDecodeError:
        rec[name + "_b64"] = base64.b64encode(value).decode()


def _score_out(score: float) -> float | str:
    return score if math.isfinite(score) else ("inf" if score > 0 else "-inf")


def _effect_to_obj(eff: Effect) -> dict:
    op = eff[0]
    rec: dict[str, Any] = {"cmd": op}
    if op == "FLUSHALL" or op == "FFLUSH" or op == "FLUSHDB":
        return rec
    if op == "SELECT":
        rec["db"] = eff[1]
        return rec
    if op == "SWAPDB":
        rec["db1"], rec["db2"] = eff[1], eff[2]
        return rec
    if op == "FLOAD" or op == "FDEL":
        # The library's whole code (its `#!lua name=` line included): replay registers it again.
        _put_bytes(rec, "name", eff[1])
        if op == "FLOAD":
            _put_bytes(rec, "code", eff[2])
        return rec
    if op == "MULTI":
        rec["ops"] = [_effect_to_obj(e) for e in eff[1]]
        return rec
    _put_bytes(rec, "key", eff[1])
    if op == "SET":
        _put_bytes(rec, "value", eff[2])
        if eff[3] is not None:
            rec["exp"] = eff[3]
    elif op == "EXPIRE":
        rec["exp"] = eff[2]
    elif op == "ZADD":
        try:
            rec["members"] = [[_score_out(s), m.decode()] for s, m in eff[2]]
        except UnicodeDecodeError:
            rec["members_b64"] = [[_score_out(s), base64.b64encode(m).decode()] for s, m in eff[2]]
    elif op in ("ZREM", "SADD", "SREM"):
        _put_list(rec, "members", eff[2])
    elif op == "HDEL":
        _put_list(rec, "fields", eff[2])
    elif op == "LPUSH" or op == "RPUSH":
        _put_list(rec, "items", eff[2])
    elif op == "LPOP" or op == "RPOP":
        rec["count"] = eff[2]
    elif op == "LSET" or op == "LINSERT":
        rec["index"] = eff[2]
        _put_bytes(rec, "value", eff[3])
    elif op == "LREM":
        rec["count"] = eff[2]
        _put_bytes(rec, "value", eff[3])
    elif op == "LTRIM":
        rec["left"], rec["right"] = eff[2], eff[3]
    elif op == "SETRANGE":
        rec["offset"] = eff[2]
        _put_bytes(rec, "value", eff[3])
    elif op == "ENCODING":
        rec["encoding"] = eff[-1]  # (of a live-only 4-tuple, the encoding a restart holds: effects.py)
    elif op in STREAM_CMDS:
        _stream_to_obj(rec, eff)
    elif op == "HSET":
        try:
            rec["fields"] = [[f.decode(), v.decode()] for f, v in eff[2]]
        except UnicodeDecodeError:
            rec["fields_b64"] = [[base64.b64encode(f).decode(), base64.b64encode(v).decode()] for f, v in eff[2]]
    return rec


def _put_list(rec: dict, name: str, items: list[bytes]) -> None:
    """A list of bytes as text, or all of it base64 under the `_b64` twin name."""
    try:
        rec[name] = [m.decode() for m in items]
    except UnicodeDecodeError:
        rec[name + "_b64"] = [base64.b64encode(m).decode() for m in items]


def _sid(sid: tuple[int, int]) -> str:
    return f"{sid[0]}-{sid[1]}"


def _stream_to_obj(rec: dict, eff: Effect) -> None:
    """Stream effects: ids as "ms-seq" text (an id's parts are unsigned 64-bit, beyond JSON's doubles)."""
    op = eff[0]
    if op == "XADD":
        rec["id"] = _sid(eff[2])
        _put_list(rec, "items", eff[3])
    elif op == "XDEL":
        rec["ids"] = [_sid(i) for i in eff[2]]
    elif op == "XTRIM":
        rec["count"] = eff[2]
    elif op == "XSETID":
        rec["id"], rec["added"], rec["maxdel"] = _sid(eff[2]), eff[3], _sid(eff[4])
        return
    elif op == "XNODES":
        # [master, live, total, last, bytes, [field names]] (names as text or base64, like items)
        nodes = []
        for m, live, total, last, nbytes, names in eff[2]:
            row: dict[str, Any] = {"id": _sid(m), "live": live, "total": total, "last": _sid(last), "bytes": nbytes}
            _put_list(row, "names", names)
            nodes.append(row)
        rec["nodes"] = nodes
    else:
        _put_bytes(rec, "group", eff[2])
        if op == "XGROUP":
            rec["id"], rec["read"] = _sid(eff[3]), eff[4]
        elif op == "XCONSUMER" or op == "XCDEL" or op == "XNACK":
            _put_bytes(rec, "consumer", eff[3])
            if op == "XCONSUMER":
                rec["seen"] = eff[4]
            elif op == "XNACK":
                rec["nacks"] = [[_sid(i), t, n] for i, t, n in eff[4]]
        elif op == "XACK":
            rec["ids"] = [_sid(i) for i in eff[3]]


# The bytes a JSON string holds as they are (orjson escapes '"', '\\' and controls; 0x7f it keeps).
_JSON_PLAIN = bytes(b for b in range(0x20, 0x80) if b not in b'"\\')
_ITEMS_FIELD = {"HSET": "fields", "HDEL": "fields", "SADD": "members", "SREM": "members", "LPUSH": "items",
                "RPUSH": "items"}


def encode_record(seq: int, effects: list[Effect]) -> bytes:
    """One AOF line (with trailing newline) holding `effects` atomically."""
    op = effects[0][0] if len(effects) == 1 else ""  # (a record of one effect: the fast paths below)
    if op == "SET":
        # The most common record, built directly: the same fields in the same order
        # as the general path below gives it.
        _, key, value, exp = effects[0]
        if exp is None and not key.translate(None, _JSON_PLAIN) and not value.translate(None, _JSON_PLAIN):
            # Printable ASCII without '"' or '\\': JSON holds it as it is (orjson's very bytes).
            body = b'{"seq":%d,"cmd":"SET","key":"%s","value":"%s"}' % (seq, key, value)
            return b'%s,"crc":%d}\n' % (body[:-1], zlib.crc32(body))
        try:
            rec: dict[str, Any] = {"seq": seq, "cmd": "SET", "key": key.decode(), "value": value.decode()}
        except UnicodeDecodeError:
            pass  # a _b64 field: the general path
        else:
            if exp is not None:
                rec["exp"] = exp
            body = orjson.dumps(rec)
            return b"%s,\"crc\":%d}\n" % (body[:-1], zlib.crc32(body))
    elif op in _ITEMS_FIELD:
        # HSET/SADD/LPUSH and kin, the same way (atlasd's per-type write path): same fields, same order.
        _, key, items = effects[0]
        try:
            if len(items) == 1:  # one field or member, the usual case: no comprehension's frame
                item = items[0]
                one = [[item[0].decode(), item[1].decode()]] if op == "HSET" else [item.decode()]
            else:
                one = ([[f.decode(), v.decode()] for f, v in items] if op == "HSET"
                       else [m.decode() for m in items])
            rec = {"seq": seq, "cmd": op, "key": key.decode(), _ITEMS_FIELD[op]: one}
        except UnicodeDecodeError:
            pass  # a _b64 field: the general path
        else:
            body = orjson.dumps(rec)
            return b"%s,\"crc\":%d}\n" % (body[:-1], zlib.crc32(body))
    obj = _effect_to_obj(effects[0] if len(effects) == 1 else ("MULTI", effects))
    body = orjson.dumps({"seq": seq, **obj})
    return b"%s,\"crc\":%d}\n" % (body[:-1], zlib.crc32(body))


def _get_bytes(rec: dict, name: str, required: bool = True) -> bytes | None:
    v = rec.get(name)
    if isinstance(v, str):
        return v.encode()
    b = rec.get(name + "_b64")
    if isinstance(b, str):
        try:
            return base64.b64decode(b, validate=True)
        except ValueError as e:
            raise RecordError(f"field '{name}_b64' is not valid base64") from e
    if required:
        raise RecordError(f"{rec.get('cmd')} record without '{name}'")
    return None


def _utf8(text: str) -> bytes:
    return text.encode()


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:
        raise RecordError("a member in 'members_b64' is not valid base64") from e


def _get_list(rec: dict, op: str, name: str) -> list[bytes]:
    if name in rec:
        raw, decode = rec[name], _utf8
    elif name + "_b64" in rec:
        raw, decode = rec[name + "_b64"], _b64
    else:
        raise RecordError(f"{op} record without '{name}'")
    if not isinstance(raw, list) or not all(isinstance(m, str) for m in raw):
        raise RecordError(f"{op} '{name}' must be a list of strings")
    return [decode(m) for m in raw]


def _score_in(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise RecordError(f"bad score {v!r}")
    try:
        f = float(v)
    except ValueError as e:
        raise RecordError(f"bad score {v!r}") from e
    if math.isnan(f):
        raise RecordError("score is NaN")
    return f


def _exp_in(rec: dict, now_ms: int) -> int | None:
    exp = rec.get("exp")
    if exp is not None:
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise RecordError(f"field 'exp' must be an integer, got {exp!r}")
        return exp
    ttl = rec.get("ttl")  # the original design's relative seconds; 0 means none
    if ttl is None or ttl == 0:
        return None
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool):
        raise RecordError(f"field 'ttl' must be a number, got {ttl!r}")
    ms = ttl * 1000
    if not math.isfinite(ms) or abs(ms) > 1 << 62:  # (int(inf) raises; no expiry is that far off)
        raise RecordError(f"field 'ttl' is out of range: {ttl!r}")
    return now_ms + int(ms)


def _obj_to_effect(rec: Any, now_ms: int) -> Effect:
    if not isinstance(rec, dict):
        raise RecordError("record is not a JSON object")
    op = rec.get("cmd")
    if not isinstance(op, str):
        raise RecordError("record without 'cmd'")
    op = op.upper()
    if op == "SET":
        return ("SET", _get_bytes(rec, "key"), _get_bytes(rec, "value"), _exp_in(rec, now_ms))
    if op == "DEL":
        return ("DEL", _get_bytes(rec, "key"))
    if op in ("EXPIRE", "PEXPIRE"):
        key = _get_bytes(rec, "key")
        exp = _exp_in(rec, now_ms)
        if exp is None:
            if "exp" not in rec and "ttl" not in rec:
                raise RecordError("EXPIRE record without 'exp' or 'ttl'")
            return ("DEL", key)  # EXPIRE with ttl 0 (or less) deletes, as in Redis
        return ("EXPIRE", key, exp)
    if op == "PERSIST":
        return ("PERSIST", _get_bytes(rec, "key"))
    if op == "ZADD":
        key = _get_bytes(rec, "key")
        if "members" in rec:
            raw = rec["members"]
            decode = _utf8
        elif "members_b64" in rec:
            raw = rec["members_b64"]
            decode = _b64
        else:
            raise RecordError("ZADD record without 'members'")
        if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[1], str)
                                                for p in raw):
            raise RecordError("ZADD 'members' must be a list of [score, member] pairs")
        return ("ZADD", key, [(_score_in(s), decode(m)) for s, m in raw])
    if op in ("ZREM", "SADD", "SREM"):
        return (op, _get_bytes(rec, "key"), _get_list(rec, op, "members"))
    if op == "HDEL":
        return (op, _get_bytes(rec, "key"), _get_list(rec, op, "fields"))
    if op == "HSET":
        key = _get_bytes(rec, "key")
        if "fields" in rec:
            raw, decode = rec["fields"], _utf8
        elif "fields_b64" in rec:
            raw, decode = rec["fields_b64"], _b64
        else:
            raise RecordError("HSET record without 'fields'")
        if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                                and isinstance(p[1], str) for p in raw):
            raise RecordError("HSET 'fields' must be a list of [field, value] pairs")
        return ("HSET", key, [(decode(f), decode(v)) for f, v in raw])
    if op in LIST_CMDS:
        return _list_effect(rec, op)
    if op == "SETRANGE":
        return (op, _get_bytes(rec, "key"), _int_field(rec, op, "offset"), _get_bytes(rec, "value"))
    if op in STREAM_CMDS:
        return _stream_effect(rec, op)
    if op == "FLUSHALL" or op == "FLUSHDB":
        return (op,)
    if op == "ENCODING":
        name = rec.get("encoding")
        if name not in ENCODINGS:
            raise RecordError(f"ENCODING field 'encoding' must be one of {sorted(ENCODINGS)}, got {name!r}")
        return (op, _get_bytes(rec, "key"), name)
    if op == "SELECT":
        return (op, _int_field(rec, op, "db"))
    if op == "SWAPDB":
        return (op, _int_field(rec, op, "db1"), _int_field(rec, op, "db2"))
    if op in LIBRARY_CMDS:
        return _library_effect(rec, op)
    if op == "MULTI":
        ops = rec.get("ops")
        if not isinstance(ops, list):
            raise RecordError("MULTI record without 'ops' list")
        return ("MULTI", [_obj_to_effect(o, now_ms) for o in ops])
    raise RecordError(f"unknown command '{op}'")


def _library_effect(rec: dict, op: str) -> Effect:
    if op == "FFLUSH":
        return (op,)
    name = _get_bytes(rec, "name")
    if not name:
        raise RecordError(f"{op} record with an empty library 'name'")
    if op == "FDEL":
        return (op, name)
    code = _get_bytes(rec, "code")
    if code is None or not code.startswith(b"#!"):
        raise RecordError("FLOAD 'code' must start with a '#!' library metadata line")
    return (op, name, code)


def _int_field(rec: dict, op: str, name: str, lo: int = 0) -> int:
    v = rec.get(name)
    if type(v) is not int or v < lo:
        raise RecordError(f"{op} field '{name}' must be an integer >= {lo}, got {v!r}")
    return v


def _list_effect(rec: dict, op: str) -> Effect:
    key = _get_bytes(rec, "key")
    if op == "LPUSH" or op == "RPUSH":
        return (op, key, _get_list(rec, op, "items"))
    if op == "LPOP" or op == "RPOP":
        return (op, key, _int_field(rec, op, "count"))
    if op == "LSET" or op == "LINSERT":
        return (op, key, _int_field(rec, op, "index"), _get_bytes(rec, "value"))
    if op == "LREM":
        return (op, key, _int_field(rec, op, "count", -(1 << 63)), _get_bytes(rec, "value"))
    return (op, key, _int_field(rec, op, "left"), _int_field(rec, op, "right"))


_U64 = (1 << 64) - 1


def _id_in(v: Any, op: str) -> tuple[int, int]:
    if type(v) is str:
        ms, sep, seq = v.partition("-")
        if sep and ms.isdigit() and seq.isdigit() and int(ms) <= _U64 and int(seq) <= _U64:
            return int(ms), int(seq)
    raise RecordError(f"{op} has a bad stream id {v!r}")


def _ids_in(rec: dict, op: str, name: str) -> list[tuple[int, int]]:
    raw = rec.get(name)
    if not isinstance(raw, list):
        raise RecordError(f"{op} record without '{name}' list")
    return [_id_in(v, op) for v in raw]


def _stream_effect(rec: dict, op: str) -> Effect:
    key = _get_bytes(rec, "key")
    if op == "XADD":
        items = _get_list(rec, op, "items")
        if len(items) % 2:
            raise RecordError("XADD 'items' must hold field/value pairs")
        return (op, key, _id_in(rec.get("id"), op), items)
    if op == "XDEL":
        return (op, key, _ids_in(rec, op, "ids"))
    if op == "XTRIM":
        return (op, key, _int_field(rec, op, "count"))
    if op == "XSETID":
        return (op, key, _id_in(rec.get("id"), op), _int_field(rec, op, "added"), _id_in(rec.get("maxdel"), op))
    if op == "XNODES":
        raw = rec.get("nodes")
        if not isinstance(raw, list) or not all(isinstance(n, dict) for n in raw):
            raise RecordError("XNODES record without a 'nodes' list")
        return (op, key, [(_id_in(n.get("id"), op), _int_field(n, op, "live", 1), _int_field(n, op, "total", 1),
                           _id_in(n.get("last"), op), _int_field(n, op, "bytes"), _get_list(n, op, "names"))
                          for n in raw])
    group = _get_bytes(rec, "group")
    if op == "XGROUP":
        return (op, key, group, _id_in(rec.get("id"), op), _int_field(rec, op, "read", -1))
    if op == "XGDEL":
        return (op, key, group)
    if op == "XACK":
        return (op, key, group, _ids_in(rec, op, "ids"))
    consumer = _get_bytes(rec, "consumer")
    if op == "XCONSUMER":
        return (op, key, group, consumer, _int_field(rec, op, "seen", -(1 << 63)))
    if op == "XCDEL":
        return (op, key, group, consumer)
    raw = rec.get("nacks")
    if not isinstance(raw, list) or not all(isinstance(x, list) and len(x) == 3 and type(x[1]) is int
                                            and type(x[2]) is int for x in raw):
        raise RecordError("XNACK 'nacks' must be a list of [id, time, count]")
    return (op, key, group, consumer, [(_id_in(i, op), t, n) for i, t, n in raw])


def decode_line(line: bytes, now_ms: int) -> tuple[int | None, Effect]:
    """Parse one AOF line (without its newline) into (seq or None, effect).

    Raises RecordError naming what is wrong.  Lines without `seq`, `crc` or
    `exp` (the original design's format) are accepted; `now_ms` anchors their
    relative `ttl`.  Recovery calls this once per record, so plain SETs take a
    short path.
    """
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"not valid JSON ({e})") from None
    if type(rec) is not dict:
        raise RecordError("record is not a JSON object")
    crc = rec.pop("crc", None)
    if crc is not None:
        # The crc covers the line as written before the crc field was appended.
        at = line.rfind(b',"crc":')
        if at == -1 or type(crc) is not int or zlib.crc32(b"}", zlib.crc32(memoryview(line)[:at])) != crc:
            raise RecordError("checksum mismatch (the line was altered or torn)")
    seq = rec.get("seq")
    if seq is not None:
        if type(seq) is not int or seq < 1:
            raise RecordError(f"field 'seq' must be a positive integer, got {seq!r}")
        if crc is None:  # HELIOS writes both; a lost crc would switch the check off
            raise RecordError("record has a 'seq' but no 'crc' (the line was altered)")
    if rec.get("cmd") == "SET":
        key, value, exp = rec.get("key"), rec.get("value"), rec.get("exp")
        if type(key) is str and type(value) is str and "ttl" not in rec and (exp is None or type(exp) is int):
            return seq, ("SET", key.encode(), value.encode(), exp)
    return seq, _obj_to_effect(rec, now_ms)
