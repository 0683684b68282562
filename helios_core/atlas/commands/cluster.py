"""CLUSTER, READONLY, READWRITE, ASKING and WAIT, answered as a standalone redis-server 7.0 with no
replicas answers them.

atlasd is one server: no cluster mode, no replication.  These names exist because clients probe
them: a cluster-aware client (redis-py's RedisCluster, Lettuce, go-redis) sends CLUSTER SLOTS /
CLUSTER SHARDS / READONLY when it connects and falls back to a plain connection on Redis's "cluster
support disabled" error, and libraries and HELIOS's own gateway (`store.wait_replicas`) send WAIT
after a write.  An unknown-command error breaks both.

Every CLUSTER subcommand gets the refusal, CLUSTER HELP included, as in Redis 7.0 (clusterCommand
refuses before looking at the subcommand); an unknown subcommand or a wrong arity is refused first,
by the engine's lookup (the generated keyspecs.py holds Redis's subcommands and their arities).

WAIT counts the replicas that acknowledged this connection's writes: none, ever.  So it answers 0 at
once when that is enough (numreplicas <= 0) or when it may not block (inside MULTI/EXEC, where Redis
answers at once too), and otherwise parks the client on no key until the timeout (0: forever, until
CLIENT UNBLOCK or a hang-up), then answers 0: blocking.py's machinery, its `Block.timeout_reply`.
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.blocking import Block, may_block
from helios_core.atlas.commands.subcommands import BY_CONTAINER, find_sub
from helios_core.atlas.commands.table import Ctx, command, err, parse_int

__all__ = ["CLUSTER_DISABLED"]

CLUSTER_DISABLED = "ERR This instance has cluster support disabled"  # Redis 7.0's text, byte for byte

# A deadline past any clock (WAIT's timeout may be up to 2**63-1 ms, as in Redis: a wait that long is
# a wait forever).
_FOREVER_MS = 1 << 62


@command("cluster", -2, "", keys=(0, 0, 0))  # (a container: COMMAND reports no flags)
def cluster(ctx: Ctx, args: list[bytes]) -> Any:
    """Refused, every subcommand (HELP, INFO, SLOTS, KEYSLOT, ...), as a Redis 7.0 with
    cluster-enabled no refuses them; INFO cluster says cluster_enabled:0.  (The engine has checked a
    known subcommand's arity; an unknown one gets Redis's lookup error, not the refusal.)"""
    if find_sub(BY_CONTAINER["cluster"], args[0]) is None:
        raise err(f"ERR unknown subcommand '{args[0][:128].decode(errors='replace')}'. Try CLUSTER HELP.")
    raise err(CLUSTER_DISABLED)


@command("readonly", 1, "loading stale fast", keys=(0, 0, 0))
def readonly(ctx: Ctx, args: list[bytes]) -> Any:
    """Refused, as by a Redis 7.0 with cluster support disabled (there are no replicas to read from)."""
    raise err(CLUSTER_DISABLED)


@command("readwrite", 1, "loading stale fast", keys=(0, 0, 0))
def readwrite(ctx: Ctx, args: list[bytes]) -> Any:
    """Refused, as by a Redis 7.0 with cluster support disabled."""
    raise err(CLUSTER_DISABLED)


@command("asking", 1, "fast", keys=(0, 0, 0))
def asking(ctx: Ctx, args: list[bytes]) -> Any:
    """Refused, as by a Redis 7.0 with cluster support disabled (nothing ever answers -ASK)."""
    raise err(CLUSTER_DISABLED)


@command("wait", 3, "noscript", keys=(0, 0, 0))
def wait(ctx: Ctx, args: list[bytes]) -> Any:
    """WAIT numreplicas timeout: 0 replicas acknowledged, at once when that satisfies numreplicas,
    else after `timeout` ms (0: until CLIENT UNBLOCK or the client hangs up)."""
    numreplicas = parse_int(args[0])
    timeout = parse_int(args[1], "ERR timeout is not an integer or out of range")
    if timeout < 0:
        raise err("ERR timeout is negative")
    if numreplicas <= 0 or not may_block(ctx, b"wait", 2):
        return 0
    deadline = min(ctx.now_ms + timeout, _FOREVER_MS) if timeout else 0
    return Block([], deadline, timeout_reply=0)
