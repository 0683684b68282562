"""ATLAS commands. Importing this package fills the one command table, `TABLE`."""

from helios_core.atlas.commands import connection, keys, server, strings, zsets  # noqa: F401  (registration side effects)
from helios_core.atlas.commands.table import OK, TABLE, Command, Ctx, Simple

__all__ = ["TABLE", "Command", "Ctx", "Simple", "OK"]
