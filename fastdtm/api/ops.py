"""Operational endpoints: DTM's `/api/ping`, and liveness / readiness for Kubernetes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastdtm.api.http import json_response
from fastdtm.errors import StoreError
from fastdtm.store.base import Store


async def ping(request: Request) -> Response:
    return json_response({"msg": "pong"})


async def live(request: Request) -> Response:
    """The process serves requests; says nothing about the store (a Redis outage must not kill pods)."""
    return json_response({"status": "live"})


async def ready(request: Request) -> Response:
    """Ready when the store answers: a load balancer should not send work a node cannot record."""
    store: Store = request.state.store
    try:
        await store.ping()
    except StoreError as exc:
        return json_response({"status": "unavailable", "message": str(exc)}, 503)
    return json_response({"status": "ready"})


routes = [
    Route("/ping", ping, methods=["GET", "POST", "HEAD", "PUT"]),
    Route("/live", live, methods=["GET", "HEAD"]),
    Route("/ready", ready, methods=["GET", "HEAD"]),
]
