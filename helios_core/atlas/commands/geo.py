"""Geo commands: GEOADD GEODIST GEOHASH GEOPOS GEOSEARCH GEOSEARCHSTORE and the deprecated GEORADIUS,
GEORADIUS_RO, GEORADIUSBYMEMBER, GEORADIUSBYMEMBER_RO, as Redis 7.0 runs them (geo.c, geohash.c,
geohash_helper.c).

A geo set is a sorted set whose scores are 52-bit geohashes: longitude and latitude each cut into
2**26 steps (latitude only between +-85.05112878, Web Mercator's limits) and their bits interleaved.
GEOADD is ZADD of those scores (it runs the ZADD handler, as Redis calls zaddCommand), so the AOF
logs a plain ZADD effect; the STORE forms log a DEL and one ZADD (zsets.store_zset).

A search does what Redis does, step for step, so the same members come back in the same order:
a geohash precision is estimated from the radius (or the box's half-diagonal), the centre's cell
and its 8 neighbours are scanned as score ranges of the zset (the cells the search cannot reach
skipped, a cell equal to the last one scanned skipped), each member's decoded position is kept
when inside the circle or box, and results are sorted by distance: a stable sort for a full
answer, Redis's partial quicksort (pqsort.c) when COUNT cuts it, because with equal distances
the two pick different members.  Distances are haversine on a sphere of Redis's radius, sent as
"%.4f"; coordinates as Redis's long double "human" text (%.17Lf, trailing zeros cut).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from helios_core.atlas.commands.table import SYNTAX, TABLE, Ctx, command, err, parse_float, parse_int
from helios_core.atlas.commands.zsets import store_zset
from helios_core.atlas.resp import NULL_ARRAY, HumanFloat
from helios_core.atlas.zset import ZSet

__all__ = ["encode_wgs84", "decode_score", "distance"]

LONG_MIN, LONG_MAX = -180.0, 180.0
LAT_MIN, LAT_MAX = -85.05112878, 85.05112878
STEP_MAX = 26
EARTH_RADIUS = 6372797.560856       # metres, Redis's EARTH_RADIUS_IN_METERS
MERCATOR_MAX = 20037726.37
D_R = math.pi / 180.0
U64 = (1 << 64) - 1
UNITS = {b"m": 1.0, b"km": 1000.0, b"ft": 0.3048, b"mi": 1609.34}
GEOALPHABET = b"0123456789bcdefghjkmnpqrstuvwxyz"

# A cell: (bits, step); (0, 0) is a cell the search skips (Redis's GZERO).
Cell = tuple[int, int]
# A cell's extent: (lon_min, lon_max, lat_min, lat_max).
Area = tuple[float, float, float, float]


# -- C's libm as Redis calls it: NaN where Python would raise -------------------------------------

def _c(fn: Callable[[float], float]) -> Callable[[float], float]:
    def call(x: float) -> float:
        try:
            return fn(x)
        except ValueError:  # (sin/cos of inf, asin past 1, sqrt of a negative: NaN in C)
            return math.nan
    return call


_sin, _cos, _asin, _sqrt = _c(math.sin), _c(math.cos), _c(math.asin), _c(math.sqrt)


def _u64(x: float) -> int:
    """C's (uint64_t) of a double on x86-64 as gcc compiles it: below 2**63 a signed truncation
    (negatives wrap, out of range gives 2**63), above it the same after subtracting 2**63."""
    if x != x:
        return 0
    if x < 9223372036854775808.0:
        if x <= -9223372036854775808.0 - 1024 or math.isinf(x):
            return 1 << 63
        return int(x) & U64
    y = x - 9223372036854775808.0
    i = (1 << 63) if (math.isinf(y) or y >= 9223372036854775808.0) else int(y)
    return (i ^ (1 << 63)) & U64


# -- geohash bits -----------------------------------------------------------------------------------

def _interleave(x: int, y: int) -> int:
    """x's 32 bits in the even positions, y's in the odd ones."""
    x = (x | (x << 16)) & 0x0000FFFF0000FFFF
    y = (y | (y << 16)) & 0x0000FFFF0000FFFF
    x = (x | (x << 8)) & 0x00FF00FF00FF00FF
    y = (y | (y << 8)) & 0x00FF00FF00FF00FF
    x = (x | (x << 4)) & 0x0F0F0F0F0F0F0F0F
    y = (y | (y << 4)) & 0x0F0F0F0F0F0F0F0F
    x = (x | (x << 2)) & 0x3333333333333333
    y = (y | (y << 2)) & 0x3333333333333333
    x = (x | (x << 1)) & 0x5555555555555555
    y = (y | (y << 1)) & 0x5555555555555555
    return x | (y << 1)


def _squash(x: int) -> int:
    """The even-position bits of a 64-bit x, packed into 32."""
    x &= 0x5555555555555555
    x = (x | (x >> 1)) & 0x3333333333333333
    x = (x | (x >> 2)) & 0x0F0F0F0F0F0F0F0F
    x = (x | (x >> 4)) & 0x00FF00FF00FF00FF
    x = (x | (x >> 8)) & 0x0000FFFF0000FFFF
    return (x | (x >> 16)) & 0xFFFFFFFF


def _encode(lon: float, lat: float, step: int, lat_lo: float = LAT_MIN, lat_hi: float = LAT_MAX) -> Cell | None:
    """geohashEncode over longitudes -180..180 and latitudes lat_lo..lat_hi; None outside."""
    if step > 32 or step == 0:
        return None
    if lon > LONG_MAX or lon < LONG_MIN or lat > LAT_MAX or lat < LAT_MIN:
        return None
    if lat < lat_lo or lat > lat_hi:
        return None
    lat_off = (lat - lat_lo) / (lat_hi - lat_lo) * float(1 << step)
    lon_off = (lon - LONG_MIN) / (LONG_MAX - LONG_MIN) * float(1 << step)
    # (C converts the offsets to uint32_t: truncation, and both are within 0..2**step)
    return _interleave(int(lat_off) & 0xFFFFFFFF, int(lon_off) & 0xFFFFFFFF), step


def encode_wgs84(lon: float, lat: float) -> int:
    """The 52-bit score GEOADD stores for a (valid) position."""
    cell = _encode(lon, lat, STEP_MAX)
    assert cell is not None  # noqa: S101  (callers validate the pair first, as Redis does)
    return cell[0] << (52 - STEP_MAX * 2)


def _decode(cell: Cell, lat_lo: float = LAT_MIN, lat_hi: float = LAT_MAX) -> Area | None:
    bits, step = cell
    if not bits and not step:
        return None
    ilat, ilon = _squash(bits), _squash(bits >> 1)
    cells = float(1 << step)
    lat_scale, lon_scale = lat_hi - lat_lo, LONG_MAX - LONG_MIN
    return (LONG_MIN + (ilon * 1.0 / cells) * lon_scale, LONG_MIN + ((ilon + 1) * 1.0 / cells) * lon_scale,
            lat_lo + (ilat * 1.0 / cells) * lat_scale, lat_lo + ((ilat + 1) * 1.0 / cells) * lat_scale)


def decode_score(score: float) -> tuple[float, float]:
    """(longitude, latitude) of a geo set score: the centre of its cell, held inside the limits."""
    area = _decode((_u64(score), STEP_MAX))
    assert area is not None  # noqa: S101  (step 26 always decodes)
    lon = (area[0] + area[1]) / 2
    lon = min(max(lon, LONG_MIN), LONG_MAX) if lon == lon else lon
    lat = (area[2] + area[3]) / 2
    lat = min(max(lat, LAT_MIN), LAT_MAX) if lat == lat else lat
    return lon, lat


def distance(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Haversine great-circle distance in metres, as geohashGetDistance computes it: on one meridian
    (the longitudes' half-difference has a sine of 0) the arc along it, which differs from the full
    formula in the last bits (STOREDIST shows them)."""
    lon1r, lon2r = lon1 * D_R, lon2 * D_R
    v = _sin((lon2r - lon1r) / 2)
    if v == 0.0:
        return EARTH_RADIUS * abs(lat2 * D_R - lat1 * D_R)
    lat1r, lat2r = lat1 * D_R, lat2 * D_R
    u = _sin((lat2r - lat1r) / 2)
    return 2.0 * EARTH_RADIUS * _asin(_sqrt(u * u + _cos(lat1r) * _cos(lat2r) * v * v))


