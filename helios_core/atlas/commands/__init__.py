"""ATLAS commands. Importing this package fills the one command table, `TABLE`."""

from helios_core.atlas.commands import (  # noqa: F401  (registration side effects)
    acl,
    bitmaps,
    cluster,
    config,
    connection,
    databases,
    docs,
    functions,
    geo,
    hashes,
    hyperloglog,
    keys,
    lists,
    modules,
    scripting,
    server,
    sets,
    sort,
    streams,
    strings,
    zblocking,
    zsetops,
    zsets,
)
from helios_core.atlas.commands.table import OK, TABLE, Command, Ctx, Simple

__all__ = ["TABLE", "Command", "Ctx", "Simple", "OK"]
