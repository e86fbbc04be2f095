"""fastdtm's own Redis client (`fastdtm.store.resp`), on standalone Redis and on the cluster: replies reach the
command that asked, commands issued together share a write, a dead or silent connection fails its commands and is
replaced, NOSCRIPT loads the script, a cluster client follows MOVED, and `aclose()` gives back its connections."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from fastdtm.sharding import Keys, slot_of
from fastdtm.store import redis_client, resp
from fastdtm.store.redis import SCRIPTS, Script
from tests.support.redis_client import connect as connect_redis_py
from tests.support.redis_servers import CLUSTER_SCHEME, Address, RedisTarget, cluster_masters, parse_cluster_url

KEYS = Keys()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis_client.Redis | redis_client.Cluster]:
    client = redis_client.connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def key(i: int) -> str:
    """Keys spread over every shard, hence over every cluster master."""
    return f"{{{KEYS.tags[i % KEYS.shards]}}}:k{i}"


async def test_every_reply_reaches_the_command_that_asked(client: redis_client.Redis | redis_client.Cluster) -> None:
    await asyncio.gather(*(client.execute(key(i), "SET", key(i), f"v{i}") for i in range(600)))

    values = await asyncio.gather(*(client.execute(key(i), "GET", key(i)) for i in range(600)))

    assert values == [f"v{i}" for i in range(600)]


async def test_an_error_reply_fails_its_command_only(client: redis_client.Redis | redis_client.Cluster) -> None:
    await client.execute(key(1), "HSET", key(1), "f", "v")

    replies: list[object] = await asyncio.gather(
        client.execute(key(1), "INCR", key(1)), client.execute(key(1), "HGET", key(1), "f"), return_exceptions=True
    )
    wrong, right = replies

    assert isinstance(wrong, resp.ReplyError) and wrong.code == "WRONGTYPE"
    assert right == "v"


async def test_commands_issued_together_leave_in_one_write(redis_standalone: RedisTarget) -> None:
    redis_standalone.flush()
    client = redis_client.connect(redis_standalone.url)
    inspector = connect_redis_py(redis_standalone.url)
    try:
        await client.execute(None, "PING")  # connected before counting
        before = (await inspector.info("stats"))["total_reads_processed"]

        await asyncio.gather(*(client.execute(key(i), "SET", key(i), "x") for i in range(200)))

        reads = (await inspector.info("stats"))["total_reads_processed"] - before
        # One per command without pipelining (200); the INFO call is one more. A big write may arrive in a few reads.
        assert reads <= 10, reads
    finally:
        await client.aclose()
        await inspector.aclose()


async def test_a_silent_connection_fails_its_commands_and_is_replaced(redis_url: str) -> None:
    client = redis_client.connect(redis_url, resp.Timeouts(reply=0.3))
    try:
        # BLPOP on an empty list keeps this connection's reply back for 5 s: past the reply timeout.
        with pytest.raises(ConnectionError, match=r"no reply in 0\.3 s"):
            await client.execute(key(2), "BLPOP", key(2), 5)

        assert await client.execute(key(2), "SET", key(2), "after") == "OK"
    finally:
        await client.aclose()


async def test_a_cancelled_command_does_not_shift_the_replies(
    client: redis_client.Redis | redis_client.Cluster,
) -> None:
    await client.execute(key(3), "SET", key(3), "value")
    waiting = asyncio.ensure_future(client.execute(key(3), "BLPOP", key(3) + ":list", "0.5"))
    await asyncio.sleep(0.05)
    waiting.cancel()

    # Its reply (nil, after 0.5 s) still arrives first on that connection and must be skipped.
    assert await client.execute(key(3), "GET", key(3)) == "value"


async def test_a_killed_connection_is_replaced_on_the_next_command(
    client: redis_client.Redis | redis_client.Cluster, redis_url: str
) -> None:
    await asyncio.gather(*(client.execute(key(i), "SET", key(i), "1") for i in range(KEYS.shards)))
    for host, port in _servers(redis_url):
        control = aioredis.Redis(host=host, port=port)
        try:
            await control.client_kill_filter(_type="normal", skipme=True)
        finally:
            await control.aclose()
    await asyncio.sleep(0.1)  # the FIN reaches the client

    values = await asyncio.gather(*(client.execute(key(i), "GET", key(i)) for i in range(KEYS.shards)))

    assert values == ["1"] * KEYS.shards


async def test_unreachable_server_is_a_connection_error() -> None:
    client = redis_client.connect("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(ConnectionError, match="cannot connect"):
            await client.execute(None, "PING")
    finally:
        await client.aclose()


async def test_a_script_is_loaded_again_after_the_server_forgot_it(
    client: redis_client.Redis | redis_client.Cluster, redis_url: str
) -> None:
    load = Script("load")
    g, b, due, _, _ = KEYS.of_trans("g1")
    assert await load.run(client, [g, b, due], ["g1"]) == []
    await _flush_scripts(redis_url)

    assert await load.run(client, [g, b, due], ["g1"]) == []


async def test_every_script_file_opens_with_its_header() -> None:
    for name in SCRIPTS:
        script = Script(name)
        assert script.source.startswith(f"-- {name}: "), name
        assert "-- Returns: " in script.source, name


@pytest.mark.cluster
async def test_a_cluster_client_follows_moved_and_learns_the_map(redis_cluster: RedisTarget) -> None:
    redis_cluster.flush()
    client = redis_client.connect(redis_cluster.url)
    assert isinstance(client, redis_client.Cluster)
    try:
        k = key(5)
        await client.execute(k, "SET", k, "here")
        slot = slot_of(k)
        owner = client._slots[slot]
        other = next(n for n in client._slots if n is not None and n is not owner)
        client._slots[slot] = other  # as if the slot had moved since the map was read

        assert await client.execute(k, "GET", k) == "here"  # MOVED from `other`, then asked the owner
        assert client._slots[slot] is owner
    finally:
        await client.aclose()


async def test_aclose_gives_back_every_connection(redis_url: str) -> None:
    servers = _servers(redis_url)
    baseline = await _connections(servers)
    client = redis_client.connect(redis_url)
    await asyncio.gather(*(client.execute(key(i), "GET", key(i)) for i in range(KEYS.shards)))
    assert await _connections(servers) > baseline

    await client.aclose()

    assert await _settled(servers, baseline), "connections still open after aclose()"


async def _flush_scripts(redis_url: str) -> None:
    """Empty every server's script cache, as a restart or a failover to a fresh replica would."""
    for host, port in _servers(redis_url):
        control = aioredis.Redis(host=host, port=port)
        try:
            await control.script_flush()
        finally:
            await control.aclose()


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
        control = aioredis.Redis(host=host, port=port)
        try:
            total += len(await control.client_list()) - 1
        finally:
            await control.aclose()
    return total


async def _settled(servers: list[Address], baseline: int, timeout: float = 2.0) -> bool:
    """Whether the count falls back to the baseline: a closed socket takes a moment to reach the server."""
    deadline = time.monotonic() + timeout
    while await _connections(servers) > baseline:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_every_new_connection_loads_the_scripts_it_was_given(redis_url: str) -> None:
    load = Script("load")
    await _flush_scripts(redis_url)
    client = redis_client.connect(redis_url, preload=[load.source])
    try:
        # Plain commands to every node: each one's new connection loads the script before anything else.
        await asyncio.gather(*(client.execute(key(i), "GET", key(i)) for i in range(KEYS.shards)))

        for host, port in _servers(redis_url):
            control = aioredis.Redis(host=host, port=port)
            try:
                assert await control.script_exists(load.sha) == [True], (host, port)
            finally:
                await control.aclose()
    finally:
        await client.aclose()