def _move(cell: Cell, dx: int, dy: int) -> Cell:
    """The cell dx east and dy north (each -1, 0 or 1), wrapping around as Redis's 64-bit sums do."""
    bits, step = cell
    shift = 64 - step * 2
    for d, mask, other in ((dx, 0xAAAAAAAAAAAAAAAA, 0x5555555555555555), (dy, 0x5555555555555555, 0xAAAAAAAAAAAAAAAA)):
        if d == 0:
            continue
        v, keep = bits & mask, bits & other
        zz = other >> shift
        if d > 0:
            v = (v + (zz + 1)) & U64
        else:
            v = ((v | zz) - (zz + 1)) & U64
        v &= mask >> shift
        bits = v | keep
    return bits, step


def _steps_for(range_m: float, lat: float) -> int:
    """geohashEstimateStepsByRadius."""
    if range_m == 0:
        return 26
    step = 1
    while range_m < MERCATOR_MAX:
        range_m *= 2
        step += 1
    step -= 2
    if lat > 66 or lat < -66:
        step -= 1
        if lat > 80 or lat < -80:
            step -= 1
    return min(max(step, 1), 26)


class Shape:
    """A search: its centre, the circle's radius or the box's width and height (in the unit), the
    unit's metres."""

    __slots__ = ("lon", "lat", "radius", "width", "height", "box", "conversion")

    def __init__(self) -> None:
        self.lon = self.lat = self.radius = self.width = self.height = 0.0
        self.box = False
        self.conversion = 0.0

    def bounds(self) -> tuple[float, float, float, float]:
        """geohashBoundingBox: (min lon, min lat, max lon, max lat)."""
        height = self.conversion * (self.height / 2 if self.box else self.radius)
        width = self.conversion * (self.width / 2 if self.box else self.radius)
        lat_delta = (height / EARTH_RADIUS) / D_R
        top = width / EARTH_RADIUS / _cos((self.lat + lat_delta) * D_R) / D_R
        bottom = width / EARTH_RADIUS / _cos((self.lat - lat_delta) * D_R) / D_R
        delta = bottom if self.lat < 0 else top
        return self.lon - delta, self.lat - lat_delta, self.lon + delta, self.lat + lat_delta

    def cells(self) -> list[Cell]:
        """geohashCalculateAreasByShapeWGS84: the centre cell and its 8 neighbours, in Redis's order
        (centre, N, S, E, W, NE, NW, SE, SW), the ones the search cannot reach as (0, 0)."""
        min_lon, min_lat, max_lon, max_lat = self.bounds()
        if self.box:
            radius_m = _sqrt((self.width / 2) * (self.width / 2) + (self.height / 2) * (self.height / 2))
        else:
            radius_m = self.radius
        radius_m *= self.conversion
        steps = _steps_for(radius_m, self.lat)
        centre = _encode(self.lon, self.lat, steps)
        assert centre is not None  # noqa: S101  (a validated centre)
        north, south, east, west = (_decode(_move(centre, 0, 1)), _decode(_move(centre, 0, -1)),
                                    _decode(_move(centre, 1, 0)), _decode(_move(centre, -1, 0)))
        assert north and south and east and west  # noqa: S101
        if steps > 1 and (north[3] < max_lat or south[2] > min_lat or east[1] < max_lon or west[0] > min_lon):
            steps -= 1
            centre = _encode(self.lon, self.lat, steps)
            assert centre is not None  # noqa: S101
        area = _decode(centre)
        assert area is not None  # noqa: S101
        moves = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1))
        cells = [centre] + [_move(centre, dx, dy) for dx, dy in moves]
        if steps >= 2:
            zero = (0, 0)
            if area[2] < min_lat:
                cells[2] = cells[7] = cells[8] = zero   # S, SE, SW
            if area[3] > max_lat:
                cells[1] = cells[5] = cells[6] = zero   # N, NE, NW
            if area[0] < min_lon:
                cells[4] = cells[8] = cells[6] = zero   # W, SW, NW
            if area[1] > max_lon:
                cells[3] = cells[7] = cells[5] = zero   # E, SE, NE
        return cells

    def inside(self, lon: float, lat: float) -> float | None:
        """The distance from the centre (metres) when (lon, lat) is inside the shape, else None."""
        if not self.box:
            d = distance(self.lon, self.lat, lon, lat)
            return None if d > self.radius * self.conversion else d
        if distance(lon, lat, lon, self.lat) > self.height * self.conversion / 2:
            return None
        if distance(lon, lat, self.lon, lat) > self.width * self.conversion / 2:
            return None
        return distance(self.lon, self.lat, lon, lat)


