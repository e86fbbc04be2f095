"""Fixtures of the Lua-script tests: a client per test on the flushed `redis_url` (standalone and cluster), and a
`RedisStore` over it for the tests that check how tagged replies become exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fastdtm.store import redis_client
from fastdtm.store.redis import RedisStore
from tests.lua.support import FINISHED_TTL_MS, KEYS
from tests.support.redis_client import Client, connect


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    client = connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    # fastdtm's own client, beside the test's redis-py `client` that seeds and inspects.
    store = RedisStore(redis_client.connect(redis_url), KEYS, finished_ttl_ms=FINISHED_TTL_MS)
    try:
        yield store
    finally:
        await store.close()
