"""ASGI middleware that counts and times every request under `/api/` into this process's `Metrics`.

Pure ASGI: Starlette's BaseHTTPMiddleware would add a task group and memory streams to every request.
The `api` label is DTM's (the last path segment, lower-cased) but only for paths the app routes
(`ApiLabels`); anything else is "other". DTM labels any path, so a scanner probing random URLs would
create a series per URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastdtm.metrics import OTHER, Metrics, api_label

API_PREFIX: Final = "/api/"
#: Not counted: a series of Prometheus's own polling would only be noise beside the API's.
SCRAPE_PATH: Final = "/api/metrics"


@dataclass(frozen=True, slots=True)
class ApiLabels:
    """Request path -> `api` label, built from the app's routes."""

    #: Literal routes by full path: `/api/dtmsvr/forceStop` -> `forcestop`.
    exact: Mapping[str, str]
    #: Routes with a path parameter, by the literal part before it: `/api/dtmsvr/topic/` -> `topic`. DTM
    #: would label these with the parameter's value (a topic name).
    prefixes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, routes: Iterable[BaseRoute]) -> ApiLabels:
        exact: dict[str, str] = {}
        prefixes: list[tuple[str, str]] = []
        for path in _route_paths(routes, ""):
            literal, brace, _ = path.partition("{")
            if brace:
                prefixes.append((literal, api_label(literal)))
            else:
                exact[path] = api_label(path)
        return cls(exact, tuple(prefixes))

    def label(self, path: str) -> str:
        label = self.exact.get(path)
        if label is not None:
            return label
        for prefix, label in self.prefixes:
            if path.startswith(prefix):
                return label
        return OTHER


def _route_paths(routes: Iterable[BaseRoute], mounted_at: str) -> Iterable[str]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _route_paths(route.routes, mounted_at + route.path)
        elif isinstance(route, Route):
            yield mounted_at + route.path


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.labels = ApiLabels.of(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(API_PREFIX) or path.rstrip("/") == SCRAPE_PATH:
            await self.app(scope, receive, send)
            return
        # What the client gets when the app raises before starting a response (the server answers 500).
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        ok = False
        try:
            await self.app(scope, receive, send_noting_status)
            ok = status < 400
        finally:
            # An exception or a cancellation is a failed call even if a 200 had already started.
            self.metrics.api_call(self.labels.label(path), ok, time.perf_counter() - started)
