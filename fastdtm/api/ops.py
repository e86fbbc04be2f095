"""Operational endpoints: DTM's `/api/ping` and `/api/metrics`, and liveness / readiness for Kubernetes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastdtm.api.http import json_response
from fastdtm.api.openapi import openapi_json
from fastdtm.drain import Drain
from fastdtm.errors import StoreError
from fastdtm.metrics import Metrics
from fastdtm.store.base import Store


async def ping(request: Request) -> Response:
    return json_response({"msg": "pong"})


async def live(request: Request) -> Response:
    """The process serves requests; says nothing about the store (a Redis outage must not kill pods)."""
    return json_response({"status": "live"})


async def ready(request: Request) -> Response:
    """Ready when the store answers and the node is not stopping: a load balancer should not send work a
    node cannot record, nor to one that is leaving."""
    drain: Drain = request.state.drain
    if drain.draining:
        return json_response({"status": "draining", "message": "the node is stopping"}, 503)
    store: Store = request.state.store
    try:
        await store.ping()
    except StoreError as exc:
        return json_response({"status": "unavailable", "message": str(exc)}, 503)
    return json_response({"status": "ready"})


async def metrics(request: Request) -> Response:
    """This process's counters for Prometheus; with several workers, each worker answers for itself.

    Async on purpose: a sync handler would run in a thread and read the counters while the loop updates them.
    """
    registry: Metrics = request.state.metrics
    body, content_type = registry.render()
    return Response(body, media_type=content_type)


routes = [
    Route("/ping", ping, methods=["GET", "POST", "HEAD", "PUT"]),
    Route("/live", live, methods=["GET", "HEAD"]),
    Route("/ready", ready, methods=["GET", "HEAD"]),
    Route("/metrics", metrics, methods=["GET", "HEAD"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
