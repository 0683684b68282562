"""GEO commands (GEOADD GEODIST GEOHASH GEOPOS GEOSEARCH GEOSEARCHSTORE GEORADIUS[_RO]
GEORADIUSBYMEMBER[_RO]) on a real atlasd and a real redis-server side by side, RESP2 and RESP3,
reply by reply.

Every reply (error texts, distances' "%.4f", coordinates' long double text, result order) must be
equal, and after every command the keyspace (type, the zsets' members and 52-bit scores, whether
a TTL is set) and the geo sets' OBJECT ENCODING are compared too; the helpers are
test_differential_zsets_more.py's.  The bad input comes first: wrong types, positions out of
range, unknown units, COUNT 0, ANY alone, FROM*/BY* missing or doubled, STORE with WITHDIST.
Searches near the poles and across the antimeridian, members at equal distances cut by COUNT
(Redis's partial quicksort picks which), and big sets (the cost stays Redis's: COUNT ANY stops
early).  GEOADD and the STORE forms are logged as zset effects: a restarted atlasd has the same
zsets, and keyspace notifications name them as Redis does.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_types import Pair, Raw, cased, cmd, module_pair, norm, some
from tests.integration.test_differential_zsets_more import compare_state, run, words
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

KEYS = [b"Sicily", b"g2", b"poles", b"dst", b"str", b"odd", b"nope"]


atlasd, pair = module_pair("geo")  # the daemon and both servers' connections


def check(pair: Pair, cases: list[list[bytes]], resp3: bool, keys: list[bytes] = KEYS) -> None:
    for args in cases:
        run(pair, args, resp3)
        compare_state(pair, keys)
        enc = [[b"OBJECT", b"ENCODING", k] for k in keys]
        assert pair.atlas.r2.call_many(enc) == pair.redis.r2.call_many(enc), pair.done


SETUP = words([
    ["GEOADD", "Sicily", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania",
     "12.758489", "38.788135", "edge1", "17.241510", "38.222245", "edge2"],
    ["GEOADD", "poles", "179.9", "85", "ne", "-179.9", "85", "nw", "179.95", "-85.05", "se", "-179.99", "-85",
     "sw", "0", "85.05112878", "top", "180", "0", "am1", "-180", "0", "am2", "179.999", "0.001", "am3"],
    ["SET", "str", "x"],
    ["ZADD", "odd", "-1", "neg", "inf", "pinf", "-inf", "ninf", "1.5", "frac", "9007199254740993", "big",
     "18446744073709551616", "huge", "0", "zero"],
])

# The attacker's cases first: each must fail as Redis fails, with its text, and change nothing.
BAD = words([
    ["GEOADD", "g2", "200", "10", "m"], ["GEOADD", "g2", "10", "86", "m"], ["GEOADD", "g2", "-180.0001", "0", "m"],
    ["GEOADD", "g2", "0", "-85.05112879", "m"], ["GEOADD", "g2", "x", "1", "m"], ["GEOADD", "g2", "1", "nan", "m"],
    ["GEOADD", "g2", "inf", "0", "m"], ["GEOADD", "g2", "-inf", "0", "m"], ["GEOADD", "g2", " 1", "0", "m"],
    ["GEOADD", "g2", "1e400", "0", "m"], ["GEOADD", "g2", "1", "2", "a", "200", "2", "b"], ["EXISTS", "g2"],
    ["GEOADD", "g2", "1", "2"], ["GEOADD", "g2", "1", "2", "a", "3"], ["GEOADD", "g2", "NX", "XX", "1", "2", "a"],
    ["GEOADD", "g2", "CH", "CH", "CH"], ["GEOADD", "g2", "GT", "1", "2", "a"], ["GEOADD", "g2", "NX", "1", "2"],
    ["GEOADD", "str", "1", "2", "a"], ["GEOADD", "str", "200", "2", "a"], ["GEOADD", "str", "NX", "XX", "1", "2", "a"],
    ["GEOADD"], ["GEOADD", "g2"], ["GEOADD", "g2", "1", "2"],
    ["GEOPOS", "str", "a"], ["GEOPOS"], ["GEODIST", "str", "a", "b"], ["GEODIST", "str", "a", "b", "parsec"],
    ["GEODIST", "Sicily", "Palermo", "Catania", "parsec"], ["GEODIST", "Sicily", "Palermo", "Catania", "km", "x"],
    ["GEODIST", "nope", "a", "b", "xx"], ["GEODIST", "Sicily", "Palermo"], ["GEOHASH", "str", "a"],
    ["GEOSEARCH", "str", "FROMLONLAT", "200", "0", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "200", "0", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "86", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "x", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "1", "lightyears"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "-1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "x", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "x", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "1", "x", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "-1", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "1", "-1", "yd"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "1", "1", "yd"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "COUNT", "0"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "COUNT", "-3"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "COUNT", "x"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "COUNT"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "ANY"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "ANY", "COUNT", "0"],
    ["GEOSEARCH", "Sicily", "BYRADIUS", "200", "km"], ["geosearch", "Sicily", "BYRADIUS", "200", "km"],
    ["GeoSearch", "Sicily", "FROMLONLAT", "15", "37", "ASC"], ["GEOSEARCH", "nope", "FROMMEMBER", "x", "ASC"],
    ["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "FROMLONLAT", "15", "37", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "FROMMEMBER", "Palermo", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "1", "km", "BYBOX", "1", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "1", "1", "km", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMMEMBER", "Nowhere", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMMEMBER", "Nowhere", "BYRADIUS", "x", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "1", "km", "STOREDIST"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "1", "km", "STORE", "dst"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "1", "km", "FOO"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "1"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "BYRADIUS", "1", "km"],
    ["GEOSEARCH", "Sicily", "FROMMEMBER"], ["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "BYBOX", "1", "1"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "WITHDIST"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "WITHHASH"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "WITHCOORD"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "STORE", "x"],
    ["GEOSEARCHSTORE", "dst", "str", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37"],
    ["geosearchstore", "dst", "Sicily", "BYBOX", "1", "2", "m"],
    ["GEORADIUS", "Sicily", "15", "37", "200", "km", "WITHDIST", "STORE", "dst"],
    ["GEORADIUS", "Sicily", "15", "37", "200", "km", "STOREDIST", "dst", "WITHCOORD"],
    ["GEORADIUS", "Sicily", "15", "37", "200", "km", "STORE"], ["GEORADIUS", "Sicily", "15", "37", "200", "km", "ANY"],
    ["GEORADIUS", "Sicily", "15", "37", "200"], ["GEORADIUS", "Sicily", "15", "37", "200", "au"],
    ["GEORADIUS", "Sicily", "195", "37", "200", "km"], ["GEORADIUS", "Sicily", "15", "37", "-200", "km"],
    ["GEORADIUS", "str", "195", "37", "x", "km"], ["GEORADIUS", "nope", "195", "37", "200", "km"],
    ["GEORADIUS", "Sicily", "15", "37", "200", "km", "FROMMEMBER", "Palermo"],
    ["GEORADIUS", "Sicily", "15", "37", "200", "km", "BYBOX", "1", "1", "km"],
    ["GEORADIUS_RO", "Sicily", "15", "37", "200", "km", "STORE", "dst"],
    ["GEORADIUS_RO", "Sicily", "15", "37", "200", "km", "STOREDIST", "dst"],
    ["GEORADIUSBYMEMBER", "Sicily", "Nowhere", "200", "km"], ["GEORADIUSBYMEMBER", "Sicily", "Palermo", "x", "km"],
    ["GEORADIUSBYMEMBER", "Sicily", "Palermo", "200", "pc"], ["GEORADIUSBYMEMBER", "str", "Palermo", "200", "km"],
    ["GEORADIUSBYMEMBER", "nope", "Palermo", "x", "nounit"], ["GEORADIUSBYMEMBER", "nope", "a", "x", "y", "FOO"],
    ["GEORADIUSBYMEMBER", "nope", "a", "x", "y", "WITHDIST", "STORE", "dst"],
    ["GEORADIUSBYMEMBER", "nope", "a", "x", "y", "ANY"],
    ["GEORADIUSBYMEMBER_RO", "Sicily", "Palermo", "200", "km", "STORE", "dst"],
    ["GEORADIUSBYMEMBER_RO", "nope", "Palermo", "200", "km", "STOREDIST", "dst"],
])

READS = words([
    ["GEOPOS", "Sicily", "Palermo", "Catania", "Nowhere", "edge1"], ["GEOPOS", "Sicily"], ["GEOPOS", "nope", "a"],
    ["GEOPOS", "poles", "ne", "nw", "se", "sw", "top", "am1", "am2", "am3"],
    ["GEOPOS", "odd", "neg", "pinf", "ninf", "frac", "big", "huge", "zero"],
    ["GEOHASH", "Sicily", "Palermo", "Catania", "Nowhere"], ["GEOHASH", "nope", "a", "b"], ["GEOHASH", "Sicily"],
    ["GEOHASH", "poles", "ne", "nw", "se", "sw", "top", "am1", "am2", "am3"],
    ["GEOHASH", "odd", "neg", "pinf", "ninf", "frac", "big", "huge", "zero"],
    ["GEODIST", "Sicily", "Palermo", "Catania"], ["GEODIST", "Sicily", "Palermo", "Catania", "km"],
    ["GEODIST", "Sicily", "Palermo", "Catania", "MI"], ["GEODIST", "Sicily", "Palermo", "Catania", "Ft"],
    ["GEODIST", "Sicily", "Palermo", "Catania", "m"], ["GEODIST", "Sicily", "Palermo", "Nowhere"],
    ["GEODIST", "Sicily", "Nowhere", "Palermo", "km"], ["GEODIST", "nope", "a", "b"],
    ["GEODIST", "Sicily", "Palermo", "Palermo"], ["GEODIST", "poles", "am1", "am2"], ["GEODIST", "poles", "ne", "nw"],
    ["GEODIST", "poles", "ne", "sw", "km"], ["GEODIST", "poles", "top", "ne"], ["GEODIST", "poles", "am3", "am1"],
    ["GEODIST", "odd", "neg", "pinf"], ["GEODIST", "odd", "frac", "huge", "km"], ["GEODIST", "odd", "zero", "big"],
    ["TYPE", "Sicily"], ["ZRANGE", "Sicily", "0", "-1", "WITHSCORES"], ["ZSCORE", "Sicily", "Palermo"],
])

SEARCH = words([
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "ASC"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "DESC", "WITHDIST", "WITHCOORD"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "WITHHASH", "WITHDIST", "WITHCOORD"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "COUNT", "1"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "COUNT", "2", "DESC", "WITHDIST"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "COUNT", "1", "ANY"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "ANY", "COUNT", "2", "ASC"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "COUNT", "100"],
    ["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS", "300", "km", "WITHDIST", "ASC"],
    ["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "FROMMEMBER", "Catania", "BYRADIUS", "100", "mi", "WITHDIST"],
    ["GEOSEARCH", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS", "0", "m", "WITHDIST"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "400", "400", "km", "ASC", "WITHDIST"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "200", "200", "km", "WITHCOORD"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "0", "0", "km"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "1000000", "100", "ft", "DESC"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "inf", "km", "WITHDIST"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "inf", "inf", "km", "WITHDIST"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "1e308", "mi", "WITHDIST", "ASC"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "-180", "-85.05112878", "BYRADIUS", "20000", "km", "ASC"],
    ["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "1e-300", "km"],
    ["GEOSEARCH", "poles", "FROMLONLAT", "180", "85", "BYRADIUS", "100", "km", "WITHDIST", "ASC"],
    ["GEOSEARCH", "poles", "FROMLONLAT", "-180", "85", "BYRADIUS", "500", "km", "WITHDIST", "ASC"],
    ["GEOSEARCH", "poles", "FROMLONLAT", "180", "0", "BYRADIUS", "10", "km", "WITHDIST", "ASC", "WITHCOORD"],
    ["GEOSEARCH", "poles", "FROMLONLAT", "-179.99", "0", "BYBOX", "20", "20", "km", "WITHDIST", "ASC"],
    ["GEOSEARCH", "poles", "FROMLONLAT", "0", "-85.05", "BYRADIUS", "3000", "km", "WITHDIST", "ASC"],
    ["GEOSEARCH", "poles", "FROMLONLAT", "0", "85.05112878", "BYBOX", "40000", "200", "km", "WITHDIST", "ASC"],
    ["GEOSEARCH", "poles", "FROMMEMBER", "top", "BYRADIUS", "6000", "km", "DESC"],
    ["GEOSEARCH", "poles", "FROMMEMBER", "se", "BYBOX", "100", "100", "km", "DESC", "WITHHASH"],
    ["GEOSEARCH", "odd", "FROMLONLAT", "0", "0", "BYRADIUS", "30000", "km", "WITHDIST", "WITHHASH", "WITHCOORD"],
    ["GEOSEARCH", "odd", "FROMMEMBER", "neg", "BYRADIUS", "30000", "km", "WITHDIST"],
    ["GEOSEARCH", "nope", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km"],
    ["GEORADIUS", "Sicily", "15", "37", "200", "km", "WITHDIST", "WITHCOORD", "WITHHASH", "ASC"],
    ["GEORADIUS", "Sicily", "15", "37", "100", "mi", "COUNT", "1", "DESC"],
    ["georadius", "Sicily", "15", "37", "200", "KM", "withdist", "asc", "count", "3", "any"],
    ["GEORADIUS_RO", "Sicily", "15", "37", "200", "km", "WITHDIST", "ASC"],
    ["GEORADIUSBYMEMBER", "Sicily", "Palermo", "200", "km", "WITHDIST", "ASC"],
    ["GEORADIUSBYMEMBER_RO", "Sicily", "Catania", "100", "mi", "WITHCOORD", "DESC", "COUNT", "2"],
    ["GEORADIUS", "nope", "15", "37", "200", "km"], ["GEORADIUSBYMEMBER", "nope", "a", "x", "y", "WITHDIST"],
])

STORE = words([
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km"],
    ["ZRANGE", "dst", "0", "-1", "WITHSCORES"], ["OBJECT", "ENCODING", "dst"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "km", "STOREDIST"],
    ["ZRANGE", "dst", "0", "-1", "WITHSCORES"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "200", "mi", "STOREDIST", "COUNT", "1"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMMEMBER", "Palermo", "BYBOX", "500", "500", "km", "DESC", "COUNT", "2"],
    ["EXPIRE", "dst", "100"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "300", "km", "STOREDIST"],
    ["TTL", "dst"], ["SET", "dst", "x"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "300", "km"], ["TYPE", "dst"],
    ["GEOSEARCHSTORE", "dst", "Sicily", "FROMLONLAT", "-100", "37", "BYRADIUS", "300", "km"], ["EXISTS", "dst"],
    ["SET", "dst", "x"], ["GEOSEARCHSTORE", "dst", "nope", "FROMLONLAT", "15", "37", "BYRADIUS", "3", "km"],
    ["EXISTS", "dst"], ["GEOSEARCHSTORE", "dst", "nope", "FROMMEMBER", "x", "BYRADIUS", "3", "km"],
    ["GEOSEARCHSTORE", "Sicily", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS", "3", "km"],
    ["ZRANGE", "Sicily", "0", "-1", "WITHSCORES"],
    ["GEOADD", "g2", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania"],
    ["GEORADIUS", "g2", "15", "37", "200", "km", "STORE", "dst"], ["ZRANGE", "dst", "0", "-1", "WITHSCORES"],
    ["GEORADIUS", "g2", "15", "37", "200", "km", "STOREDIST", "dst", "ASC", "COUNT", "1"],
    ["GEORADIUS", "g2", "15", "37", "200", "km", "STORE", "x", "STOREDIST", "dst"],
    ["GEORADIUS", "g2", "15", "37", "200", "km", "STOREDIST", "x", "STORE", "dst"], ["EXISTS", "x"],
    ["GEORADIUSBYMEMBER", "g2", "Palermo", "500", "km", "STORE", "dst", "DESC"],
    ["GEORADIUSBYMEMBER", "nope", "Palermo", "x", "y", "STORE", "dst"], ["EXISTS", "dst"],
    ["GEORADIUS", "nope", "15", "37", "200", "km", "STORE", "dst"],
    # On one meridian Redis measures the arc along it (not the full haversine): STOREDIST shows the last bits.
    ["GEOADD", "g2", "15", "10", "ma", "15", "-80", "mb", "15", "-30", "mc", "15", "60", "md", "15.5", "10", "me",
     "15", "45", "mf", "15", "3", "mg"],
    ["GEOSEARCHSTORE", "dst", "g2", "FROMMEMBER", "ma", "BYRADIUS", "20000", "km", "STOREDIST"],
    ["ZRANGE", "dst", "0", "-1", "WITHSCORES"],
    ["GEOSEARCHSTORE", "dst", "g2", "FROMMEMBER", "mc", "BYBOX", "10000", "20000", "mi", "STOREDIST", "DESC"],
    ["GEOSEARCHSTORE", "dst", "g2", "FROMMEMBER", "mf", "BYRADIUS", "9000", "km", "STOREDIST"],
    ["ZRANGE", "dst", "0", "-1", "WITHSCORES"], ["GEODIST", "g2", "ma", "md"], ["GEODIST", "g2", "mc", "md", "ft"],
])

ADD = words([
    ["GEOADD", "g2", "1", "2", "a", "3", "4", "b"], ["GEOADD", "g2", "1", "2", "a"],
    ["GEOADD", "g2", "CH", "1", "3", "a"],
    ["GEOADD", "g2", "NX", "9", "9", "a", "5", "5", "c"], ["GEOADD", "g2", "XX", "CH", "8", "8", "a", "6", "6", "d"],
    ["GEOADD", "g2", "xx", "nx", "1", "1", "a"], ["GEOADD", "g2", "ch", "xx", "ch", "7", "7", "a"],
    ["GEOADD", "g3", "XX", "1", "1", "a"], ["EXISTS", "g3"], ["GEOADD", "g2", "1", "1", "z", "2", "2", "z"],
    ["GEOADD", "g2", "180", "85.05112878", "corner", "-180", "-85.05112878", "corner2"],
    ["GEOADD", "g2", "-0", "-0", "origin"], ["GEOPOS", "g2", "a", "b", "c", "z", "corner", "corner2", "origin"],
    ["GEOHASH", "g2", "corner", "corner2", "origin"], ["ZRANGE", "g2", "0", "-1", "WITHSCORES"],
    ["OBJECT", "ENCODING", "g2"], ["ZCARD", "g2"], ["ZREM", "g2", "a"], ["GEOADD", "g2", "0x10", "1e1", "hex"],
    ["GEOPOS", "g2", "hex"], ["EXPIRE", "g2", "100"], ["GEOADD", "g2", "1", "1", "q"], ["TTL", "g2"],
])


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@pytest.mark.parametrize("cases", [BAD, READS, SEARCH, STORE, ADD], ids=["bad", "reads", "search", "store", "add"])
def test_fixed_cases(pair: Pair, resp3: bool, cases: list[list[bytes]]) -> None:
    pair.reset()
    for args in SETUP:
        run(pair, args, False)
    check(pair, cases, resp3, KEYS + [b"g3", b"x"])


def _add_many(pair: Pair, key: bytes, points: list[tuple[str, str, str]]) -> None:
    for i in range(0, len(points), 200):
        args = [b"GEOADD", key] + [w.encode() for p in points[i:i + 200] for w in p]
        run(pair, args, False)


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_equal_distances_cut_by_count(pair: Pair, resp3: bool) -> None:
    """Members at the same places: which of the equally distant ones COUNT keeps, and their order, is
    Redis's partial quicksort's (and a stable sort's for a whole answer)."""
    pair.reset()
    spots = [("10", "10"), ("10.001", "10"), ("9.999", "10"), ("10", "10.001"), ("10", "9.999")]
    points = [(lon, lat, f"m{i:03d}") for i in range(60) for lon, lat in [spots[i % len(spots)]]]
    _add_many(pair, b"ties", points)
    cases: list[list[bytes]] = []
    for count in ("1", "3", "7", "8", "12", "13", "41", "59", "60", "61"):
        for order in ("ASC", "DESC"):
            cases.append(words([["GEOSEARCH", "ties", "FROMLONLAT", "10", "10", "BYRADIUS", "1", "km", order,
                                 "COUNT", count, "WITHDIST"]])[0])
        cases.append(words([["GEOSEARCH", "ties", "FROMLONLAT", "10", "10", "BYRADIUS", "1", "km", "COUNT", count,
                             "ANY"]])[0])
        cases.append(words([["GEOSEARCHSTORE", "dst", "ties", "FROMLONLAT", "10.0004", "10", "BYBOX", "1", "1", "km",
                             "COUNT", count, "STOREDIST"]])[0])
    cases += words([["GEOSEARCH", "ties", "FROMMEMBER", "m000", "BYRADIUS", "1", "km", "ASC"],
                    ["GEOSEARCH", "ties", "FROMMEMBER", "m001", "BYRADIUS", "1", "km", "DESC"],
                    ["GEORADIUS", "ties", "10", "10", "1", "km"]])
    check(pair, cases, resp3, [b"ties", b"dst"])


@pytest.mark.parametrize("seed", range(10))
def test_equal_distance_groups_cut_by_count(pair: Pair, seed: int) -> None:
    """Members spread over a few places, the centre on one of them, searched over the world: groups of
    equal distances at several radii, and COUNT cutting through them.  Redis's pqsort has no switch
    to insertion sort when a partition moves nothing, unlike the NetBSD code it comes from: these
    layouts tell the two apart."""
    import random
    pair.reset()
    rnd = random.Random(seed * 7919 + 19)
    spots = [(f"{rnd.uniform(-180, 180):.6f}", f"{rnd.uniform(-85, 85):.6f}") for _ in range(rnd.randint(5, 40))]
    points = [(*rnd.choice(spots), f"m{i:03d}") for i in range(rnd.randint(20, 120))]
    _add_many(pair, b"ties", points)
    lon, lat = rnd.choice(spots)
    cases = [[b"GEOSEARCH", b"ties", b"FROMLONLAT", lon.encode(), lat.encode(), b"BYRADIUS", b"20000", b"km",
              b"COUNT", b"%d" % k, order, b"WITHDIST"]
             for k in (1, 2, 3, 4, 5, 8, 13, len(points) - 1) for order in (b"ASC", b"DESC")]
    cases.append([b"GEOSEARCHSTORE", b"dst", b"ties", b"FROMLONLAT", lon.encode(), lat.encode(), b"BYBOX", b"40000",
                  b"40000", b"km", b"COUNT", b"6", b"STOREDIST"])
    check(pair, cases, False, [b"ties", b"dst"])


def test_big_sets_cost_what_redis_costs(pair: Pair) -> None:
    """A few thousand members, a radius that covers the world: the same answers, COUNT ANY stops at
    once, and a whole-world search stays a scan of the set (no worse than linear in Python)."""
    pair.reset()
    points = [(f"{-179 + (i * 7.3) % 358:.5f}", f"{-84 + (i * 3.1) % 168:.5f}", f"p{i}") for i in range(3000)]
    _add_many(pair, b"big", points)
    cases = words([
        ["GEOSEARCH", "big", "FROMLONLAT", "0", "0", "BYRADIUS", "1000", "km", "ASC", "WITHDIST"],
        ["GEOSEARCH", "big", "FROMLONLAT", "0", "0", "BYRADIUS", "40000", "km", "COUNT", "5", "WITHDIST"],
        ["GEOSEARCH", "big", "FROMLONLAT", "0", "0", "BYRADIUS", "40000", "km", "COUNT", "5", "ANY"],
        ["GEOSEARCH", "big", "FROMLONLAT", "170", "80", "BYBOX", "5000", "3000", "km", "DESC", "COUNT", "20"],
        ["GEOSEARCHSTORE", "dst", "big", "FROMLONLAT", "0", "0", "BYRADIUS", "40000", "km", "STOREDIST"],
        ["ZCARD", "dst"], ["OBJECT", "ENCODING", "dst"], ["OBJECT", "ENCODING", "big"],
        ["GEORADIUS", "big", "-170", "-80", "2000", "km", "COUNT", "3", "DESC", "WITHCOORD"],
    ])
    for args in cases:
        run(pair, args, False)
    compare_state(pair, [b"big", b"dst"])
    conn = pair.atlas.r2
    t0 = time.monotonic()
    conn.call(words([["GEOSEARCH", "big", "FROMLONLAT", "0", "0", "BYRADIUS", "40000", "km", "COUNT", "1",
                      "ANY"]])[0])
    any_s = time.monotonic() - t0
    t0 = time.monotonic()
    conn.call(words([["GEOSEARCH", "big", "FROMLONLAT", "0", "0", "BYRADIUS", "40000", "km", "ASC"]])[0])
    all_s = time.monotonic() - t0
    assert any_s < 0.05 and all_s < 2.0, (any_s, all_s)


def test_command_info_matches(pair: Pair) -> None:
    names = [b"geoadd", b"geodist", b"geohash", b"geopos", b"georadius", b"georadius_ro", b"georadiusbymember",
             b"georadiusbymember_ro", b"geosearch", b"geosearchstore"]
    for args in ([b"COMMAND", b"INFO", *names], [b"ACL", b"CAT", b"geo"],
                 [b"COMMAND", b"GETKEYS", b"GEORADIUS", b"src", b"1", b"2", b"3", b"km", b"STORE", b"d"],
                 [b"COMMAND", b"GETKEYS", b"GEOSEARCHSTORE", b"d", b"s", b"FROMMEMBER", b"m", b"BYRADIUS", b"1", b"m"],
                 [b"COMMAND", b"LIST", b"FILTERBY", b"ACLCAT", b"geo"]):
        got, want = norm(pair.atlas.r3.call(args)), norm(pair.redis.r3.call(args))
        if args[1] in (b"CAT", b"LIST"):
            got, want = ("*", sorted(got[1])), ("*", sorted(want[1]))
        assert got == want, args


# -- keyspace notifications ------------------------------------------------------------------------

EVENTS = words([
    ["GEOADD", "n1", "1", "2", "a", "3", "4", "b"], ["GEOADD", "n1", "NX", "1", "2", "a"],
    ["GEOADD", "n1", "XX", "CH", "5", "5", "a"], ["GEOADD", "n2", "XX", "1", "1", "a"],
    ["GEOSEARCHSTORE", "d1", "n1", "FROMLONLAT", "1", "2", "BYRADIUS", "2000", "km"],
    ["GEOSEARCHSTORE", "d1", "n1", "FROMLONLAT", "1", "2", "BYRADIUS", "2000", "km", "STOREDIST"],
    ["SET", "d2", "x"], ["GEOSEARCHSTORE", "d2", "n1", "FROMLONLAT", "1", "2", "BYRADIUS", "2000", "km"],
    ["GEOSEARCHSTORE", "d1", "n1", "FROMLONLAT", "100", "2", "BYRADIUS", "1", "km"],
    ["GEOSEARCHSTORE", "d1", "n1", "FROMLONLAT", "100", "2", "BYRADIUS", "1", "km"],
    ["GEOSEARCHSTORE", "d2", "nope", "FROMLONLAT", "100", "2", "BYRADIUS", "1", "km"],
    ["GEORADIUS", "n1", "1", "2", "2000", "km", "STORE", "d3"],
    ["GEORADIUS", "n1", "1", "2", "2000", "km", "STORE", "d3"],
    ["GEORADIUSBYMEMBER", "n1", "a", "2000", "km", "STOREDIST", "d4"], ["GEORADIUS", "n1", "1", "2", "2000", "km"],
    ["GEOSEARCH", "n1", "FROMLONLAT", "1", "2", "BYRADIUS", "2000", "km"], ["GEOPOS", "n1", "a"],
])


@pytest.mark.parametrize("flags", ["KEA", "KEn", "Kz", "Eg"])
def test_keyspace_notifications_match(pair: Pair, atlasd: Daemon, redis_server: RedisServer,  # noqa: F811
                                      flags: str) -> None:
    pair.reset()
    streams = []
    for side, port, pw in ((pair.atlas, atlasd.port, atlasd.password), (pair.redis, redis_server.port, None)):
        side.r2.call(words([["CONFIG", "SET", "notify-keyspace-events", flags]])[0])
        sub = Raw(port, pw, False)
        try:
            assert sub.call(words([["PSUBSCRIBE", "__key*__:*", "marker"]])[0])[0] == "*"
            sub._read()
            replies = side.r2.call_many(EVENTS)
            side.r2.call(words([["PUBLISH", "marker", "end"]])[0])
            out = []
            while True:
                _, items = sub._read()
                vals = [v for _, v in items]
                if vals[2] == b"marker":
                    break
                out.append((vals[2], vals[3]))
            streams.append(([norm(r) for r in replies], out))
        finally:
            sub.close()
            side.r2.call(words([["CONFIG", "SET", "notify-keyspace-events", ""]])[0])
    assert streams[0] == streams[1]


# -- random programs ------------------------------------------------------------------------------

gkey = st.sampled_from([b"g1", b"g1", b"g2", b"str", b"nope"])
member = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"zz"])
lon = st.one_of(st.sampled_from([b"0", b"10", b"10.001", b"-179.99", b"180", b"-180", b"181", b"x", b"9.5"]),
                st.floats(-180, 180, allow_nan=False).map(lambda f: b"%.6f" % f))
