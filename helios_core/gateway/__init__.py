"""The HTTP API gateway: auth, KV and admin endpoints on a Store (Tornado).

    app.py        GatewayService (wiring) and serve() (what `helios gateway` runs)
    base.py       BaseHandler: request id, trace, auth, rate limit, permission; one error shape
    routes.py     the route table; openapi.py builds the API document from it
    handlers/     auth, kv, admin, ops (probes, metrics, the document)
    limits.py     connection limits, trusted proxies; storeops.py snapshot/stats (embedded only)
"""

from helios_core.gateway.app import GatewayService, Started, serve

__all__ = ["GatewayService", "Started", "serve"]
