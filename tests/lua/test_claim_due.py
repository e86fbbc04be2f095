"""`claim_due.lua`: the fenced cron claim of one shard. Pins KEYS lease, due, idx, exp; ARGV lease value,
now_ms, limit, claimed_until_ms; replies {"OK", next_ms, gid, ...} (score <= now, at most `limit`, by score,
re-scored to claimed_until; next_ms the earliest score left in due or exp, "" if none) | {"LEASE_LOST"}
(nothing written, not even the listing clean-up); the retirement of listing entries whose data expired; and
the `RedisStore.claim_due` mapping to `Claimed` and `LeaseLost`."""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ResponseError

from fastdtm.errors import LeaseLost
from fastdtm.models import PAUSED_MS
from fastdtm.store.base import Claimed
from fastdtm.store.redis import RedisStore
from tests.lua.support import CLAIM_DUE, KEYS, T0, gids_in_shard, tagged, wait_gone, zset
from tests.support.redis_client import Client

SHARD = 5
LEASE = "node-a 5f0c1e9a7b3d2c4e"
NOW = T0 + 1_000
UNTIL = NOW + 10_000


async def claim(client: Client, now: int = NOW, limit: int = 100, lease: str = LEASE, until: int = UNTIL) -> Any:
    """One `claim_due` call on SHARD, arguments in the header's order."""
    keys = [KEYS.lease(SHARD), KEYS.due(SHARD), KEYS.index(SHARD), KEYS.expiring(SHARD)]
    return await CLAIM_DUE(client, keys, [lease, now, limit, until])


async def held(client: Client, lease: str = LEASE, ttl_ms: int = 60_000) -> None:
    await client.set(KEYS.lease(SHARD), lease, px=ttl_ms)


async def due_in(client: Client, scores: dict[str, int]) -> None:
    await client.zadd(KEYS.due(SHARD), dict(scores))


async def shard_sets(client: Client) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    return (
        await zset(client, KEYS.due(SHARD)),
        await zset(client, KEYS.index(SHARD)),
        await zset(client, KEYS.expiring(SHARD)),
    )


async def test_claims_only_what_is_due_by_score_and_pushes_it_to_claimed_until(client: Client) -> None:
    a, b, c, d = gids_in_shard(SHARD, 4)
    await held(client)
    # Inserted out of order: the reply must follow the scores. `c` is due exactly now (inclusive).
    await due_in(client, {a: NOW - 10, b: NOW + 1, c: NOW, d: NOW - 500})

    reply = await claim(client)

    assert tagged(reply) == ["OK", str(NOW + 1), d, a, c]
    assert await zset(client, KEYS.due(SHARD)) == {d: UNTIL, a: UNTIL, c: UNTIL, b: NOW + 1}


async def test_claims_at_most_limit_earliest_first(client: Client) -> None:
    gids = gids_in_shard(SHARD, 5)
    await held(client)
    await due_in(client, {gid: NOW - 100 + i for i, gid in enumerate(gids)})

    reply = await claim(client, limit=3)

    assert tagged(reply) == ["OK", str(NOW - 97), *gids[:3]]
    # The ones left over keep their scores: the next claim takes them first.
    assert await zset(client, KEYS.due(SHARD)) == {
        gids[3]: NOW - 97,
        gids[4]: NOW - 96,
        **dict.fromkeys(gids[:3], UNTIL),
    }


async def test_a_second_claim_at_the_same_now_gets_nothing(client: Client) -> None:
    gids = gids_in_shard(SHARD, 3)
    await held(client)
    await due_in(client, dict.fromkeys(gids, NOW - 1))

    assert tagged(await claim(client)) == ["OK", str(UNTIL), *sorted(gids)]
    assert tagged(await claim(client)) == ["OK", str(UNTIL)]


async def test_an_empty_shard_is_ok_with_no_next_time(client: Client) -> None:
    await held(client)

    assert tagged(await claim(client)) == ["OK", ""]


async def test_next_is_the_earliest_of_due_and_expiring(client: Client) -> None:
    a, b = gids_in_shard(SHARD, 2)
    await held(client)
    await due_in(client, {a: NOW + 500})
    await client.zadd(KEYS.expiring(SHARD), {b: NOW + 300})
    assert tagged(await claim(client)) == ["OK", str(NOW + 300)]

    await client.zadd(KEYS.expiring(SHARD), {b: NOW + 900})
    assert tagged(await claim(client)) == ["OK", str(NOW + 500)]

    # What is left due beyond the limit is due now: the cron looks again next tick.
    await due_in(client, {b: NOW - 1, a: NOW - 2})
    assert tagged(await claim(client, limit=1)) == ["OK", str(NOW - 1), a]