lat = st.one_of(st.sampled_from([b"0", b"10", b"85.05112878", b"-85.05112878", b"85.06", b"-90", b"9.999"]),
                st.floats(-85, 85, allow_nan=False).map(lambda f: b"%.6f" % f))
unit = st.sampled_from([b"m", b"km", b"KM", b"mi", b"ft", b"yd"])
dist = st.sampled_from([b"0", b"1", b"150", b"1000", b"20000", b"-1", b"x"])
opts = st.lists(st.one_of(
    st.sampled_from([[b"WITHDIST"], [b"WITHCOORD"], [b"WITHHASH"], [b"ASC"], [b"desc"], [b"ANY"]]),
    st.tuples(cased(b"COUNT"), st.sampled_from([b"1", b"2", b"3", b"0", b"50"])).map(list)),
    max_size=3).map(lambda xs: [b for x in xs for b in x])
store_opts = st.lists(st.one_of(
    st.sampled_from([[b"ASC"], [b"DESC"], [b"ANY"], [b"STOREDIST"], [b"WITHDIST"]]),
    st.tuples(cased(b"COUNT"), st.sampled_from([b"1", b"2", b"0"])).map(list)),
    max_size=3).map(lambda xs: [b for x in xs for b in x])
origin = st.one_of(st.tuples(cased(b"FROMMEMBER"), member).map(list),
                   st.tuples(cased(b"FROMLONLAT"), lon, lat).map(list))
