"""What every script call goes through, on standalone and cluster: the `Script` wrapper (EVALSHA, and a reload
when the server answers NOSCRIPT after a restart or failover emptied its script cache) and `connect` (a client
whose `aclose()` gives back every connection it opened)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from redis.asyncio import Redis

from fastdtm.store.redis import SCRIPTS, Client, Script, connect
from tests.lua.support import KEYS, LOAD, T0, fields_of, seed
from tests.support.redis_servers import CLUSTER_SCHEME, Address, cluster_masters, parse_cluster_url


async def test_every_script_file_loads_with_a_header() -> None:
    for name in SCRIPTS:
        script = Script(name)
        # The header is the contract the other test modules pin: it must open the file.
        assert script.source.startswith(f"-- {name}: "), name
        assert "-- Returns: " in script.source, name


async def test_a_script_is_loaded_again_after_the_server_forgot_it(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        await seed(client, "g1", fields_of("g1"), due=T0)
        g, b, due, _, _ = KEYS.of_trans("g1")
        await client.script_flush()
        assert await client.script_exists(LOAD.sha) == [False]

        reply = await LOAD(client, [g, b, due], ["g1"])

        assert reply[1:] == [[], str(T0)]
        assert await client.script_exists(LOAD.sha) == [True]
    finally:
        await _close(client)


async def test_aclose_gives_back_every_connection(redis_url: str) -> None:
    servers = _servers(redis_url)
    baseline = await _connections(servers)
    client = connect(redis_url)
    try:
        # One call first: redis-py 8.1's cluster client races with itself when its very first commands are
        # concurrent (some fail with AttributeError inside the connection) while it learns the slot map.
        await client.ping()
        # Concurrent calls over many shards open several connections (and reach every cluster master).
        await asyncio.gather(*(LOAD(client, list(KEYS.of_trans(f"gid-{i}")[:3]), [f"gid-{i}"]) for i in range(32)))
        assert await _connections(servers) > baseline

        await client.aclose()

        assert await _settled(servers, baseline), "connections still open after aclose()"
    finally:
        await _close(client)


async def _close(client: Client) -> None:
    """Close a client fully, pool included, whatever `aclose()` leaves behind (closing twice is harmless)."""
    await client.aclose()
    if isinstance(client, Redis):
        await client.connection_pool.aclose()


def _servers(redis_url: str) -> list[Address]:
    if redis_url.startswith(CLUSTER_SCHEME):
        return cluster_masters(parse_cluster_url(redis_url))
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    return [(parts.hostname, parts.port)]


async def _connections(servers: list[Address]) -> int:
    """Client connections the servers see, not counting the one asking."""
    total = 0
    for host, port in servers:
        control = Redis(host=host, port=port)
        try:
            total += len(await control.client_list()) - 1
        finally:
            await control.aclose()
    return total


async def _settled(servers: list[Address], baseline: int, timeout: float = 1.0) -> bool:
    """Whether the count falls back to the baseline: a closed socket takes a moment to reach the server."""
    deadline = time.monotonic() + timeout
    while await _connections(servers) > baseline:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