# A found member: [distance, score, member, lon, lat].
Point = list


def _search(z: ZSet, shape: Shape, limit: int) -> list[Point]:
    """membersOfAllNeighbors: the members inside the shape, in the order Redis finds them; with a
    limit (ANY), stop as soon as that many are found."""
    found: list[Point] = []
    last: Cell | None = None
    for i, cell in enumerate(shape.cells()):
        bits, step = cell
        if not bits and not step:
            continue
        if last is not None and i and cell == last:
            continue
        if found and limit and len(found) >= limit:
            break
        shift = 52 - step * 2
        lo, hi = float((bits << shift) & U64), float(((bits + 1) << shift) & U64)
        for score, member in z.range_by_score(lo, False, hi, True):
            lon, lat = decode_score(score)
            d = shape.inside(lon, lat)
            if d is not None:
                found.append([d, score, member, lon, lat])
            if found and limit and len(found) >= limit:
                break
        last = cell if i else None
    return found


def _pqsort(a: list[Point], desc: bool, right: int) -> None:
    """Redis's pqsort (Bentley-McIlroy quicksort that skips the parts past index `right`) on the
    distance, in place: with equal distances its order is its own, which COUNT shows.  The two
    parts of a partition are disjoint, so sorting them in either order gives the same array."""

    def cmp(i: int, j: int) -> int:
        x, y = a[i][0], a[j][0]
        c = 1 if x > y else 0 if x == y else -1
        return -c if desc else c

    def swap(i: int, j: int) -> None:
        a[i], a[j] = a[j], a[i]

    def vecswap(i: int, j: int, n: int) -> None:
        for k in range(n):
            swap(i + k, j + k)

    def med3(i: int, j: int, k: int) -> int:
        if cmp(i, j) < 0:
            return j if cmp(j, k) < 0 else (k if cmp(i, k) < 0 else i)
        return j if cmp(j, k) > 0 else (i if cmp(i, k) < 0 else k)

    def insertion(lo: int, n: int) -> None:
        for m in range(lo + 1, lo + n):
            p = m
            while p > lo and cmp(p - 1, p) > 0:
                swap(p, p - 1)
                p -= 1

    stack = [(0, len(a))]
    while stack:
        lo, n = stack.pop()
        while True:
            if n < 7:
                insertion(lo, n)
                break
            pm = lo + n // 2
            if n > 7:
                pl, pn = lo, lo + n - 1
                if n > 40:
                    d = n // 8
                    pl = med3(pl, pl + d, pl + 2 * d)
                    pm = med3(pm - d, pm, pm + d)
                    pn = med3(pn - 2 * d, pn - d, pn)
                pm = med3(pl, pm, pn)
            swap(lo, pm)
            pa = pb = lo + 1
            pc = pd = lo + n - 1
            while True:
                while pb <= pc:
                    c = cmp(pb, lo)
                    if c > 0:
                        break
                    if c == 0:
                        swap(pa, pb)
                        pa += 1
                    pb += 1
                while pb <= pc:
                    c = cmp(pc, lo)
                    if c < 0:
                        break
                    if c == 0:
                        swap(pc, pd)
                        pd -= 1
                    pc -= 1
                if pb > pc:
                    break
                swap(pb, pc)
                pb += 1
                pc -= 1
            # (no switch to insertion sort when nothing moved: the NetBSD original has one, the
            # redis-server 7.0.15 this answers as does not; it leaves ties in a different order)
            pn = lo + n
            r = min(pa - lo, pb - pa)
            vecswap(lo, pb - r, r)
            r = min(pd - pc, pn - pd - 1)
            vecswap(pb, pn - r, r)
            r = pb - pa
            if r > 1 and not right < lo:
                stack.append((lo, r))
            r = pd - pc
            if r > 1 and not right < pn - r:
                lo, n = pn - r, r
                continue
            break


