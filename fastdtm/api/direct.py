"""Exact-path dispatch for the routes without path parameters, in front of the Starlette app.

Why: on the hot path (`submit`, `prepare`, `registerBranch`) Starlette's middleware stack (each
layer wraps `send`), its Mount and Route matching (a regex per route until one matches) and its
per-request exception wrappers cost about a fifth of a node's CPU. Here a known path is one dict
lookup; the endpoint, its Request and Response, the app's error mapping and the request metrics are
the same as through the app. Anything else (lifespan, an unknown path, a path with parameters, a
method the route does not allow) goes on to the Starlette app unchanged, so the 404 and 405 replies
stay Starlette's. An exception nothing maps propagates to uvicorn, which answers 500 and logs it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from fastdtm.api.middleware import SCRAPE_PATH, ApiLabels
from fastdtm.metrics import Metrics

Endpoint = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
#: An endpoint and its metrics label.
DirectRoute = tuple[Endpoint, str]


def exact_routes(routes: Iterable[BaseRoute], mounted_at: str = "") -> dict[tuple[str, str], Endpoint]:
    """(method, full path) -> endpoint, for every route whose path has no parameter."""
    table: dict[tuple[str, str], Endpoint] = {}
    for route in routes:
        if isinstance(route, Mount):
            table.update(exact_routes(route.routes, mounted_at + route.path))
        elif isinstance(route, Route) and "{" not in route.path and route.methods:
            for method in route.methods:
                table[(method, mounted_at + route.path)] = route.endpoint
    return table


class DirectRoutes:
    def __init__(
        self,
        app: ASGIApp,
        routes: Iterable[BaseRoute],
        error_handlers: Mapping[type[Exception], ErrorHandler],
        metrics: Metrics,
    ) -> None:
        self.app = app
        routes = list(routes)
        labels = ApiLabels.of(routes)
        # The scrape endpoint stays uncounted, as MetricsMiddleware leaves it (see there).
        self.table: dict[tuple[str, str], DirectRoute] = {
            key: (endpoint, labels.label(key[1]))
            for key, endpoint in exact_routes(routes).items()
            if key[1] != SCRAPE_PATH
        }
        self.error_handlers = tuple(error_handlers.items())
        self.metrics = metrics

    def find(self, method: str, path: str) -> DirectRoute | None:
        return self.table.get((method, path))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.find(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        response = await self.respond(found, scope, receive)
        await response(scope, receive, send)

    async def respond(self, route: DirectRoute, scope: Scope, receive: Receive) -> Response:
        """The reply of a known route (fastdtm.api.protocol calls this too, without ASGI around it)."""
        endpoint, label = route
        started = time.perf_counter()
        ok = False
        try:
            request = Request(scope, receive)
            try:
                response = await endpoint(request)
            except Exception as exc:
                response = await self._handled(request, exc)
            ok = response.status_code < 400
            return response
        finally:
            # An unmapped exception or a cancellation is a failed call.
            self.metrics.api_call(label, ok, time.perf_counter() - started)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        for kind, handler in self.error_handlers:
            if isinstance(exc, kind):
                return await handler(request, exc)
        raise exc  # not ours to map: Starlette's ServerErrorMiddleware answers 500 and logs it
