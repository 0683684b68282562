"""HELIOS configuration: schema, YAML loading, environment and CLI overrides.

The schema is a set of frozen dataclasses, one per section of the YAML file,
gathered as fields of `HeliosConfig`.  To add a section, write its dataclass
(every field with a default and a `setting(...)` metadata) and add one field
to `HeliosConfig`; loading, environment variables, validation, error
messages and `config_to_dict` follow from the schema.

Precedence, lowest first::

    dataclass defaults < YAML file < HELIOS_<SECTION>__<KEY> env vars < overrides

Values from YAML must already have the right type (``true`` is not ``1``,
``"10"`` is not ``10``); values from the environment and from string
overrides are parsed by the field's type.  Every mistake raises `ConfigError`
naming where it was made (file and line, or environment variable), the dotted
key, what was wrong and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from helios_core.errors import ConfigError
from helios_core.observability.logging import FORMATS as LOG_FORMATS
from helios_core.observability.logging import LEVELS as LOG_LEVELS

__all__ = [
    "ENV_PREFIX",
    "LogConfig",
    "AtlasConfig",
    "AtlasdConfig",
    "GatewayConfig",
    "AuthConfig",
    "RateLimitConfig",
    "JobsConfig",
    "GatewayProxyConfig",
    "TracingConfig",
    "TRACING_EXPORTERS",
    "StoreConfig",
    "HeliosConfig",
    "setting",
    "load_config",
    "config_to_dict",
    "schema_keys",
]

ENV_PREFIX = "HELIOS_"
_ENV_SEPARATOR = "__"
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def setting(
    doc: str,
    *,
    choices: Sequence[str] | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    example: str | None = None,
) -> dict[str, Any]:
    """Field metadata: a one-line doc and the constraints the loader enforces.

    `minimum`/`maximum` apply to every integer in the value, including the
    integers inside a list.  `example` shows the YAML spelling in error
    messages for types that are not obvious.
    """
    return {
        "doc": doc,
        "choices": tuple(choices) if choices is not None else None,
        "minimum": minimum,
        "maximum": maximum,
        "example": example,
    }


class _Section:
    """Base of every section dataclass: validates the values it is built with."""

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        section = _SECTION_NAMES.get(type(self), type(self).__name__)
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            problem = _problem(f, hints[f.name], getattr(self, f.name))
            if problem is not None:
                raise ConfigError(problem, key=f"{section}.{f.name}")


@dataclass(frozen=True)
class LogConfig(_Section):
    level: str = field(default="info", metadata=setting("Lowest level written.", choices=tuple(LOG_LEVELS)))
    format: str = field(
        default="console",
        metadata=setting("json: one JSON object per line; console: readable text.", choices=LOG_FORMATS),
    )


@dataclass(frozen=True)
class AtlasConfig(_Section):
    appendfsync: str = field(
        default="always",
        metadata=setting(
            "When the AOF is fsynced: after every write, once a second, or left to the OS.",
            choices=("always", "everysec", "no"),
        ),
    )
    aof_truncate_torn_tail: bool = field(
        default=True,
        metadata=setting("On start, cut off a partly written last AOF record instead of refusing to load."),
    )
    max_value_bytes: int = field(
        default=536870912, metadata=setting("Largest value a single write may store.", minimum=1)
    )
    save: tuple[tuple[int, int], ...] = field(
        default=((3600, 1), (300, 100), (60, 10000)),
        metadata=setting(
            "Snapshot after SECONDS if at least CHANGES writes happened; an empty list disables.",
            minimum=1,
            example='["3600 1", "300 100"]',
        ),
    )
    snapshot_on_aof_bytes: int = field(
        default=67108864,
        metadata=setting(
            "Also snapshot when the active AOF grows past this many bytes; 0 disables.", minimum=0
        ),
    )
    active_expire_hz: int = field(
        default=10, metadata=setting("Active expiry cycles per second.", minimum=1, maximum=500)
    )
    active_expire_budget: int = field(
        default=200, metadata=setting("Most keys one active expiry cycle examines.", minimum=1)
    )
    script_kill_after_ms: int = field(
        default=60000,
        metadata=setting(
            "A Lua script (EVAL, FCALL) still running after this many ms is killed and its writes undone, "
            "even one SCRIPT KILL cannot stop; 0: never.  (Others get BUSY from busy-reply-threshold on.)",
            minimum=0,
        ),
    )


@dataclass(frozen=True)
class AtlasdConfig(_Section):
    bind: str = field(
        default="127.0.0.1",
        metadata=setting("Addresses the TCP listener binds, space-separated (e.g. \"127.0.0.1 ::1\")."),
    )
    port: int = field(
        default=6380, metadata=setting("TCP port for RESP clients; 0: unix socket only.", minimum=0, maximum=65535)
    )
    requirepass: str = field(
        default="", metadata=setting("Password clients must AUTH with; empty: no password (protected mode).")
    )
    protected_mode: bool = field(
        default=True,
        metadata=setting("Without a password, serve only loopback and unix-socket clients."),
    )
    maxclients: int = field(
        default=10000, metadata=setting("Most clients connected at once; others are refused.", minimum=1)
    )
    pubsub_output_limit: int = field(
        default=33554432,
        metadata=setting(
            "Bytes of unsent messages after which a subscriber that does not read is disconnected; 0: no limit.",
            minimum=0,
        ),
    )
    metrics_port: int = field(
        default=0,
        metadata=setting("Port serving Prometheus metrics at /metrics; 0 disables.", minimum=0, maximum=65535),
    )
    shutdown_timeout: int = field(
        default=10,
        metadata=setting("Seconds a graceful shutdown waits for in-flight replies.", minimum=1),
    )
    tls_cert: str = field(
        default="",
        metadata=setting("PEM certificate file; with tls_key, the TCP port speaks TLS (the unix socket stays plain)."),
    )
    tls_key: str = field(default="", metadata=setting("PEM private key file for tls_cert."))
    maxmemory: int = field(
        default=0,
        metadata=setting("Bytes the keyspace may use (atlasd's estimate, see MEMORY USAGE); above it, keys are "
                         "evicted per maxmemory_policy or writes refused; 0: no limit.", minimum=0),
    )
    maxmemory_policy: str = field(
        default="noeviction",
        metadata=setting("What goes when maxmemory is reached (Redis's policies, approximated by sampling).",
                         choices=("noeviction", "allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-lfu",
                                  "allkeys-random", "volatile-random", "volatile-ttl")),
    )
    databases: int = field(
        default=16,
        metadata=setting("Numbered databases (SELECT 0..N-1), as Redis's `databases`; an unused one costs "
                         "a list slot.", minimum=1, maximum=10000),
    )


@dataclass(frozen=True)
class GatewayConfig(_Section):
    bind: str = field(default="127.0.0.1", metadata=setting("Address the gateway listens on."))
    port: int = field(
        default=8080, metadata=setting("TCP port; 0 picks a free one (printed at start).", minimum=0, maximum=65535)
    )
    max_body_bytes: int = field(
        default=1048576,
        metadata=setting("Largest request body (and so KV value); larger ones get 413.", minimum=1),
    )
    max_header_bytes: int = field(
        default=16384, metadata=setting("Largest request head (request line and headers).", minimum=1024)
    )
    idle_timeout_seconds: int = field(
        default=60,
        metadata=setting("Close a connection that sends no complete request head for this long.", minimum=1),
    )
    body_timeout_seconds: int = field(
        default=30, metadata=setting("Close a connection whose request body takes longer than this.", minimum=1)
    )
    shutdown_timeout_seconds: int = field(
        default=30, metadata=setting("On SIGTERM, wait this long for in-flight requests.", minimum=0)
    )
    trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            "Addresses or CIDR networks whose X-Forwarded-For is believed.", example='["10.0.0.0/8"]'
        ),
    )
    access_log: bool = field(default=True, metadata=setting("Write one log line per request."))
    kv_page_max: int = field(
        default=1000, metadata=setting("Most keys one KV listing page returns.", minimum=1)
    )
    tls_cert: str = field(default="", metadata=setting("PEM certificate file; with tls_key, serve HTTPS."))
    tls_key: str = field(default="", metadata=setting("PEM private key file for tls_cert."))
    workers: int = field(
        default=1,
        metadata=setting(
            "Gateway processes sharing the port (SO_REUSEPORT) and the store; with --data and more than "
            "one, an atlasd child process owns the directory.",
            minimum=1,
        ),
    )


@dataclass(frozen=True)
class AuthConfig(_Section):
    open_registration: bool = field(
        default=False, metadata=setting("Let anyone create an account with POST /api/v1/auth/register.")
    )
    default_roles: tuple[str, ...] = field(
        default=("user",), metadata=setting("Roles given to a self-registered user.", example='["user"]')
    )
    jwt_algorithms: tuple[str, ...] = field(
        default=("HS256",),
        metadata=setting(
            "Algorithms a token may be signed with (allow-list); the first signing key's is used to sign.",
            example='["HS256"]',
        ),
    )
    jwt_keys: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            "Signing keys as KID=SECRET or KID=file:PEM; the first signs, all verify. "
            "Empty: a secret generated once into the data directory.",
            example='["k2=a-32-byte-or-longer-secret....", "k1=file:/etc/helios/old.pem"]',
        ),
    )
    jwt_issuer: str = field(default="helios", metadata=setting("The iss claim issued and required."))
    jwt_audience: str = field(default="helios", metadata=setting("The aud claim issued and required."))
    access_token_seconds: int = field(
        default=900, metadata=setting("Lifetime of an access token.", minimum=10)
    )
    refresh_token_seconds: int = field(
        default=2592000, metadata=setting("Lifetime of a refresh token (renewed on each refresh).", minimum=60)
    )
    api_token_max_seconds: int = field(
        default=31536000,
        metadata=setting("Longest lifetime of an API token (helios user token; POST /admin/users/{username}/tokens).",
                         minimum=60),
    )
    clock_skew_seconds: int = field(
        default=10, metadata=setting("Leeway when checking exp, nbf and iat.", minimum=0, maximum=300)
    )
    bcrypt_cost: int = field(default=12, metadata=setting("bcrypt work factor.", minimum=4, maximum=31))
    min_password_length: int = field(
        default=12, metadata=setting("Shortest password accepted when one is set (all-whitespace and very common "
                                     "passwords are refused too).", minimum=1))
    login_failures_per_user: tuple[int, int] = field(
        default=(5, 300),
        metadata=setting("Failed logins of one username from one address (COUNT) before each further try from "
                         "there waits 1 s, then 2, 4 ... up to SECONDS (429 meanwhile); forgotten after SECONDS "
                         "without a failure. Per username from all addresses, 10 x COUNT per SECONDS: beyond "
                         "that every address that failed waits, but a new one still gets its try.", minimum=1,
                         example='"5 300"'),
    )
    login_failures_per_client: tuple[int, int] = field(
        default=(20, 300),
        metadata=setting("Failed logins allowed per client address: COUNT per SECONDS, then 429.", minimum=1,
                         example='"20 300"'),
    )
    audit_max_entries: int = field(
        default=100000, metadata=setting("Audit log entries kept (oldest dropped first).", minimum=100)
    )


@dataclass(frozen=True)
class RateLimitConfig(_Section):
    enabled: bool = field(default=True, metadata=setting("Apply the request rate limit."))
    default: tuple[int, int] = field(
        default=(600, 60),
        metadata=setting("Requests per client: LIMIT per SECONDS (a token bucket).", minimum=1, example='"600 60"'),
    )
    roles: tuple[str, ...] = field(
        default=(),
        metadata=setting("Per-role limits as \"ROLE LIMIT SECONDS\"; a user gets the largest of their roles'. "
                         "The pseudo-role \"unauthenticated\" limits callers without a valid token (every 401 "
                         "included), per address.",
                         example='["admin 6000 60", "unauthenticated 120 60"]'),
    )
    clients: tuple[str, ...] = field(
        default=(),
        metadata=setting("Per-client limits as \"user:NAME LIMIT SECONDS\" or \"ip:ADDR LIMIT SECONDS\".",
                         example='["ip:10.0.0.5 60 60"]'),
    )


@dataclass(frozen=True)
class JobsConfig(_Section):
    max_payload_bytes: int = field(
        default=262144, metadata=setting("Largest job payload (JSON, encoded) and result; larger ones get 413.",
                                         minimum=1)
    )
    visibility_timeout_seconds: int = field(
        default=30, metadata=setting("Lease length when the worker asks for none.", minimum=1, maximum=43200)
    )
    max_attempts: int = field(
        default=5, metadata=setting("Deliveries of a job before it fails into the DLQ.", minimum=1, maximum=1000)
    )
    backoff_base_ms: int = field(
        default=1000, metadata=setting("Retry delay after the first failure (doubles each attempt, full jitter).",
                                       minimum=0)
    )
    backoff_cap_ms: int = field(
        default=300000, metadata=setting("Longest retry delay.", minimum=0)
    )
    dedup_window_seconds: int = field(
        default=300, metadata=setting("How long a dedup_id returns the job it first made.", minimum=1)
    )
    done_retention_seconds: int = field(
        default=604800, metadata=setting("How long DONE and CANCELLED jobs (and results) are kept.", minimum=1)
    )
    dlq_retention_seconds: int = field(
        default=1209600, metadata=setting("How long FAILED jobs stay in the dead-letter queue.", minimum=1)
    )
    strict_queues: bool = field(
        default=False,
        metadata=setting("Only queues named in jobs.queues exist; otherwise a queue exists once enqueued to."),
    )
    max_queues: int = field(
        default=1000,
        metadata=setting("Most live queues (holding jobs); an enqueue that would make one more gets 429. "
                         "Queues named in jobs.queues are always accepted.", minimum=1),
    )
    queues: tuple[str, ...] = field(
        default=(),
        metadata=setting(
            "Per-queue settings as \"NAME key=value ...\" (keys: visibility_timeout_seconds, max_attempts, "
            "backoff_base_ms, backoff_cap_ms).",
            example='["emails max_attempts=10 backoff_base_ms=2000"]',
        ),
    )


@dataclass(frozen=True)
class GatewayProxyConfig(_Section):
    # Named apart from helios_core.proxy.model.ProxyConfig (routes and pools): this section only says
    # whether `helios gateway` proxies, and where its routes come from.
    enabled: bool = field(
        default=False,
        metadata=setting("Let helios gateway proxy every path outside /api/, /admin/ and its ops endpoints "
                         "through the proxy's routes (auth, permissions and a rate limit per route)."),
    )
    config_file: str = field(
        default="",
        metadata=setting("Proxy routes and pools from this YAML file (helios proxy's format, re-read on "
                         "SIGHUP); empty: from the gateway's store (proxy:* keys, /admin/proxy/*)."),
    )


@dataclass(frozen=True)
class StoreConfig(_Section):
    # Read by RemoteStore only (redis://, redis+sentinel://, atlas://): the embedded engine has no replicas.
    wait_replicas: int = field(
        default=0,
        metadata=setting("Replicas that must acknowledge each durable write on a remote store (Redis WAIT) before "
                         "it is acknowledged; fewer within store.wait_timeout_ms fails the write with 503 "
                         "store_replication (it is applied on the primary). 0: do not wait.",
                         minimum=0, maximum=100),
    )
    wait_timeout_ms: int = field(
        default=1000,
        metadata=setting("How long WAIT waits for store.wait_replicas replicas, in ms (at least 1: WAIT 0 would "
                         "wait forever).", minimum=1, maximum=600000),
    )


TRACING_EXPORTERS = ("none", "console", "otlp", "file")


@dataclass(frozen=True)
class TracingConfig(_Section):
    exporter: str = field(
        default="none",
        metadata=setting("Where spans go: none (no SDK, near-zero cost), console (stderr), otlp (OTLP/HTTP, "
                         "pip install 'helios[otlp]') or file (JSON lines to tracing.file).",
                         choices=TRACING_EXPORTERS),
    )
    endpoint: str = field(
        default="",
        metadata=setting("OTLP/HTTP traces URL (e.g. http://127.0.0.1:4318/v1/traces); empty: the exporter's "
                         "default or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT."),
    )
    sample_ratio: float = field(
        default=1.0,
        metadata=setting("Share of new traces recorded, 0.0 to 1.0; a request that comes with a traceparent "
                         "follows its caller's decision."),
    )
    file: str = field(default="", metadata=setting("With exporter file: the JSON-lines file spans are appended to."))

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checks across fields and on the float, which the generic `minimum`/`maximum` (integers) do not cover.
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ConfigError(f"{self.sample_ratio} is outside 0.0 to 1.0", key="tracing.sample_ratio")
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"expected an http:// or https:// URL, got {self.endpoint!r}", key="tracing.endpoint")
        if self.exporter == "file" and not self.file:
            raise ConfigError("exporter file needs tracing.file (the JSON-lines file to write)", key="tracing.file")


@dataclass(frozen=True)
class HeliosConfig:
    """The whole configuration; each field is one section of the YAML file."""

    log: LogConfig = field(default_factory=LogConfig)
    atlas: AtlasConfig = field(default_factory=AtlasConfig)
    atlasd: AtlasdConfig = field(default_factory=AtlasdConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    ratelimit: RateLimitConfig = field(default_factory=RateLimitConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    proxy: GatewayProxyConfig = field(default_factory=GatewayProxyConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)


def _sections() -> dict[str, type]:
    hints = get_type_hints(HeliosConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(HeliosConfig)}


_SECTION_NAMES: dict[type, str] = {cls: name for name, cls in _sections().items()}


def _iter_schema() -> Iterator[tuple[str, str, dataclasses.Field[Any], Any]]:
    for section, cls in _sections().items():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            yield section, f.name, f, hints[f.name]


def schema_keys() -> list[str]:
    """Every setting as a dotted key, e.g. ``"atlas.appendfsync"``, in schema order."""
    return [f"{section}.{name}" for section, name, _, _ in _iter_schema()]


# --------------------------------------------------------------------------
# Types: checking, converting from YAML/Python data, parsing from text.
# --------------------------------------------------------------------------


class _Bad(Exception):
    """A value could not be used; `index` points into a list when known."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.message, self.index = message, index


