"""The OpenAPI document matches the router: every route and method documented, nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tornado.routing import PathMatches
from tornado.web import RequestHandler

from helios_core.gateway.base import PROBE, BaseHandler
from helios_core.gateway.openapi import OPERATIONS, build
from helios_core.gateway.routes import HANDLERS, pattern
from tests.unit.test_gateway_harness import Api, run_gateway

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def implemented(h: type[BaseHandler]) -> set[str]:
    return {m.upper() for m in HTTP_METHODS if getattr(h, m) is not getattr(RequestHandler, m)}


def test_document_paths_and_methods_are_exactly_the_routes(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        doc = (await api.call("GET", "/api/v1/openapi.json")).json()
        documented = {(path, m.upper()) for path, item in doc["paths"].items() for m in item if m in HTTP_METHODS}
        rules = api.service.app.wildcard_router.rules
        routed = set()
        for rule in rules:
            h = rule.target
            assert isinstance(rule.matcher, PathMatches)
            assert rule.matcher.regex.pattern == pattern(h.route) + "$"
            routed |= {(h.route, m) for m in implemented(h)}
        assert documented == routed
        assert len(rules) == len(HANDLERS)

    run_gateway(tmp_path, body)


@pytest.mark.parametrize("h", HANDLERS, ids=lambda h: h.__name__)
def test_declared_needs_are_the_implemented_methods(h: type[BaseHandler]) -> None:
    assert set(h.needs) == implemented(h), "every method a handler implements declares what it needs"


def test_path_templates_match_their_patterns() -> None:
    for h in HANDLERS:
        example = re.sub(r"\{([a-z_]+)\}", lambda m: "a/b" if m.group(1) == "key" else "x1", h.route)
        assert re.fullmatch(pattern(h.route), example), h.route
    assert not re.fullmatch(pattern("/admin/users/{username}"), "/admin/users/a/b")


def test_operations_are_documented_once_with_security_and_permissions() -> None:
    doc = build(HANDLERS)
    assert len(OPERATIONS) == sum(len(h.needs) for h in HANDLERS)
    login = doc["paths"]["/api/v1/auth/login"]["post"]
    assert login["security"] == []
    kv = doc["paths"]["/api/v1/kv/{key}"]
    assert kv["put"]["x-permission"] == "kv:write" and "security" not in kv["put"]
    assert kv["parameters"] == [{"name": "key", "in": "path", "required": True, "schema": {"type": "string"}}]
    for item in doc["paths"].values():
        for m, operation in item.items():
            if m in HTTP_METHODS:
                assert operation["responses"]["default"]["content"]["application/json"]["schema"] == \
                    {"$ref": "#/components/schemas/Error"}


def test_a_missing_description_fails_the_build() -> None:
    class Extra(BaseHandler):
        route = "/api/v1/extra"
        needs = {"GET": PROBE}

    with pytest.raises(KeyError, match="not described"):
        build([*HANDLERS, Extra])
    with pytest.raises(KeyError, match="not routed"):
        build(HANDLERS[1:])
