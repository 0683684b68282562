"""The Lua libraries Redis gives scripts that ATLAS implements in Python: cjson and bit.

`lua_libs(lua)` returns them as two Lua tables of Python callables, which the
boot chunk in scripting.py wraps (so an error names the script's line).
`JsonLib` follows lua-cjson's output (numbers as %.14g, "/" escaped, sparse
arrays refused); `BitLib` is LuaBitOp on 32-bit signed integers.  A library
error is a `LibError`, raised into the script as a Lua error.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any

import lupa.lua51 as lua51  # type: ignore[import-untyped]

__all__ = ["JsonLib", "BitLib", "LibError", "lua_libs", "lupa_type"]


class LibError(Exception):
    """An error of a library function (cjson, bit), raised into the script as a Lua error."""


class JsonLib:
    """cjson.encode/decode with lua-cjson's output (numbers as %.14g, "/" escaped, sparse arrays)."""

    null = object()  # cjson.null: a userdata in Lua, as in Redis

    def __init__(self, lua: Any) -> None:
        self._table = lua.table_from

    def encode(self, *args: Any) -> bytes:
        if len(args) != 1:
            raise LibError("bad argument #1 to 'encode' (expected 1 argument)")
        out: list[bytes] = []
        self._enc(args[0], out, 0)
        return b"".join(out)

    def _enc(self, v: Any, out: list[bytes], depth: int) -> None:
        t = type(v)
        if t is bytes:
            out.append(b'"' + _JSON_ESCAPE.sub(lambda m: _JSON_ESCAPES[m.group()], v) + b'"')
        elif t is bool:
            out.append(b"true" if v else b"false")
        elif t is int or t is float:
            if not math.isfinite(v):
                raise LibError("Cannot serialise number: must not be NaN or Inf")
            out.append(b"%.14g" % v)
        elif v is self.null or v is None:
            out.append(b"null")
        elif lua51.lua_type(v) == "table":
            if depth >= 1000:
                raise LibError("Cannot serialise, excessive nesting (1001)")
            items = list(v.items())
            keys = [k for k, _ in items]
            if items and all(type(k) in (int, float) and k >= 1 and k == int(k) for k in keys):
                top = int(max(keys))
                if top > 2 * len(keys) and top > 10:
                    raise LibError("Cannot serialise table: excessively sparse array")
                byidx = {int(k): x for k, x in items}
                out.append(b"[")
                for i in range(1, top + 1):
                    if i > 1:
                        out.append(b",")
                    self._enc(byidx.get(i), out, depth + 1)
                out.append(b"]")
                return
            out.append(b"{")
            for i, (k, x) in enumerate(items):
                if type(k) in (int, float):
                    k = b"%.14g" % k
                elif type(k) is not bytes:
                    raise LibError("Cannot serialise table: table key must be a number or string")
                if i:
                    out.append(b",")
                self._enc(k, out, depth + 1)
                out.append(b":")
                self._enc(x, out, depth + 1)
            out.append(b"}")
        else:
            raise LibError(f"Cannot serialise {lua51.lua_type(v) or 'userdata'}: type not supported")

    def decode(self, *args: Any) -> Any:
        if len(args) != 1 or type(args[0]) is not bytes:
            raise LibError("bad argument #1 to 'decode' (string expected)")
        try:
            value = json.loads(args[0].decode("utf-8", "surrogateescape"))
        except (ValueError, RecursionError) as e:
            raise LibError(f"Expected a JSON value: {getattr(e, 'msg', e)} at character "
                           f"{getattr(e, 'pos', 0) + 1}") from None
        return self._to_lua(value)

    def _to_lua(self, v: Any) -> Any:
        if isinstance(v, str):
            return v.encode("utf-8", "surrogateescape")
        if v is None:
            return self.null
        if isinstance(v, bool):
            return v
        if isinstance(v, int):
            return v if -(1 << 53) <= v <= (1 << 53) else float(v)
        if isinstance(v, list):
            return self._table([self._to_lua(x) for x in v])
        if isinstance(v, dict):
            return self._table({k.encode("utf-8", "surrogateescape"): self._to_lua(x) for k, x in v.items()})
        return v