def _is_variadic(tp: Any) -> bool:
    args = get_args(tp)
    return get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _describe(tp: Any) -> str:
    if tp is bool:
        return "a boolean (true or false)"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if _is_variadic(tp):
        return f"a list of {_describe(get_args(tp)[0])}"
    if get_origin(tp) is tuple:
        return f'a string of {len(get_args(tp))} space-separated integers such as "60 1000"'
    return str(tp)


def _shown(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value))
    if kind is None:
        kind = "list" if isinstance(value, list | tuple) else "mapping" if isinstance(value, Mapping) else ""
    if isinstance(value, bool):
        return f"{kind} {str(value).lower()}"
    return f"{kind} {value!r}".strip()


def _from_data(value: Any, tp: Any) -> Any:
    """Convert a YAML / Python value to `tp` without guessing across types."""
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        # bool is a subclass of int; `true` must never pass for 1.
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    elif tp is float:  # an integer is a number too (`sample_ratio: 1`); a boolean is not
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return str(value)
    elif _is_variadic(tp):
        if isinstance(value, list | tuple):
            item_tp = get_args(tp)[0]
            out = []
            for i, item in enumerate(value):
                try:
                    out.append(_from_data(item, item_tp))
                except _Bad as bad:
                    raise _Bad(f"item {i + 1}: {bad.message}", index=i) from None
            return tuple(out)
    elif get_origin(tp) is tuple:
        if isinstance(value, str):
            return _from_text(value, tp)
        if isinstance(value, list | tuple) and len(value) == len(get_args(tp)):
            return tuple(_from_data(v, t) for v, t in zip(value, get_args(tp), strict=True))
    raise _Bad(f"expected {_describe(tp)}, got {_shown(value)}")