async def test_more_expired_than_one_claim_retires_leaves_next_due_now(client: Client) -> None:
    gids = [f"old-{i}" for i in range(300)]
    await held(client)
    await client.zadd(KEYS.expiring(SHARD), dict.fromkeys(gids, NOW - 1))

    reply = tagged(await claim(client))

    assert reply == ["OK", str(NOW - 1)]
    assert await client.zcard(KEYS.expiring(SHARD)) == 300 - 256


async def test_paused_transactions_count_at_their_far_score(client: Client) -> None:
    (a,) = gids_in_shard(SHARD, 1)
    await held(client)
    await due_in(client, {a: PAUSED_MS})

    assert tagged(await claim(client)) == ["OK", str(PAUSED_MS)]


async def test_another_token_is_lease_lost_and_writes_nothing(client: Client) -> None:
    gids = gids_in_shard(SHARD, 3)
    await held(client, "node-b 0000000000000000")
    await due_in(client, dict.fromkeys(gids, NOW - 1))
    # An expired listing entry too: a fenced-out node must not even do the clean-up.
    await client.zadd(KEYS.index(SHARD), {gids[0]: T0})
    await client.zadd(KEYS.expiring(SHARD), {gids[0]: NOW - 1})
    before = await shard_sets(client)
    due_bytes = await client.dump(KEYS.due(SHARD))

    # Same node id, old token: a node that lost the lease and took it back must not use its old claim.
    assert tagged(await claim(client, lease="node-a 1111111111111111")) == ["LEASE_LOST"]

    assert await client.dump(KEYS.due(SHARD)) == due_bytes
    assert await shard_sets(client) == before
    assert await client.get(KEYS.lease(SHARD)) == "node-b 0000000000000000"


async def test_an_expired_lease_is_lease_lost(client: Client) -> None:
    gids = gids_in_shard(SHARD, 2)
    await held(client, ttl_ms=50)
    await due_in(client, dict.fromkeys(gids, NOW - 1))
    due_bytes = await client.dump(KEYS.due(SHARD))
    await wait_gone(client, KEYS.lease(SHARD))

    assert tagged(await claim(client)) == ["LEASE_LOST"]
    assert await client.dump(KEYS.due(SHARD)) == due_bytes


async def test_no_lease_at_all_is_lease_lost(client: Client) -> None:
    await due_in(client, {gids_in_shard(SHARD, 1)[0]: NOW - 1})

    assert tagged(await claim(client)) == ["LEASE_LOST"]


async def test_drops_expired_gids_from_idx_and_exp_and_keeps_the_others(client: Client) -> None:
    gone, boundary, alive, unfinished = gids_in_shard(SHARD, 4)
    await held(client)
    await client.zadd(KEYS.index(SHARD), {gone: T0, boundary: T0 + 1, alive: T0 + 2, unfinished: T0 + 3})
    await client.zadd(KEYS.expiring(SHARD), {gone: NOW - 1, boundary: NOW, alive: NOW + 1})

    assert tagged(await claim(client)) == ["OK", str(NOW + 1)]

    _, idx, exp = await shard_sets(client)
    assert idx == {alive: T0 + 2, unfinished: T0 + 3}
    assert exp == {alive: NOW + 1}


async def test_a_large_limit_is_all_or_nothing(client: Client) -> None:
    # claim_batch and cron_concurrency are settings; nothing bounds them below this.
    # The script never looks at which shard a gid hashes to, so any names will do for the bulk.
    gids = [f"bulk-{i}" for i in range(8_000)]
    await held(client)
    await due_in(client, dict.fromkeys(gids, NOW - 1))
    before = await client.dump(KEYS.due(SHARD))
    try:
        reply: Any = await claim(client, limit=len(gids))
    except ResponseError:
        reply = None

    if reply is None:
        assert await client.dump(KEYS.due(SHARD)) == before, "the script failed after re-scoring the claimed gids"
    else:
        assert len(reply) == len(gids) + 2


async def test_store_returns_the_claimed_gids_and_the_next_time(store: RedisStore, client: Client) -> None:
    a, b = gids_in_shard(SHARD, 2)
    await held(client)
    await due_in(client, {a: NOW - 2, b: NOW - 1})

    assert await store.claim_due(SHARD, LEASE, NOW, 10, UNTIL) == Claimed([a, b], UNTIL)


async def test_store_maps_lease_lost(store: RedisStore, client: Client) -> None:
    await held(client, "node-b 0000000000000000")

    with pytest.raises(LeaseLost):
        await store.claim_due(SHARD, LEASE, NOW, 10, UNTIL)


async def test_claim_many_reloads_the_script_after_the_server_forgot_it(client: Client, store: RedisStore) -> None:
    # The pipelined claim (standalone) must survive a Redis restart's empty script cache too.
    assert await store.acquire_lease(0, "node-a t", 60_000)
    await client.script_flush()
    assert await store.claim_due_many([0], "node-a t", 1_000, 10, 2_000) == {0: Claimed([], None)}
