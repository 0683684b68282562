"""A queue's settings (lease length, attempts, retry backoff) and their `jobs.queues` syntax.

Every queue runs under the `jobs.*` defaults; an entry of `jobs.queues`
("NAME key=value ...") overrides some of them for one queue.  The retry delay
after a failure is exponential backoff with *full jitter* (AWS Architecture
Blog, "Exponential Backoff And Jitter"): a uniform draw in
[0, min(cap, base * 2**(attempts-1))), which spreads a crowd of failing jobs
out instead of retrying them in lock step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from helios_core.config import JobsConfig
from helios_core.errors import ConfigError
from helios_core.jobs.model import QUEUE_NAME_RE

__all__ = ["QueuePolicy", "parse_queue_policies", "full_jitter_ms", "VISIBILITY_RANGE", "ATTEMPTS_RANGE"]

VISIBILITY_RANGE = (1, 43200)  # seconds: SQS's 12 hours
ATTEMPTS_RANGE = (1, 1000)


@dataclass(frozen=True)
class QueuePolicy:
    """A queue's settings: jobs.* defaults overridden by its jobs.queues entry."""

    visibility_timeout_s: int
    max_attempts: int
    backoff_base_ms: int
    backoff_cap_ms: int

    @classmethod
    def defaults(cls, config: JobsConfig) -> QueuePolicy:
        return cls(config.visibility_timeout_seconds, config.max_attempts, config.backoff_base_ms,
                   config.backoff_cap_ms)

    def retry_delay_ms(self, attempts: int, u: float) -> int:
        """The backoff before the next try after `attempts` deliveries; `u` a uniform draw in [0, 1)."""
        return full_jitter_ms(attempts, self.backoff_base_ms, self.backoff_cap_ms, u)


def full_jitter_ms(attempts: int, base_ms: int, cap_ms: int, u: float) -> int:
    """int(rng.uniform(0, min(cap, base * 2**(attempts-1)))) given u = rng.random().

    The draw is taken by the caller (before a transaction, which a remote store
    may run more than once) and scaled here: `uniform(a, b)` is `a + (b-a) * random()`.
    """
    exp = max(0, attempts - 1)
    ceiling = cap_ms if exp >= 62 else min(cap_ms, base_ms << exp)
    return int(ceiling * u)


# The jobs.queues keys, their QueuePolicy field and allowed range.
_KEYS: dict[str, tuple[str, int, int | None]] = {
    "visibility_timeout_seconds": ("visibility_timeout_s", *VISIBILITY_RANGE),
    "max_attempts": ("max_attempts", *ATTEMPTS_RANGE),
    "backoff_base_ms": ("backoff_base_ms", 0, None),
    "backoff_cap_ms": ("backoff_cap_ms", 0, None),
}


def parse_queue_policies(config: JobsConfig) -> dict[str, QueuePolicy]:
    """jobs.queues entries ("NAME key=value ...") -> policies; ConfigError naming the entry when bad."""
    base = QueuePolicy.defaults(config)
    out: dict[str, QueuePolicy] = {}
    for entry in config.queues:
        name, policy = _parse_entry(entry, base)
        if name in out:
            raise _bad(entry, f"queue {name!r} has more than one entry; merge them into one")
        out[name] = policy
    return out


def _parse_entry(entry: str, base: QueuePolicy) -> tuple[str, QueuePolicy]:
    parts = entry.split() if isinstance(entry, str) else []
    if not parts:
        raise _bad(entry, 'expected "NAME key=value ...", got an empty entry')
    name = parts[0]
    if not QUEUE_NAME_RE.fullmatch(name):
        raise _bad(entry, f"queue name {name!r} must be 1-80 characters of A-Z, a-z, 0-9, '_' or '-'")
    changes: dict[str, int] = {}
    for part in parts[1:]:
        key, sep, text = part.partition("=")
        if not sep or key not in _KEYS:
            raise _bad(entry, f"{part!r} is not key=value with a key among {', '.join(_KEYS)}")
        attr, lo, hi = _KEYS[key]
        try:
            value = int(text)
        except ValueError:
            raise _bad(entry, f"{key} must be an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise _bad(entry, f"{key} must be {allowed}, got {value}")
        changes[attr] = value
    policy = replace(base, **changes)
    if policy.backoff_cap_ms < policy.backoff_base_ms and "backoff_cap_ms" in changes:
        raise _bad(entry, f"backoff_cap_ms ({policy.backoff_cap_ms}) is below backoff_base_ms "
                          f"({policy.backoff_base_ms})")
    return name, policy


def _bad(entry: object, why: str) -> ConfigError:
    return ConfigError(f"bad entry {entry!r}: {why}", key="jobs.queues")