def _from_text(text: str, tp: Any) -> Any:
    """Parse an environment variable or command-line string as `tp`."""
    if tp is str:
        return text
    if tp is bool:
        word = text.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise _Bad(f"expected a boolean (true/false, yes/no, 1/0), got {text!r}")
    if tp is int:
        try:
            return int(text.strip())
        except ValueError:
            raise _Bad(f"expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text.strip())
        except ValueError:
            raise _Bad(f"expected a number, got {text!r}") from None
    if _is_variadic(tp):
        items = [item for item in text.split(",") if item.strip()]
        return tuple(_from_text(item, get_args(tp)[0]) for item in items)
    if get_origin(tp) is tuple:
        parts = text.split()
        if len(parts) != len(get_args(tp)):
            raise _Bad(f"expected {_describe(tp)}, got {text!r}")
        return tuple(_from_text(p, t) for p, t in zip(parts, get_args(tp), strict=True))
    raise _Bad(f"cannot parse {_describe(tp)} from text")


def _type_ok(value: Any, tp: Any) -> bool:
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, float)
    if tp in (bool, str):
        return isinstance(value, tp)
    if _is_variadic(tp):
        return isinstance(value, tuple) and all(_type_ok(v, get_args(tp)[0]) for v in value)
    if get_origin(tp) is tuple:
        args = get_args(tp)
        return (
            isinstance(value, tuple)
            and len(value) == len(args)
            and all(_type_ok(v, t) for v, t in zip(value, args, strict=True))
        )
    return isinstance(value, tp)


