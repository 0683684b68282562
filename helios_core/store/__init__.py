"""The Store interface and its backends; domain code imports only from here.

`open_store(data=DIR)` / `open_store(url=URL)` gives the right backend.
`RemoteStore` is imported on first use: it needs redis-py, which an
embedded-only installation can do without.
"""

from typing import TYPE_CHECKING, Any

from helios_core.store.base import Key, Store, Subscription, Txn
from helios_core.store.embedded import EmbeddedStore
from helios_core.store.url import StoreURL, open_store, parse_store_url

if TYPE_CHECKING:
    from helios_core.store.remote import RemoteStore

__all__ = ["Store", "Txn", "Subscription", "Key", "EmbeddedStore", "RemoteStore", "StoreURL", "open_store",
           "parse_store_url"]


def __getattr__(name: str) -> Any:
    if name == "RemoteStore":
        from helios_core.store.remote import RemoteStore

        return RemoteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
