"""What the SDK suite's tests share: a coordinator under test (fastdtm on one store, or Go DTM) as a URL, an
ASGI app served by uvicorn inside the test's event loop (so branch handlers and the SDK share one loop), and
the async polling of `/query` (the suite's sync helpers would block the loop the branches run on)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from tests.support.redis_servers import HOST, free_port


@dataclass(frozen=True)
class Coordinator:
    """A coordinator the SDK talks to: `name` is its test id (sqlite, redis, cluster, go-dtm)."""

    name: str
    base: str

    @property
    def dtm(self) -> str:
        return f"{self.base}/api/dtmsvr"

    @property
    def is_go(self) -> bool:
        return self.name == "go-dtm"


@asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port in this event loop; yields its base URL."""
    config = uvicorn.Config(app, host=HOST, port=free_port(), log_level="warning", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start in 10 s")
        await asyncio.sleep(0.01)
    try:
        yield f"http://{HOST}:{config.port}"
    finally:
        server.should_exit = True
        await task


async def query(coordinator: Coordinator, gid: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{coordinator.dtm}/query", params={"gid": gid})
    response.raise_for_status()
    body = response.json()
    assert isinstance(body, dict)
    return body


async def wait_status(
    coordinator: Coordinator, gid: str, statuses: Collection[str], timeout: float = 20.0
) -> dict[str, Any]:
    """Poll /query until the transaction's status is in `statuses`; its last reply."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = await query(coordinator, gid)
        transaction = last.get("transaction") or {}
        if transaction.get("status") in statuses:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{coordinator.name} {gid}: not in {sorted(statuses)} after {timeout}s: {last}")


def branch_statuses(reply: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(branch_id, op, status) of each branch, in /query order."""
    return [(b["branch_id"], b["op"], b["status"]) for b in reply.get("branches") or []]
