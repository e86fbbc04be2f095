"""Fixtures of the Lua-script tests: a client per test on the flushed `store_url` (standalone and cluster), and a
`RedisStore` over it for the tests that check how tagged replies become exceptions."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from fastdtm.store.redis import Client, RedisStore, connect
from tests.lua.support import KEYS

#: Long enough that a finished transaction written by a test never expires during it.
FINISHED_TTL_MS = 60_000


@pytest.fixture
async def client(store_url: str) -> AsyncIterator[Client]:
    client = connect(store_url)
    try:
        yield client
    finally:
        await client.aclose()
        if isinstance(client, Redis):
            # `connect` hands the standalone client a pool of its own, which `aclose()` leaves open (see
            # test_client.py); without this, every test would end with ResourceWarnings about unclosed sockets.
            await client.connection_pool.aclose()


@pytest.fixture
def store(client: Client) -> RedisStore:
    # The store does not own the client here: the `client` fixture closes it.
    return RedisStore(client, KEYS, finished_ttl_ms=FINISHED_TTL_MS)