def _sort(found: list[Point], desc: bool, keep: int) -> None:
    """Sort by distance as Redis does: glibc's qsort (a stable merge sort) for the whole answer,
    pqsort when only the first `keep` are sent.  Both give the sorted order whenever the distances
    up to the cut are all different, so Python's sort answers those; the rest runs pqsort."""
    if keep == len(found):
        found.sort(key=lambda p: p[0], reverse=desc)
        return
    dists = sorted((p[0] for p in found), reverse=desc)
    cut = dists[keep - 1]
    upto = [x for x in dists if (x >= cut if desc else x <= cut)]
    if len(upto) == keep and len(set(upto)) == keep:
        found.sort(key=lambda p: p[0], reverse=desc)
        return
    _pqsort(found, desc, keep - 1)


# -- argument helpers -----------------------------------------------------------------------------

def _lonlat(lon_raw: bytes, lat_raw: bytes) -> tuple[float, float]:
    """extractLongLatOrReply: both parsed, then both checked."""
    lon, lat = parse_float(lon_raw), parse_float(lat_raw)
    if lon < LONG_MIN or lon > LONG_MAX or lat < LAT_MIN or lat > LAT_MAX:
        raise err(f"ERR invalid longitude,latitude pair {lon:f},{lat:f}")
    return lon, lat


