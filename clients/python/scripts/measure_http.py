"""Which async HTTP client the SDK should run on: `GET /api/dtmsvr/newGid` against one local fastdtm node (embedded
store, started here), N requests at concurrency C, through one pooled httpx.AsyncClient and one aiohttp
ClientSession, twice each. Run from the repository root: `.venv/bin/python clients/python/scripts/measure_http.py`
(N and C from the environment; defaults 3000 and 32)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.support.node import FastdtmNode

N = int(os.environ.get("N", "3000"))
C = int(os.environ.get("C", "32"))


async def drive(one: Callable[[], Awaitable[None]]) -> float:
    gate = asyncio.Semaphore(C)

    async def guarded() -> None:
        async with gate:
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(guarded() for _ in range(N)))
    return N / (time.perf_counter() - started)


async def with_httpx(url: str) -> float:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=C)) as client:

        async def one() -> None:
            (await client.get(url)).raise_for_status()

        return await drive(one)


async def with_aiohttp(url: str) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=C)) as session:

        async def one() -> None:
            async with session.get(url) as response:
                await response.read()
                response.raise_for_status()

        return await drive(one)


def main() -> None:
    node = FastdtmNode(f"sqlite:///{tempfile.mkdtemp()}/measure.db")
    try:
        for _ in range(2):
            for name, measure in (("httpx", with_httpx), ("aiohttp", with_aiohttp)):
                print(f"{name:8} N={N} C={C}: {asyncio.run(measure(f'{node.dtm}/newGid')):.0f} requests/s")
    finally:
        node.stop()


if __name__ == "__main__":
    main()
