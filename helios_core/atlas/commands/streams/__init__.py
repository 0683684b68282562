"""Stream commands with Redis 7.0's semantics, replies and error texts (RESP2 and RESP3).

Every write compiles to the stream effects (effects.py, streamtype.py) as what it
decided, so replay never consults a clock.  One module a concept:

  common   the stream at a key, id parsing, reply and error shapes they all use
  add      XADD, XTRIM (and their trim options), XDEL, XSETID
  read     XLEN, XRANGE, XREVRANGE, XREAD/XREADGROUP and their blocking
  groups   XGROUP, and what XREADGROUP delivers to a consumer
  pending  XACK, XPENDING, XCLAIM, XAUTOCLAIM
  info     XINFO

Importing this package registers them all in the command table.
"""

from helios_core.atlas.commands.streams import add, groups, info, pending, read  # noqa: F401  (registration)
from helios_core.atlas.commands.streams.common import get_stream, parse_id

__all__ = ["get_stream", "parse_id"]