def _unit(raw: bytes) -> float:
    conv = UNITS.get(raw.lower())
    if conv is None:
        raise err("ERR unsupported unit provided. please use M, KM, FT, MI")
    return conv


def _radius(shape: Shape, raw: bytes, unit: bytes) -> None:
    r = parse_float(raw, "ERR need numeric radius")
    if r < 0:
        raise err("ERR radius cannot be negative")
    shape.radius = r
    shape.conversion = _unit(unit)
    shape.box = False


def _member_pos(z: ZSet, member: bytes) -> tuple[float, float]:
    score = z.score(member)
    if score is None:
        raise err("ERR could not decode requested zset member")
    return decode_score(score)


def _distance_text(d: float) -> bytes:
    return b"%.4f" % d


def _human(x: float) -> HumanFloat:
    return HumanFloat(x)


# -- commands -------------------------------------------------------------------------------------

@command("geoadd", -5, "write denyoom")
def geoadd(ctx: Ctx, args: list[bytes]) -> Any:
    i = 1
    nx = xx = False
    while i < len(args):
        opt = args[i].lower()
        if opt == b"nx":
            nx = True
        elif opt == b"xx":
            xx = True
        elif opt != b"ch":
            break
        i += 1
    if (len(args) - i) % 3 or (nx and xx):
        raise err(SYNTAX)
    zargs = args[:i]
    for j in range(i, len(args), 3):
        lon, lat = _lonlat(args[j], args[j + 1])
        zargs += [b"%d" % encode_wgs84(lon, lat), args[j + 2]]
    # ZADD does the rest (its own checks, WRONGTYPE, NX/XX/CH, the effect), as Redis's geoadd calls it.
    zadd = TABLE.get(b"zadd")
    assert zadd is not None  # noqa: S101
    return zadd.handler(ctx, zargs)