area = st.one_of(st.tuples(cased(b"BYRADIUS"), dist, unit).map(list),
                 st.tuples(cased(b"BYBOX"), dist, dist, unit).map(list))
triples = some(st.tuples(lon, lat, member).map(list), 1, 3).map(lambda xs: [b for x in xs for b in x])
radius_store = st.sampled_from([[], [], [b"STORE", b"dst"], [b"STOREDIST", b"dst"]])
GCMDS = [
    cmd(b"GEOADD", gkey, st.sampled_from([[], [b"NX"], [b"XX"], [b"CH"], [b"XX", b"CH"]]), triples),
    cmd(b"GEOPOS", gkey, some(member, 0, 3)), cmd(b"GEOHASH", gkey, some(member, 0, 3)),
    cmd(b"GEODIST", gkey, member, member, st.sampled_from([[], [b"km"], [b"mi"], [b"yd"]])),
    cmd(b"GEOSEARCH", gkey, origin, area, opts),
    cmd(b"GEOSEARCHSTORE", st.sampled_from([b"dst", b"g2", b"str"]), gkey, origin, area, store_opts),
    cmd(b"GEORADIUS", gkey, lon, lat, dist, unit, opts, radius_store),
    cmd(b"GEORADIUS_RO", gkey, lon, lat, dist, unit, opts),
    cmd(b"GEORADIUSBYMEMBER", gkey, member, dist, unit, opts, radius_store),
    cmd(b"GEORADIUSBYMEMBER_RO", gkey, member, dist, unit, opts),
    cmd(b"ZREM", gkey, member), cmd(b"ZADD", gkey, st.sampled_from([b"-1", b"1e20", b"3479099956230698"]), member),
]
programs = st.lists(st.tuples(st.one_of(*GCMDS), st.booleans()), min_size=1, max_size=12)
RKEYS = [b"g1", b"g2", b"dst", b"str", b"nope"]
RSETUP = words([["GEOADD", "g1", "10", "10", "a", "10.001", "10", "b", "9.999", "10", "c", "10", "10", "d"],
                ["SET", "str", "x"]])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=programs)
