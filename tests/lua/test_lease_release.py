"""`lease_release.lua`: give a shard lease up only with the token this node holds. Pins KEYS lease; ARGV lease
value; replies 1 (deleted) | 0 (absent, or another holder's: then value and TTL untouched); and
`RedisStore.release_lease`."""

from __future__ import annotations

from typing import Any

from fastdtm.store.redis import RedisStore
from tests.lua.support import ABSENT, KEYS, LEASE_RELEASE
from tests.support.redis_client import Client

SHARD = 9
MINE = "node-a 5f0c1e9a7b3d2c4e"
THEIRS = "node-b 0a1b2c3d4e5f6a7b"


async def release(client: Client, lease: str, shard: int = SHARD) -> Any:
    """One `lease_release` call, arguments in the header's order."""
    return await LEASE_RELEASE(client, [KEYS.lease(shard)], [lease])


async def test_the_holder_releases(client: Client) -> None:
    await client.set(KEYS.lease(SHARD), MINE, px=30_000)

    assert await release(client, MINE) == 1

    assert await client.exists(KEYS.lease(SHARD)) == 0


async def test_another_holders_lease_is_left_alone(client: Client) -> None:
    await client.set(KEYS.lease(SHARD), THEIRS, px=30_000)
    expire_at = await client.pexpiretime(KEYS.lease(SHARD))

    # A node handing over a shard it already lost must not delete the new owner's lease (rq's blind DEL).
    assert await release(client, MINE) == 0

    assert await client.get(KEYS.lease(SHARD)) == THEIRS
    assert await client.pexpiretime(KEYS.lease(SHARD)) == expire_at


async def test_the_same_node_with_an_old_token_is_another_holder(client: Client) -> None:
    await client.set(KEYS.lease(SHARD), "node-a 0000000000000000", px=30_000)

    assert await release(client, MINE) == 0

    assert await client.get(KEYS.lease(SHARD)) == "node-a 0000000000000000"


async def test_an_absent_lease_is_zero(client: Client) -> None:
    assert await release(client, MINE) == 0

    assert await client.pexpiretime(KEYS.lease(SHARD)) == ABSENT


async def test_store_release_then_someone_else_can_acquire(store: RedisStore, client: Client) -> None:
    assert await store.acquire_lease(SHARD, MINE, 30_000)
    assert not await store.acquire_lease(SHARD, THEIRS, 30_000)

    assert await store.release_lease(SHARD, MINE) is True
    assert await store.release_lease(SHARD, MINE) is False

    assert await store.acquire_lease(SHARD, THEIRS, 30_000)
    assert await store.lease_holder(SHARD) == THEIRS