_JSON_ESCAPES = {b'"': b'\\"', b"\\": b"\\\\", b"/": b"\\/", b"\b": b"\\b", b"\f": b"\\f", b"\n": b"\\n",
                 b"\r": b"\\r", b"\t": b"\\t"}
_JSON_ESCAPES.update({bytes([c]): b"\\u%04x" % c for c in [*range(32), 127] if bytes([c]) not in _JSON_ESCAPES})
_JSON_ESCAPE = re.compile(b'["\\\\/\x00-\x1f\x7f]')


class BitLib:
    """LuaBitOp (`bit`) on 32-bit signed integers, as Redis's Lua has it."""

    @staticmethod
    def _n(v: Any) -> int:
        if type(v) not in (int, float) or not math.isfinite(v):
            raise ValueError("bad argument (number expected)")
        x = int(v) & 0xFFFFFFFF
        return x - (1 << 32) if x & 0x80000000 else x

    def op(self, name: str) -> Callable[..., Any]:
        n = self._n
        ops: dict[str, Callable[..., int | bytes]] = {
            "tobit": lambda a: n(a), "bnot": lambda a: n(~n(a)),
            "band": lambda *a: n(functools.reduce(lambda x, y: x & y, map(n, a))),
            "bor": lambda *a: n(functools.reduce(lambda x, y: x | y, map(n, a))),
            "bxor": lambda *a: n(functools.reduce(lambda x, y: x ^ y, map(n, a))),
            "lshift": lambda a, b: n(n(a) << (n(b) & 31)), "rshift": lambda a, b: n((n(a) & 0xFFFFFFFF) >> (n(b) & 31)),
            "arshift": lambda a, b: n(n(a) >> (n(b) & 31)),
            "rol": lambda a, b: n(((n(a) & 0xFFFFFFFF) << (n(b) & 31)) | ((n(a) & 0xFFFFFFFF) >> (32 - (n(b) & 31)))),
            "ror": lambda a, b: n(((n(a) & 0xFFFFFFFF) >> (n(b) & 31)) | ((n(a) & 0xFFFFFFFF) << (32 - (n(b) & 31)))),
            "bswap": lambda a: n(int.from_bytes((n(a) & 0xFFFFFFFF).to_bytes(4, "little"), "big")),
            "tohex": lambda a, w=8: _tohex(n(a), n(w)),
        }
        op = ops[name]

        def call(*args: Any) -> Any:
            for i, a in enumerate(args, 1):
                if name != "tohex" or i == 1 or a is not None:
                    if type(a) not in (int, float):
                        got = "no value" if a is None else (lupa_type(a))
                        raise LibError(f"bad argument #{i} to '{name}' (number expected, got {got})")
            try:
                return op(*args)
            except (ValueError, TypeError):
                raise LibError(f"bad argument to '{name}'") from None

        return call


def lua_libs(lua: Any) -> tuple[Any, Any]:
    """cjson and bit as Lua tables of Python callables (what _BOOT wraps)."""
    j = JsonLib(lua)
    b = BitLib()
    names = ("tobit", "tohex", "bnot", "band", "bor", "bxor", "lshift", "rshift", "arshift", "rol", "ror", "bswap")
    return (lua.table_from({b"encode": j.encode, b"decode": j.decode, b"null": j.null}),
            lua.table_from({name.encode(): b.op(name) for name in names}))


def lupa_type(v: Any) -> str:
    """Lua's type() name of a value that came from Lua."""
    if type(v) is bytes:
        return "string"
    if type(v) is bool:
        return "boolean"
    return lua51.lua_type(v) or "userdata"


def _tohex(a: int, w: int) -> bytes:
    digits, upper = (-w, True) if w < 0 else (w, False)
    digits = min(digits, 8)
    text = b"%0*x" % (digits, (a & 0xFFFFFFFF) & ((1 << (4 * digits)) - 1)) if digits else b""
    return text.upper() if upper else text
