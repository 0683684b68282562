"""/admin/proxy: the reverse proxy's routes, backends and pools, kept in the store.

A proxy started with ``helios proxy --data DIR`` or ``--store URL`` (and the
gateway's own routing, with ``proxy.enabled``) applies a change made here
within a second, without a restart.  Every change is validated against the
whole resulting config (`helios_core.proxy.store_config`): one that would
make it invalid (a route naming a pool with no backends, a bad URL) is a 400
naming the record and the field, and nothing is written.  Every change is
audited (``proxy.route.add``, ``proxy.backend.remove``, ...).

All of it needs ``admin:proxy``: routing traffic is a power of its own, apart
from managing users (``admin:users``) or the store (``admin:store``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from helios_core.errors import InvalidInputError
from helios_core.gateway.base import BaseHandler, perm
from helios_core.proxy import store_config as sc
from helios_core.store.base import Store

__all__ = [
    "ProxyRoutesHandler", "ProxyRouteHandler", "ProxyBackendsHandler", "ProxyBackendHandler",
    "ProxyPoolsHandler", "ProxyPoolHandler",
]

PERMISSION = "admin:proxy"


@dataclass(frozen=True)
class _Ops:
    """The store_config functions of one kind of record."""

    kind: sc.Kind
    add: Callable[[Store, dict[str, Any]], Awaitable[dict[str, Any]]]
    put: Callable[[Store, dict[str, Any]], Awaitable[bool]]
    get: Callable[[Store, str], Awaitable[dict[str, Any]]]
    remove: Callable[[Store, str], Awaitable[None]]
    list: Callable[[Store], Awaitable[list[dict[str, Any]]]]


_ROUTES = _Ops("route", sc.add_route, sc.put_route, sc.get_route, sc.remove_route, sc.list_routes)
_BACKENDS = _Ops("backend", sc.add_backend, sc.put_backend, sc.get_backend, sc.remove_backend, sc.list_backends)
_POOLS = _Ops("pool", sc.add_pool, sc.put_pool, sc.get_pool, sc.remove_pool, sc.list_pools)

_ALL = {"GET": perm(PERMISSION), "POST": perm(PERMISSION)}
_ONE = {"GET": perm(PERMISSION), "PUT": perm(PERMISSION), "DELETE": perm(PERMISSION)}


class _Collection(BaseHandler):
    """GET: every record of the kind; POST: add one (409 if its id exists)."""

    # Declared here too, so that BaseHandler wraps these methods (a body refused while it
    # streamed in must not run them); the routed subclasses inherit the wrapped ones.
    needs = _ALL
    ops: ClassVar[_Ops]

    async def get(self) -> None:
        self.write_json({f"{self.ops.kind}s": await self.ops.list(self.gw.store)})

    async def post(self) -> None:
        record = await self.ops.add(self.gw.store, self.json_body())
        await self.gw.audit.record(self.wall_ms(), f"proxy.{self.ops.kind}.add", self.actor(), target=record["id"],
                                   detail=record)
        self.write_json(record, 201)


class _Item(BaseHandler):
    """GET one record; PUT creates or replaces it (the id is the path's); DELETE removes it."""

    needs = _ONE
    ops: ClassVar[_Ops]

    async def get(self, id: str) -> None:
        self.write_json(await self.ops.get(self.gw.store, sc.validate_id(id)))

    async def put(self, id: str) -> None:
        body = self.json_body()
        if body.setdefault("id", id) != id:
            raise InvalidInputError(f"id: must match the {self.ops.kind} in the path ({self.ops.kind}s cannot "
                                    f"be renamed: add the new one, then remove {id!r})")
        created = await self.ops.put(self.gw.store, body)
        await self.gw.audit.record(self.wall_ms(), f"proxy.{self.ops.kind}.put", self.actor(), target=id,
                                   detail=body)
        self.write_json(await self.ops.get(self.gw.store, id), 201 if created else 200)

    async def delete(self, id: str) -> None:
        await self.ops.remove(self.gw.store, sc.validate_id(id))
        await self.gw.audit.record(self.wall_ms(), f"proxy.{self.ops.kind}.remove", self.actor(), target=id)
        self.set_status(204)
        self.finish()


class ProxyRoutesHandler(_Collection):
    route = "/admin/proxy/routes"
    needs = _ALL
    ops = _ROUTES


class ProxyRouteHandler(_Item):
    route = "/admin/proxy/routes/{id}"
    needs = _ONE
    ops = _ROUTES


class ProxyBackendsHandler(_Collection):
    route = "/admin/proxy/backends"
    needs = _ALL
    ops = _BACKENDS


class ProxyBackendHandler(_Item):
    route = "/admin/proxy/backends/{id}"
    needs = _ONE
    ops = _BACKENDS


class ProxyPoolsHandler(_Collection):
    route = "/admin/proxy/pools"
    needs = _ALL
    ops = _POOLS


class ProxyPoolHandler(_Item):
    route = "/admin/proxy/pools/{id}"
    needs = _ONE
    ops = _POOLS
