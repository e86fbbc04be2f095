"""`MetricsMiddleware` and `GET /api/metrics` in a small Starlette app: what is counted, under which label."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

# Starlette 1.x wants `httpx2` behind its TestClient and warns when it falls back to the project's `httpx`;
# the fallback works, and the warning (an error under this suite's filters) says nothing about this code.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from fastdtm.api import ops
from fastdtm.api.middleware import ApiLabels, MetricsMiddleware
from fastdtm.metrics import CONTENT_TYPE, Metrics


async def query(request: Request) -> Response:
    if request.query_params.get("gid") == "missing":
        return JSONResponse({"message": "no such gid"}, status_code=404)
    return JSONResponse({"transaction": None})


async def submit(request: Request) -> Response:
    return JSONResponse({"dtm_result": "SUCCESS"})


async def boom(request: Request) -> Response:
    raise RuntimeError("handler bug")


ROUTES = [
    Mount(
        "/api/dtmsvr",
        routes=[
            Route("/query", query, methods=["GET"]),
            Route("/submit", submit, methods=["POST"]),
            Route("/forceStop", submit, methods=["POST"]),
            Route("/boom", boom, methods=["GET"]),
            Route("/topic/{topicName:path}", submit, methods=["DELETE"]),
        ],
    ),
    Mount("/api", routes=ops.routes),
    Route("/outside", submit, methods=["GET"]),
]


@pytest.fixture
def client() -> Iterator[TestClient]:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Metrics]]:
        yield {"metrics": metrics}

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        middleware=[Middleware(MetricsMiddleware, metrics=metrics, routes=ROUTES)],
    )
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def requests_counted(client: TestClient) -> dict[tuple[str, str], float]:
    """(api, status) -> count, from a real scrape."""
    reply = client.get("/api/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == CONTENT_TYPE
    counted = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name == "dtm_server_process_total":
                assert sample.labels["type"] == "http"
                counted[sample.labels["api"], sample.labels["status"]] = sample.value
    return counted


def test_labels_come_from_the_routes_through_mounts() -> None:
    labels = ApiLabels.of(ROUTES)
    assert labels.label("/api/dtmsvr/forceStop") == "forcestop"
    assert labels.label("/api/ping") == "ping"
    assert labels.label("/outside") == "outside"
    # A path parameter is not a label: DTM would put the topic's name there.
    assert labels.label("/api/dtmsvr/topic/orders/eu") == "topic"
    # Starlette routes by exact case, so this is a 404 and not DTM's `forcestop`.
    assert labels.label("/api/dtmsvr/FORCESTOP") == "other"
    assert labels.label("/api/dtmsvr/query/extra") == "other"


def test_requests_are_counted_by_api_and_status(client: TestClient) -> None:
    assert client.get("/api/dtmsvr/query", params={"gid": "g-1"}).status_code == 200
    assert client.get("/api/dtmsvr/query", params={"gid": "g-2"}).status_code == 200
    assert client.get("/api/dtmsvr/query", params={"gid": "missing"}).status_code == 404
    assert client.post("/api/dtmsvr/submit", json={}).status_code == 200
    assert client.post("/api/dtmsvr/forceStop", json={}).status_code == 200
    assert client.get("/api/dtmsvr/submit").status_code == 405
    assert client.get("/api/ping").status_code == 200
    assert client.delete("/api/dtmsvr/topic/orders").status_code == 200
    assert requests_counted(client) == {
        ("query", "ok"): 2,
        ("query", "fail"): 1,
        ("submit", "ok"): 1,
        ("submit", "fail"): 1,
        ("forcestop", "ok"): 1,
        ("ping", "ok"): 1,
        ("topic", "ok"): 1,
    }


def test_durations_are_recorded_per_api(client: TestClient) -> None:
    client.get("/api/ping")
    client.get("/api/ping")
    reply = client.get("/api/metrics")
    samples = [s for f in text_string_to_metric_families(reply.text) for s in f.samples]
    counts = {s.labels["api"]: s.value for s in samples if s.name == "dtm_server_response_duration_count"}
    assert counts == {"ping": 2}


def test_an_exception_counts_as_a_failure(client: TestClient) -> None:
    assert client.get("/api/dtmsvr/boom").status_code == 500
    assert requests_counted(client) == {("boom", "fail"): 1}


def test_unknown_paths_share_one_label(client: TestClient) -> None:
    for i in range(5):
        assert client.get(f"/api/dtmsvr/probe-{i}").status_code == 404
    assert client.get("/api/").status_code == 404
    assert requests_counted(client) == {("other", "fail"): 6}


def test_scrapes_and_paths_outside_the_api_are_not_counted(client: TestClient) -> None:
    client.get("/api/metrics")
    client.get("/api/metrics/", follow_redirects=False)
    client.head("/api/metrics")
    assert client.get("/outside").status_code == 200
    assert requests_counted(client) == {}


def test_no_label_carries_the_query_string(client: TestClient) -> None:
    client.get("/api/dtmsvr/query?gid=abc&x=1")
    reply = client.get("/api/metrics")
    assert "gid" not in reply.text
    assert "?" not in reply.text
