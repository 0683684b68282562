"""Shared settings of the fuzz tests (issue 16 §2): short in `make test`, long under `make fuzz`.

`fuzz(n)` is a hypothesis `settings` with `n` examples in the short form; with
HELIOS_FUZZ_EXAMPLES=N in the environment (what `make fuzz` sets) every test
runs N examples instead.  The variable is read at import: the suite's autouse
fixture removes HELIOS_* variables before each test runs.

No hypothesis profile is loaded: a profile is global and would change the
other suites' tests when they run in the same process.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

__all__ = ["LONG", "fuzz", "fuzz_timeout", "peak_bytes"]

LONG = int(os.environ.get("HELIOS_FUZZ_EXAMPLES", "0") or 0)


def fuzz(short: int) -> settings:
    """`short` examples (or HELIOS_FUZZ_EXAMPLES), no deadline: the machine is shared and busy."""
    return settings(max_examples=LONG or short, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])


def fuzz_timeout(short: float) -> pytest.MarkDecorator:
    """pytest-timeout for a fuzz module: `short` seconds per test, or a second per example in the long
    form (a marker outranks the command line, so `make fuzz` cannot lift it there)."""
    return pytest.mark.timeout(max(short, LONG) if LONG else short)


def peak_bytes(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn's result, the peak of Python-allocated memory while it ran, above the start)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
