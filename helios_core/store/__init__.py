"""The Store interface and its backends; domain code imports only from here."""

from helios_core.store.base import Key, Store, Subscription, Txn
from helios_core.store.embedded import EmbeddedStore

__all__ = ["Store", "Txn", "Subscription", "Key", "EmbeddedStore"]