def test_random_programs_match_redis_state_by_state(pair: Pair, program: list[tuple[list[bytes], bool]]) -> None:
    pair.reset()
    for args in RSETUP:
        run(pair, args, False)
    for args, resp3 in program:
        run(pair, args, resp3)
        compare_state(pair, RKEYS)


# -- the AOF replays the same zsets -----------------------------------------------------------------

def test_restart_replays_the_same_geo_sets(tmp_path_factory: pytest.TempPathFactory) -> None:
    import redis
    data = tmp_path_factory.mktemp("geo-aof")
    script = [
        ["GEOADD", "Sicily", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania"],
        ["GEOADD", "Sicily", "CH", "13.5", "38", "Palermo", "12", "37", "Marsala"],
        ["GEOADD", "many"] + [w for i in range(200) for w in (str(i * 0.5 - 50), str(i * 0.2 - 20), f"m{i}")],
        ["GEOSEARCHSTORE", "near", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "300", "km", "STOREDIST"],
        ["GEOSEARCHSTORE", "near2", "many", "FROMLONLAT", "0", "0", "BYBOX", "3000", "3000", "km"],
        ["GEORADIUS", "Sicily", "15", "37", "300", "km", "STORE", "near3"],
        ["SET", "gone", "x"], ["GEORADIUS", "Sicily", "100", "37", "1", "km", "STORE", "gone"],
    ]
    keys = ["Sicily", "many", "near", "near2", "near3", "gone"]

    def snapshot(r: redis.Redis) -> list:
        return [(r.type(k), r.zrange(k, 0, -1, withscores=True), r.object("encoding", k)) for k in keys]

    with running_daemon(data) as d:
        r = redis.Redis(port=d.port, password=d.password)
        for c in script:
            r.execute_command(*c)
        want = snapshot(r)
        r.close()
    assert want[0][1] and want[2][1] and want[3][1] and want[5][0] == b"none"
    with running_daemon(data) as d:
        r = redis.Redis(port=d.port, password=d.password)
        assert snapshot(r) == want
        r.close()
