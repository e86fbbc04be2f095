"""`/api/openapi.json`: a valid OpenAPI 3.1 document that names exactly the routes the app serves, so the
description cannot drift from the code (a route added without its description fails here)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import httpx
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

from fastdtm.api.openapi import DOCUMENT_JSON, document
from fastdtm.app import create_app
from fastdtm.config import Settings

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
#: Starlette's `{name:converter}` is OpenAPI's `{name}`.
CONVERTER = re.compile(r"\{(\w+):\w+\}")


def route_operations(routes: Iterable[BaseRoute], mounted_at: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every route, walked as `fastdtm.api.direct.exact_routes` walks them, path
    parameters included. HEAD is left out where GET is there: Starlette adds it to every GET route."""
    for route in routes:
        if isinstance(route, Mount):
            yield from route_operations(route.routes, mounted_at + route.path)
        elif isinstance(route, Route) and route.methods:
            path = CONVERTER.sub(r"{\1}", mounted_at + route.path)
            implied = {"HEAD"} if "GET" in route.methods else set()
            for method in route.methods - implied:
                yield method.lower(), path


def described_operations() -> set[tuple[str, str]]:
    paths = document()["paths"]
    assert isinstance(paths, dict)
    return {(method, path) for path, item in paths.items() if isinstance(item, dict) for method in item}


def app_routes() -> list[BaseRoute]:
    # Building the app opens nothing: the store and the rest are made by its lifespan, never run here.
    starlette = create_app(Settings()).app
    assert isinstance(starlette, Starlette)
    return starlette.routes


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_every_route_of_the_app_is_described_and_nothing_else() -> None:
    served = set(route_operations(app_routes()))
    described = described_operations()
    assert served - described == set(), "routes without a description"
    assert described - served == set(), "descriptions of routes the app does not serve"
    assert all(method in HTTP_METHODS for method, _ in described)


def test_every_dtm_operation_with_a_body_names_its_error_replies() -> None:
    paths = document()["paths"]
    assert isinstance(paths, dict)
    for path, item in paths.items():
        assert isinstance(item, dict)
        for method, operation in item.items():
            assert isinstance(operation, dict)
            responses = operation["responses"]
            assert isinstance(responses, dict)
            assert "200" in responses, (method, path)
            if path.startswith("/api/dtmsvr/") and "requestBody" in operation:
                assert {"400", "413", "422", "500"} <= responses.keys(), (method, path)


async def test_the_node_serves_the_document() -> None:
    app = create_app(Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        reply = await client.get("/api/openapi.json")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.content == DOCUMENT_JSON
    assert reply.json() == document()
