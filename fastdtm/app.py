"""The Starlette application: routes, error mapping, and a lifespan that owns every runtime object.

The lifespan builds the store, the branch-call session, the engine and the cron once per process and
hands them to handlers through lifespan state (no module-level globals).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

import aiohttp
from starlette.applications import Starlette
from starlette.routing import Mount

from fastdtm import logs
from fastdtm.api import dtmsvr, ops
from fastdtm.api.http import api_error, store_error
from fastdtm.clock import SystemClock
from fastdtm.config import Settings
from fastdtm.cron import Cron
from fastdtm.engine import Engine
from fastdtm.errors import ApiError, StoreError
from fastdtm.invoker import Invoker
from fastdtm.kinds.base import Policy
from fastdtm.service import Service
from fastdtm.sharding import Keys
from fastdtm.store.base import Store
from fastdtm.store.redis import RedisStore, connect

log = logging.getLogger(__name__)


class State(TypedDict):
    settings: Settings
    store: Store
    service: Service


def build_store(settings: Settings) -> Store:
    keys = Keys(settings.key_prefix, settings.shards)
    return RedisStore(connect(settings.store), keys, int(settings.finished_data_expire * 1000))


async def _wait_for(store: Store, url: str) -> None:
    """Start only once the store answers (as DTM does): a node without its store can record nothing.

    The first call also lets a cluster client learn the slot map before concurrent traffic starts.
    """
    while True:
        try:
            await store.ping()
            return
        except StoreError as exc:
            log.warning("waiting for the store %s: %s", url, exc)
            await asyncio.sleep(1.0)


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        log.info("fastdtm node %s starting on store %s", settings.node_id, settings.store)
        store = build_store(settings)
        await _wait_for(store, settings.store)
        clock = SystemClock()
        policy = Policy(int(settings.retry_interval * 1000), int(settings.timeout_to_fail * 1000))
        # One pooled session for every branch call of this process: keep-alive per branch host.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        engine = Engine(store, Invoker(session, settings.request_timeout), policy, clock)
        cron = Cron(store, engine, settings, clock)
        cron.start()
        try:
            yield {"settings": settings, "store": store, "service": Service(store, engine, clock, policy)}
        finally:
            await cron.stop()
            await engine.close()
            await session.close()
            await store.close()
            log.info("fastdtm node %s stopped", settings.node_id)

    return Starlette(
        routes=[Mount("/api/dtmsvr", routes=dtmsvr.routes), Mount("/api", routes=ops.routes)],
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, StoreError: store_error},
    )


def create_app_from_env() -> Starlette:
    """Factory for uvicorn worker processes: settings come from the FASTDTM_* variables the CLI set."""
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    return create_app(settings)
