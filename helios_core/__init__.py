"""HELIOS core: storage engine, domain logic and the services the CLI runs."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("helios")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"
