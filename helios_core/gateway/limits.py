"""Connection limits and who the client is.

Tornado enforces the limits on its HTTP server: `max_header_size` for the
request head, `idle_connection_timeout` for the whole head (so a slowloris
client that trickles header bytes is cut off, as is an idle keep-alive
connection) and `body_timeout` for the body.  The body *size* is checked by
`BaseHandler` so an oversized body gets the JSON 413; the server's own cap
sits well above it only to bound chunked bodies that never say their size
(the handler answers 413 as soon as one passes the limit).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from tornado.httputil import HTTPServerRequest

from helios_core.config import GatewayConfig
from helios_core.errors import ConfigError

__all__ = ["server_settings", "TrustedProxies"]

_CHUNKED_SLACK = 16 << 20


def server_settings(cfg: GatewayConfig) -> dict[str, Any]:
    """Keyword arguments for tornado's HTTPServer."""
    return {
        "max_header_size": cfg.max_header_bytes,
        "idle_connection_timeout": cfg.idle_timeout_seconds,
        "body_timeout": cfg.body_timeout_seconds,
        "max_body_size": 2 * cfg.max_body_bytes + _CHUNKED_SLACK,
        "xheaders": False,  # X-Forwarded-For is believed only from trusted proxies, below
    }


class TrustedProxies:
    """The client address: the peer, or what a trusted proxy says in X-Forwarded-For."""

    def __init__(self, entries: Iterable[str]) -> None:
        nets = []
        for e in entries:
            try:
                nets.append(ipaddress.ip_network(e.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"{e!r} is not an IP address or CIDR network",
                                  key="gateway.trusted_proxies") from None
        self.networks = tuple(nets)

    def trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def client(self, request: HTTPServerRequest) -> str:
        peer = request.remote_ip or "unknown"
        if not self.networks or not self.trusted(peer):
            return peer
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        # Walk from the nearest hop back; the first address we do not trust is the client.
        for hop in reversed(hops):
            if not self.trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a proxy we trust passed garbage: fall back to what we know
        return hops[0] if hops else peer
