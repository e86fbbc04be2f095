"""Drain: the state a stopping node's readiness and cron read (the process-level behaviour is in
tests/e2e/test_drain.py)."""

from __future__ import annotations

import asyncio
import time

import orjson
from starlette.requests import Request

from fastdtm.api import ops
from fastdtm.drain import Drain


def test_the_drain_begins_once_and_its_deadline_counts_from_then() -> None:
    drain = Drain(timeout=7.0)
    calls: list[str] = []
    drain.on_begin(lambda: calls.append("cron"))
    assert not drain.draining
    before = time.monotonic()
    drain.begin()
    drain.begin()
    assert drain.draining and calls == ["cron"]
    assert drain.began is not None and before <= drain.began
    assert drain.deadline() == drain.began + 7.0


def test_inside_the_loop_listeners_run_on_it_not_inside_begin() -> None:
    async def scenario() -> list[str]:
        drain = Drain(timeout=1.0)
        calls: list[str] = []
        drain.on_begin(lambda: calls.append("ran"))
        drain.begin()
        assert calls == []  # from a signal handler, nothing may run in the middle of the loop's own code
        await asyncio.sleep(0)
        return calls

    assert asyncio.run(scenario()) == ["ran"]


def test_a_draining_node_is_not_ready() -> None:
    drain = Drain(timeout=1.0)
    drain.begin()
    # The store is not asked: a node that is leaving is not ready whatever its store says.
    request = Request({"type": "http", "method": "GET", "path": "/api/ready", "headers": [], "state": {"drain": drain}})
    response = asyncio.run(ops.ready(request))
    assert response.status_code == 503
    assert orjson.loads(bytes(response.body)) == {"status": "draining", "message": "the node is stopping"}
