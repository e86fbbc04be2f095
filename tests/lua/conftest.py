"""Fixtures of the Lua-script tests: a client per test on the flushed `redis_url` (standalone and cluster), and a
`RedisStore` over it for the tests that check how tagged replies become exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fastdtm.store.redis import Client, RedisStore, connect
from tests.lua.support import FINISHED_TTL_MS, KEYS


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    client = connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def store(client: Client) -> RedisStore:
    # The store does not own the client here: the `client` fixture closes it.
    return RedisStore(client, KEYS, finished_ttl_ms=FINISHED_TTL_MS)