@command("geodist", -4, "readonly")
def geodist(ctx: Ctx, args: list[bytes]) -> Any:
    to_m = 1.0
    if len(args) == 4:
        to_m = _unit(args[3])
    elif len(args) > 4:
        raise err(SYNTAX)
    z = ctx.get_zset(args[0])
    if z is None:
        return None
    s1, s2 = z.score(args[1]), z.score(args[2])
    if s1 is None or s2 is None:
        return None
    lon1, lat1 = decode_score(s1)
    lon2, lat2 = decode_score(s2)
    return _distance_text(distance(lon1, lat1, lon2, lat2) / to_m)


@command("geohash", -2, "readonly")
def geohash(ctx: Ctx, args: list[bytes]) -> Any:
    z = ctx.get_zset(args[0])
    out: list[Any] = []
    for member in args[1:]:
        score = z.score(member) if z is not None else None
        if score is None:
            out.append(None)
            continue
        lon, lat = decode_score(score)
        # Redis's scores use latitudes +-85.05; a standard geohash is over +-90: encoded again.
        cell = _encode(lon, lat, 26, -90.0, 90.0)
        bits = cell[0] if cell is not None else 0
        chars = bytes(GEOALPHABET[(bits >> (52 - (k + 1) * 5)) & 0x1F] for k in range(10))
        out.append(chars + b"0")
    return out


@command("geopos", -2, "readonly")
def geopos(ctx: Ctx, args: list[bytes]) -> Any:
    z = ctx.get_zset(args[0])
    out: list[Any] = []
    for member in args[1:]:
        score = z.score(member) if z is not None else None
        if score is None:
            out.append(NULL_ARRAY)
            continue
        lon, lat = decode_score(score)
        out.append([_human(lon), _human(lat)])
    return out


# georadiusGeneric's flags
_COORDS, _MEMBER, _NOSTORE, _SEARCH, _SEARCHSTORE = 1, 2, 4, 8, 16