def _ints(value: Any) -> Iterator[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        yield value
    elif isinstance(value, tuple):
        for item in value:
            yield from _ints(item)


def _problem(f: dataclasses.Field[Any], tp: Any, value: Any) -> str | None:
    """What is wrong with `value` for field `f`, or None if it is acceptable."""
    if not _type_ok(value, tp):
        return f"expected {_describe(tp)}, got {_shown(value)}"
    meta = f.metadata
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{value!r} is not allowed; expected one of: {', '.join(choices)}"
    minimum, maximum = meta.get("minimum"), meta.get("maximum")
    for number in _ints(value):
        if minimum is not None and number < minimum:
            return f"{number} is below the minimum {minimum}"
        if maximum is not None and number > maximum:
            return f"{number} is above the maximum {maximum}"
    return None


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


@dataclass
class _Source:
    """Where a value came from, for error messages."""

    file: str | None = None
    line: int | None = None
    env: str | None = None
    option: bool = False

    def error(self, message: str, key: str | None) -> ConfigError:
        if self.env is not None:
            message = f"environment variable {self.env}: {message}"
        elif self.option:
            message = f"command-line option: {message}"
        return ConfigError(message, file=self.file, line=self.line, key=key)


def _suggest(name: str, known: Sequence[str], *, what: str = "keys") -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"; {hint}known {what}: {', '.join(known)}"


def _unknown_section(section: str) -> str:
    # Someone who wrote `appendfsync:` at the top level wants `atlas.appendfsync`.
    leaf = [k for k in schema_keys() if k.split(".", 1)[1] == section]
    if leaf:
        known = ", ".join(_sections())
        return f"unknown section '{section}'; did you mean '{leaf[0]}'? known sections: {known}"
    return f"unknown section '{section}'{_suggest(section, list(_sections()), what='sections')}"


def _lookup(section: str, key: str, source: _Source) -> tuple[dataclasses.Field[Any], Any]:
    """The field and type for `section.key`, or a ConfigError suggesting the nearest key."""
    if section not in _sections():
        raise source.error(_unknown_section(section), f"{section}.{key}")
    names = {name: (f, tp) for s, name, f, tp in _iter_schema() if s == section}
    if key not in names:
        raise source.error(
            f"unknown key '{key}' in section '{section}'{_suggest(key, list(names))}", f"{section}.{key}"
        )
    return names[key]


def _line(node: Any, key: Any) -> int | None:
    try:
        return int(node.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return None


def _read_yaml(path: Path, values: dict[str, dict[str, Any]]) -> None:
    name = str(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {name}", file=name)
    if not path.is_file():
        raise ConfigError(f"config path is not a file: {name}", file=name)
    try:
        doc = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {err.problem or err}", file=name, line=line) from err
    except (YAMLError, OSError, ValueError) as err:
        # ValueError: undecodable bytes (UnicodeDecodeError), or an integer of more digits than Python
        # converts (int_max_str_digits), which the YAML reader raises unwrapped (found by tests/fuzz).
        raise ConfigError(f"cannot read config: {err}", file=name) from err

    if doc is None:  # an empty file is an empty configuration
        return
    if not isinstance(doc, CommentedMap):
        problem = f"expected a mapping of sections at the top level, got {_shown(doc)}"
        raise ConfigError(problem, file=name, line=1)
    for section, body in doc.items():
        top = _Source(file=name, line=_line(doc, section))
        if str(section) not in _sections():
            raise top.error(_unknown_section(str(section)), str(section))
        if body is None:  # `atlas:` with nothing under it
            continue
        if not isinstance(body, CommentedMap):
            raise top.error(f"expected a mapping of settings, got {_shown(body)}", str(section))
        for key, raw in body.items():
            source = _Source(file=name, line=_line(body, key))
            dotted = f"{section}.{key}"
            _, tp = _lookup(str(section), str(key), source)
            try:
                values[str(section)][str(key)] = _from_data(raw, tp)
            except _Bad as bad:
                if bad.index is not None and isinstance(raw, CommentedSeq):
                    source.line = int(raw.lc.item(bad.index)[0]) + 1
                raise source.error(bad.message, dotted) from None
            _check(dotted, values, source)


def _read_env(env: Mapping[str, str], values: dict[str, dict[str, Any]]) -> None:
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or _ENV_SEPARATOR not in var[len(ENV_PREFIX) :]:
            continue  # HELIOS_CONFIG and friends are not settings
        section, key = var[len(ENV_PREFIX) :].lower().split(_ENV_SEPARATOR, 1)
        source = _Source(env=var)
        _, tp = _lookup(section, key, source)
        try:
            values[section][key] = _from_text(env[var], tp)
        except _Bad as bad:
            raise source.error(bad.message, f"{section}.{key}") from None
        _check(f"{section}.{key}", values, source)


def _read_overrides(overrides: Mapping[str, Any], values: dict[str, dict[str, Any]]) -> None:
    for dotted, raw in overrides.items():
        if raw is None:  # a command-line option that was not given
            continue
        source = _Source(option=True)
        section, _, key = dotted.partition(".")
        _, tp = _lookup(section, key, source)
        try:
            value = _from_text(raw, tp) if isinstance(raw, str) and tp is not str else _from_data(raw, tp)
        except _Bad as bad:
            raise source.error(bad.message, dotted) from None
        values[section][key] = value
        _check(dotted, values, source)


def _check(dotted: str, values: dict[str, dict[str, Any]], source: _Source) -> None:
    section, key = dotted.split(".", 1)
    f, tp = _lookup(section, key, source)
    problem = _problem(f, tp, values[section][key])
    if problem is not None:
        raise source.error(problem, dotted)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> HeliosConfig:
    """Build the configuration from defaults, `path`, `env` and `overrides` (in rising precedence).

    `env` defaults to ``os.environ``; pass ``{}`` to ignore the environment.
    `overrides` maps dotted keys to values (``{"atlas.appendfsync": "no"}``);
    ``None`` values are skipped so unset CLI options can be passed straight in.
    """
    values: dict[str, dict[str, Any]] = {section: {} for section in _sections()}
    if path is not None:
        _read_yaml(Path(path), values)
    _read_env(os.environ if env is None else env, values)
    if overrides:
        _read_overrides(overrides, values)
    return HeliosConfig(**{section: cls(**values[section]) for section, cls in _sections().items()})


def _to_data(value: Any, tp: Any) -> Any:
    if _is_variadic(tp):
        return [_to_data(item, get_args(tp)[0]) for item in value]
    if get_origin(tp) is tuple:
        return " ".join(str(v) for v in value)
    return value


def config_to_dict(cfg: HeliosConfig) -> dict[str, dict[str, Any]]:
    """The configuration as plain data in its YAML spelling (dumping it gives a loadable file)."""
    out: dict[str, dict[str, Any]] = {}
    for section, name, _, tp in _iter_schema():
        out.setdefault(section, {})[name] = _to_data(getattr(getattr(cfg, section), name), tp)
    return out
