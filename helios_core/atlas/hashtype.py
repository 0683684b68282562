"""The hash value type: Redis 7.0's two encodings, listpack while small, a dict past the limits.

A `Hash` answers the part of the dict interface the commands, effects,
snapshots and DUMP use (get, [], in, len, iteration over fields, items,
values, update, pop), so callers do not care which encoding it holds.

listpack: one `bytes` object, ``SEP f1 VSEP v1 SEP f2 VSEP v2 SEP`` with the
elements escaped (packed.py), in insertion order: HSET of a new field appends,
of an existing one rewrites its value in place, HDEL cuts the pair out, as in
Redis's listpack.  A field is found with one `bytes.find` of
``SEP field VSEP``: escaped elements hold neither separator, so only a whole
field can match.

hashtable: a plain dict.  A hash converts to it, for good, exactly where
Redis 7.0 converts (t_hash.c): when a field or value longer than
hash-max-listpack-value is set, and when an HSET leaves more than
hash-max-listpack-entries fields.  Like Redis it never converts back, and a
copy keeps the encoding (`with_encoding`: RENAME, COPY and MOVE rebuild the
hash under its new name), where RDB loading and RESTORE choose by content.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from helios_core.atlas.packed import ESC, LIMITS, SEP, VSEP, escape, unescape

__all__ = ["Hash", "LISTPACK", "HASHTABLE", "content_encoding"]

LISTPACK = "listpack"
HASHTABLE = "hashtable"
_EMPTY = SEP
_BATCH = 8  # an HSET of more pairs than this decodes, merges and re-encodes once instead of pair by pair


def content_encoding(fields: list[bytes], values: list[bytes]) -> str:
    """The encoding a hash of these fields and values gets when built in one go (loading, HSET)."""
    if len(fields) > LIMITS.hash_entries or max(map(len, fields), default=0) > LIMITS.hash_value:
        return HASHTABLE
    return HASHTABLE if max(map(len, values), default=0) > LIMITS.hash_value else LISTPACK


class Hash:
    """A Redis hash (field -> value, both bytes).

    `_v` is the listpack `bytes` and `_n` its number of fields, or `_v` is the dict and
    `_n` is -1 (two slots keep the object at 48 bytes, a third would make it 64).
    """

    __slots__ = ("_v", "_n")

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self._v: Any = _EMPTY
        self._n = 0
        if pairs:
            self.update(pairs)

    @classmethod
    def from_dict(cls, d: dict[bytes, bytes]) -> Hash:
        """A hash with `d`'s content, in the encoding Redis picks when it loads one (RDB, RESTORE)."""
        h = cls()
        h.update(list(d.items()))
        return h

    # -- what it is ---------------------------------------------------------------------

    @property
    def encoding(self) -> str:
        """OBJECT ENCODING's answer."""
        return HASHTABLE if self._n < 0 else LISTPACK

    def loaded_encoding(self) -> str:
        """The encoding Redis would give this content when loading it (RDB, RESTORE), as a new
        hash built by one HSET of all of it gets here."""
        return content_encoding(self.keys(), self.values())

    def with_encoding(self, encoding: str) -> str:
        """Hold the content as `encoding` from now on (the source's, on a rebuilt copy); the
        encoding it had, for an undo."""
        was = self.encoding
        if encoding == HASHTABLE and self._n >= 0:
            self._convert()
        elif encoding == LISTPACK and self._n < 0:
            self._encode(self._v)
        return was

    def __len__(self) -> int:
        n = self._n
        return len(self._v) if n < 0 else n

    def __repr__(self) -> str:
        return f"Hash({self.encoding}, {self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        """Same fields and values (order and encoding aside); a dict compares by content too."""
        if isinstance(other, Hash):
            return len(self) == len(other) and self.to_dict() == other.to_dict()
        if isinstance(other, dict):
            return self.to_dict() == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    # -- reading ------------------------------------------------------------------------

    def get(self, field: bytes, default: Any = None) -> Any:
        if self._n < 0:
            return self._v.get(field, default)
        blob: bytes = self._v
        # (The isascii() tests are the fast path of escape/unescape, inlined: this is HGET's.)
        needle = SEP + (field if field.isascii() else escape(field)) + VSEP
        i = blob.find(needle)
        if i < 0:
            return default
        j = i + len(needle)
        v = blob[j:blob.find(SEP, j)]
        return v if v.isascii() else unescape(v)

    def __getitem__(self, field: bytes) -> bytes:
        v = self.get(field)
        if v is None:
            raise KeyError(field)
        value: bytes = v
        return value

    def __contains__(self, field: object) -> bool:
        if self._n < 0:
            return field in self._v
        return type(field) is bytes and (SEP + (field if field.isascii() else escape(field)) + VSEP) in self._v

    def _flat(self) -> list[bytes]:
        """The listpack's elements in order: field, value, field, value ..."""
        blob: bytes = self._v
        if not self._n:
            return []
        flat = blob[1:-1].replace(VSEP, SEP).split(SEP)
        if not blob.isascii() and ESC in blob:
            flat = [unescape(x) for x in flat]
        return flat

    def to_dict(self) -> dict[bytes, bytes]:
        """A new dict of the content (in the listpack's order, which is insertion order)."""
        if self._n < 0:
            return dict(self._v)
        flat = self._flat()
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def keys(self) -> list[bytes]:
        return list(self._v) if self._n < 0 else self._flat()[::2]

    def values(self) -> list[bytes]:
        return list(self._v.values()) if self._n < 0 else self._flat()[1::2]

    def items(self) -> list[tuple[bytes, bytes]]:
        if self._n < 0:
            return list(self._v.items())
        flat = self._flat()
        return list(zip(flat[::2], flat[1::2], strict=True))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.keys())

    # -- writing (the HSET/HDEL effects and their undo) ----------------------------------

    def update(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        """Set each (field, value) in order, converting where Redis's hashTypeSet would."""
        if self._n < 0:
            self._v.update(pairs)
            return
        pairs = pairs if type(pairs) is list else list(pairs)
        limits = LIMITS
        if len(pairs) == 1:  # the usual HSET: one pair, no loops
            f, v = pairs[0]
            if len(f) > limits.hash_value or len(v) > limits.hash_value:
                self._convert()[f] = v
                return
            if self._n:
                self._set(f, v)
            else:  # a new hash
                self._v = b"".join((SEP, f if f.isascii() else escape(f), VSEP, v if v.isascii() else escape(v), SEP))
                self._n = 1
            if self._n > limits.hash_entries:
                self._convert()
            return
        limit = limits.hash_value
        for f, v in pairs:
            if len(f) > limit or len(v) > limit:
                self._convert().update(pairs)
                return
        if len(pairs) > _BATCH or (len(pairs) > 1 and not self._n):  # (a new hash: loading, RENAME, COPY)
            d = self.to_dict()
            d.update(pairs)
            if len(d) > LIMITS.hash_entries:
                self._v, self._n = d, -1
            else:
                self._encode(d)
            return
        for f, v in pairs:
            self._set(f, v)
        if self._n > LIMITS.hash_entries:
            self._convert()

    def put(self, field: bytes, value: bytes) -> bytes | None:
        """Set one field, as update([(field, value)]) does; the value it replaced (None: a new field).
        (HSET's effect: one `find` gives the undo's old value and the place to write.)"""
        n = self._n
        limits = LIMITS
        if n < 0 or len(field) > limits.hash_value or len(value) > limits.hash_value:
            d: dict[bytes, bytes] = self._v if n < 0 else self._convert()
            old = d.get(field)
            d[field] = value
            return old
        ef = field if field.isascii() else escape(field)
        ev = value if value.isascii() else escape(value)
        blob: bytes = self._v
        if n:
            needle = SEP + ef + VSEP
            i = blob.find(needle)
            if i >= 0:
                j = i + len(needle)
                end = blob.find(SEP, j)
                was = blob[j:end]
                self._v = b"".join((blob[:j], ev, blob[end:]))
                if n > limits.hash_entries:  # (a lowered limit converts on the next write, an update too)
                    self._convert()
                return was if was.isascii() else unescape(was)
            self._v = b"".join((blob, ef, VSEP, ev, SEP))
        else:  # a new hash
            self._v = b"".join((SEP, ef, VSEP, ev, SEP))
        self._n = n + 1
        if n + 1 > limits.hash_entries:
            self._convert()
        return None

    def __setitem__(self, field: bytes, value: bytes) -> None:
        self.update([(field, value)])

    def _set(self, field: bytes, value: bytes) -> None:
        blob: bytes = self._v
        ef = field if field.isascii() else escape(field)
        ev = value if value.isascii() else escape(value)
        needle = SEP + ef + VSEP
        i = blob.find(needle)
        if i < 0:
            self._v = b"".join((blob, ef, VSEP, ev, SEP))
            self._n += 1
        else:
            j = i + len(needle)
            self._v = b"".join((blob[:j], ev, blob[blob.find(SEP, j):]))

    def pop(self, field: bytes, default: Any = None) -> Any:
        if self._n < 0:
            return self._v.pop(field, default)
        blob: bytes = self._v
        needle = SEP + escape(field) + VSEP
        i = blob.find(needle)
        if i < 0:
            return default
        j = i + len(needle)
        end = blob.find(SEP, j)
        self._v = blob[:i] + blob[end:]
        self._n -= 1
        return unescape(blob[j:end])

    def _encode(self, d: dict[bytes, bytes]) -> None:
        if d:
            self._v = b"".join((SEP, SEP.join(escape(f) + VSEP + escape(v) for f, v in d.items()), SEP))
        else:
            self._v = _EMPTY
        self._n = len(d)

    def _convert(self) -> dict[bytes, bytes]:
        """listpack -> hashtable (hashTypeConvertListpack): the dict it becomes."""
        d = self.to_dict()
        self._v, self._n = d, -1
        return d