def _generic(ctx: Ctx, args: list[bytes], src_at: int, flags: int, name: bytes) -> Any:
    """georadiusGeneric: argument checks in Redis's order, the search, the reply or the store."""
    z = ctx.get_zset(args[src_at])
    shape = Shape()
    store: bytes | None = None
    storedist = False
    if flags & _COORDS:
        base = 5
        shape.lon, shape.lat = _lonlat(args[1], args[2])
        _radius(shape, args[3], args[4])
    elif flags & _MEMBER and z is None:
        base = 4  # (the radius is not even read: the reply is empty, or 0 with STORE)
    elif flags & _MEMBER:
        base = 4
        shape.lon, shape.lat = _member_pos(z, args[1])  # type: ignore[arg-type]
        _radius(shape, args[2], args[3])
    else:
        base = 1
        if flags & _SEARCHSTORE:
            base = 2
            store = args[0]
    withdist = withhash = withcoord = any_ = False
    frommember = fromloc = byradius = bybox = False
    sort = 0  # 0 none, 1 asc, 2 desc
    count = 0
    rest = args[base:]
    n = len(rest)
    i = 0
    while i < n:
        opt = rest[i].lower()
        if opt == b"withdist":
            withdist = True
        elif opt == b"withhash":
            withhash = True
        elif opt == b"withcoord":
            withcoord = True
        elif opt == b"any":
            any_ = True
        elif opt == b"asc":
            sort = 1
        elif opt == b"desc":
            sort = 2
        elif opt == b"count" and i + 1 < n:
            count = parse_int(rest[i + 1])
            if count <= 0:
                raise err("ERR COUNT must be > 0")
            i += 1
        elif opt in (b"store", b"storedist") and i + 1 < n and not flags & (_NOSTORE | _SEARCH):
            store, storedist = rest[i + 1], opt == b"storedist"
            i += 1
        elif opt == b"storedist" and flags & _SEARCH and flags & _SEARCHSTORE:
            storedist = True
        elif opt == b"frommember" and i + 1 < n and flags & _SEARCH and not fromloc:
            if z is not None:
                shape.lon, shape.lat = _member_pos(z, rest[i + 1])
            frommember = True
            i += 1
        elif opt == b"fromlonlat" and i + 2 < n and flags & _SEARCH and not frommember:
            shape.lon, shape.lat = _lonlat(rest[i + 1], rest[i + 2])
            fromloc = True
            i += 2
        elif opt == b"byradius" and i + 2 < n and flags & _SEARCH and not bybox:
            _radius(shape, rest[i + 1], rest[i + 2])
            byradius = True
            i += 2
        elif opt == b"bybox" and i + 3 < n and flags & _SEARCH and not byradius:
            w = parse_float(rest[i + 1], "ERR need numeric width")
            h = parse_float(rest[i + 2], "ERR need numeric height")
            if h < 0 or w < 0:
                raise err("ERR height or width cannot be negative")
            shape.width, shape.height = w, h
            shape.conversion = _unit(rest[i + 3])
            shape.box = True
            bybox = True
            i += 3
        else:
            raise err(SYNTAX)
        i += 1
    if store is not None and (withdist or withhash or withcoord):
        what = "GEOSEARCHSTORE" if flags & _SEARCHSTORE else "STORE option in GEORADIUS"
        raise err(f"ERR {what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options")
    typed = name.decode(errors="replace")
    if flags & _SEARCH and not (frommember or fromloc):
        raise err(f"ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {typed}")
    if flags & _SEARCH and not (byradius or bybox):
        raise err(f"ERR exactly one of BYRADIUS and BYBOX can be specified for {typed}")
    if any_ and not count:
        raise err("ERR the ANY argument requires COUNT argument")
    if z is None:
        if store is not None:
            return store_zset(ctx, store, [])
        return []
    if count and not sort and not any_:
        sort = 1
    found = _search(z, shape, count if any_ else 0)
    if not found and store is None:
        return []
    keep = len(found) if not count or len(found) < count else count
    if sort:
        _sort(found, sort == 2, keep)
    conv = shape.conversion
    if store is not None:
        return store_zset(ctx, store, [((p[0] / conv) if storedist else p[1], p[2]) for p in found[:keep]])
    out: list[Any] = []
    extra = withdist or withhash or withcoord
    for d, score, member, lon, lat in found[:keep]:
        if not extra:
            out.append(member)
            continue
        item: list[Any] = [member]
        if withdist:
            item.append(_distance_text(d / conv))
        if withhash:
            item.append(int(score))
        if withcoord:
            item.append([_human(lon), _human(lat)])
        out.append(item)
    return out


@command("georadius", -6, "write denyoom movablekeys")
def georadius(ctx: Ctx, args: list[bytes]) -> Any:
    return _generic(ctx, args, 0, _COORDS, ctx.name)


@command("georadius_ro", -6, "readonly")
def georadius_ro(ctx: Ctx, args: list[bytes]) -> Any:
    return _generic(ctx, args, 0, _COORDS | _NOSTORE, ctx.name)


@command("georadiusbymember", -5, "write denyoom movablekeys")
def georadiusbymember(ctx: Ctx, args: list[bytes]) -> Any:
    return _generic(ctx, args, 0, _MEMBER, ctx.name)


@command("georadiusbymember_ro", -5, "readonly")
def georadiusbymember_ro(ctx: Ctx, args: list[bytes]) -> Any:
    return _generic(ctx, args, 0, _MEMBER | _NOSTORE, ctx.name)


@command("geosearch", -7, "readonly")
def geosearch(ctx: Ctx, args: list[bytes]) -> Any:
    return _generic(ctx, args, 0, _SEARCH, ctx.name)


@command("geosearchstore", -8, "write denyoom", keys=(1, 2, 1))
def geosearchstore(ctx: Ctx, args: list[bytes]) -> Any:
    return _generic(ctx, args, 1, _SEARCH | _SEARCHSTORE, ctx.name)
