"""Micro-benchmark of the metrics hot path: ns per update, per request through the middleware, per scrape.

    .venv/bin/python bench/metrics_bench.py [--n 200000]

Each figure is the best of 7 runs of n iterations, loop overhead included (about 30 ns). The
prometheus_client line does the same three updates as `api_call` + `branch_done` through its
`labels(...).inc()` / `.observe()`, for comparison: it is why fastdtm renders its own exposition.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import Mount, Route
from starlette.types import Message, Receive, Scope, Send

from fastdtm.api.middleware import MetricsMiddleware
from fastdtm.metrics import Metrics

RUNS = 7


def best_ns(n: int, body: Callable[[int], None]) -> float:
    body(n // 10)  # warm-up: first-seen label sets are created here, not measured
    times = []
    for _ in range(RUNS):
        started = time.perf_counter_ns()
        body(n)
        times.append((time.perf_counter_ns() - started) / n)
    return min(times)


def fastdtm_pair(n: int, metrics: Metrics) -> None:
    for _ in range(n):
        metrics.api_call("submit", True, 0.0012)
        metrics.branch_done("saga", "01", "action", True)


def fastdtm_saga(n: int, metrics: Metrics) -> None:
    """What one two-branch saga with wait_result costs once the engine, cron and store are wired."""
    for _ in range(n):
        metrics.api_call("submit", True, 0.0012)
        metrics.rounds_in_flight(1)
        metrics.store_call("create")
        metrics.branch_done("saga", "01", "action", True)
        metrics.branch_done("saga", "02", "action", True)
        metrics.store_call("transition")
        metrics.store_call("transition")
        metrics.round_done("saga", True, 0.004)
        metrics.rounds_in_flight(0)


def prometheus_client_pair(n: int) -> None:
    registry = CollectorRegistry()
    requests = Counter("dtm_server_process_total", "", ["type", "api", "status"], registry=registry)
    latency = Histogram("dtm_server_response_duration", "", ["type", "api"], registry=registry)
    branches = Counter("dtm_branch_process_total", "", ["model", "branchid", "branchtype", "status"], registry=registry)
    for _ in range(n):
        requests.labels("http", "submit", "ok").inc()
        latency.labels("http", "submit").observe(0.0012)
        branches.labels("saga", "01", "action", "ok").inc()


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


def asgi_requests(n: int, app: Callable[[Scope, Receive, Send], object]) -> None:
    scope: Scope = {"type": "http", "path": "/api/dtmsvr/submit", "method": "POST"}

    async def loop() -> None:
        for _ in range(n):
            await app(scope, _receive, _send)  # type: ignore[misc]

    asyncio.run(loop())


def render(n: int, metrics: Metrics) -> None:
    for _ in range(n):
        metrics.render()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    metrics = Metrics()
    middleware = MetricsMiddleware(_app, metrics, [Mount("/api/dtmsvr", routes=[Route("/submit", _app)])])
    rows = [
        ("api_call + branch_done", best_ns(n, lambda k: fastdtm_pair(k, metrics))),
        ("prometheus_client, same 3 updates", best_ns(n, prometheus_client_pair)),
        ("one 2-branch saga (9 calls)", best_ns(n, lambda k: fastdtm_saga(k, metrics))),
        ("ASGI request, no middleware", best_ns(n, lambda k: asgi_requests(k, _app))),
        ("ASGI request, MetricsMiddleware", best_ns(n, lambda k: asgi_requests(k, middleware))),
    ]
    for api in range(20):  # a scrape of a busy node: every API, two models, 20 branch ids
        metrics.api_call(f"api{api}", True, 0.001)
    for branch in range(20):
        for op in ("action", "compensate"):
            metrics.branch_done("msg", f"{branch:02d}", op, False)
    rows.append(("render()", best_ns(max(n // 1000, 10), lambda k: render(k, metrics))))
    width = max(len(name) for name, _ in rows)
    for name, ns in rows:
        print(f"{name:<{width}}  {ns:>12,.0f} ns")


if __name__ == "__main__":
    main()
