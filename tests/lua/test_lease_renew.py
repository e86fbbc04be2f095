"""`lease_renew.lua`: extend a shard lease only with the token this node holds. Pins KEYS lease; ARGV lease
value, ttl_ms; replies 1 (renewed) | 0 (absent, or another holder's: then value and TTL untouched); and
`RedisStore.renew_leases`, which renews many shards at once and reports each."""

from __future__ import annotations

from typing import Any

from fastdtm.store.redis import RedisStore
from tests.lua.support import ABSENT, KEYS, LEASE_RENEW
from tests.support.redis_client import Client

SHARD = 9
MINE = "node-a 5f0c1e9a7b3d2c4e"
THEIRS = "node-b 0a1b2c3d4e5f6a7b"


async def renew(client: Client, lease: str, ttl_ms: int, shard: int = SHARD) -> Any:
    """One `lease_renew` call, arguments in the header's order."""
    return await LEASE_RENEW(client, [KEYS.lease(shard)], [lease, ttl_ms])


async def test_the_holder_renews(client: Client) -> None:
    await client.set(KEYS.lease(SHARD), MINE, px=1_000)

    assert await renew(client, MINE, 60_000) == 1

    # Far above the 1 s it had: the TTL was replaced, not left to run out.
    assert await client.pttl(KEYS.lease(SHARD)) > 50_000
    assert await client.get(KEYS.lease(SHARD)) == MINE


async def test_another_holders_lease_is_left_alone(client: Client) -> None:
    await client.set(KEYS.lease(SHARD), THEIRS, px=30_000)
    expire_at = await client.pexpiretime(KEYS.lease(SHARD))

    # A node that lost the lease and kept ticking must not keep the new owner's lease alive (rq's blind EXPIRE).
    assert await renew(client, MINE, 60_000) == 0

    assert await client.get(KEYS.lease(SHARD)) == THEIRS
    assert await client.pexpiretime(KEYS.lease(SHARD)) == expire_at


async def test_the_same_node_with_an_old_token_is_another_holder(client: Client) -> None:
    await client.set(KEYS.lease(SHARD), "node-a 0000000000000000", px=30_000)

    assert await renew(client, MINE, 60_000) == 0


async def test_an_absent_lease_is_not_recreated(client: Client) -> None:
    assert await renew(client, MINE, 60_000) == 0

    assert await client.pexpiretime(KEYS.lease(SHARD)) == ABSENT


async def test_store_renews_each_shard_it_still_holds(store: RedisStore, client: Client) -> None:
    await client.set(KEYS.lease(1), MINE, px=1_000)
    await client.set(KEYS.lease(2), THEIRS, px=1_000)
    await client.set(KEYS.lease(200), MINE, px=1_000)

    assert await store.renew_leases([1, 2, 3, 200], MINE, 60_000) == [True, False, False, True]

    assert await client.pttl(KEYS.lease(1)) > 50_000
    assert await client.pttl(KEYS.lease(2)) <= 1_000
