"""`reset_cron.lua`: bring forward the transactions of one shard scheduled far ahead (resetCronTime). Pins KEYS due;
ARGV threshold_ms, now_ms, limit, paused score; only gids scored strictly after the threshold (and before the
paused score) move, at most `limit` of them,
earliest first, to score now_ms; replies {moved, more} with more = 1 only if such gids are left over; nothing but
`due` is written. And `RedisStore.reset_cron`, which walks the shards in order, hands each the limit left and
returns (moved, limit_hit)."""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from fastdtm.models import PAUSED_MS
from fastdtm.store.redis import RedisStore
from tests.lua.support import KEYS, RESET_CRON, T0, fields_of, gids_in_shard, records, seed, trans_state, zset
from tests.support.redis_client import Client

SHARD = 11
NOW = T0 + 1_000
THRESHOLD = NOW + 60_000


async def reset(client: Client, limit: int = 100, threshold: int = THRESHOLD, now: int = NOW) -> Any:
    """One `reset_cron` call on SHARD, arguments in the header's order."""
    return await RESET_CRON(client, [KEYS.due(SHARD)], [threshold, now, limit, PAUSED_MS])


async def due_in(client: Client, scores: dict[str, int], shard: int = SHARD) -> None:
    await client.zadd(KEYS.due(shard), dict(scores))


async def test_moves_only_gids_scheduled_strictly_after_the_threshold(client: Client) -> None:
    before, at, after, far = gids_in_shard(SHARD, 4)
    await due_in(client, {before: THRESHOLD - 1, at: THRESHOLD, after: THRESHOLD + 1, far: THRESHOLD + 10**9})

    assert await reset(client) == [2, 0]

    assert await zset(client, KEYS.due(SHARD)) == {before: THRESHOLD - 1, at: THRESHOLD, after: NOW, far: NOW}


async def test_moves_at_most_limit_earliest_first_and_says_more_are_left(client: Client) -> None:
    gids = gids_in_shard(SHARD, 5)
    # Inserted latest first: which ones move must follow the scores, not the insertion order.
    await due_in(client, {gid: THRESHOLD + 100 - i for i, gid in enumerate(gids)})

    assert await reset(client, limit=3) == [3, 1]

    assert await zset(client, KEYS.due(SHARD)) == {
        **dict.fromkeys(gids[2:], NOW),
        gids[1]: THRESHOLD + 99,
        gids[0]: THRESHOLD + 100,
    }


async def test_exactly_limit_gids_are_not_more(client: Client) -> None:
    gids = gids_in_shard(SHARD, 3)
    await due_in(client, dict.fromkeys(gids, THRESHOLD + 1))

    assert await reset(client, limit=3) == [3, 0]

    assert await zset(client, KEYS.due(SHARD)) == dict.fromkeys(gids, NOW)


async def test_the_rest_moves_on_the_next_call(client: Client) -> None:
    gids = gids_in_shard(SHARD, 5)
    await due_in(client, dict.fromkeys(gids, THRESHOLD + 1))

    assert await reset(client, limit=2) == [2, 1]
    assert await reset(client, limit=2) == [2, 1]
    assert await reset(client, limit=2) == [1, 0]
    # What moved is now at `now`, inside the threshold: it is never moved twice.
    assert await reset(client, limit=2) == [0, 0]

    assert await zset(client, KEYS.due(SHARD)) == dict.fromkeys(gids, NOW)


async def test_nothing_after_the_threshold_writes_nothing(client: Client) -> None:
    gids = gids_in_shard(SHARD, 3)
    await due_in(client, {gids[0]: NOW - 5, gids[1]: NOW + 5, gids[2]: THRESHOLD})
    due_bytes = await client.dump(KEYS.due(SHARD))

    assert await reset(client) == [0, 0]

    assert await client.dump(KEYS.due(SHARD)) == due_bytes


async def test_an_empty_shard_is_zero_and_creates_no_key(client: Client) -> None:
    assert await reset(client) == [0, 0]

    assert await client.exists(KEYS.due(SHARD)) == 0


async def test_only_the_due_score_changes(client: Client) -> None:
    # The schedule lives in `due` alone: the transaction's hash, list and listing entries are left as they are.
    gid, neighbour = gids_in_shard(SHARD, 2)
    await seed(client, gid, fields_of(gid, "aborting"), records(2), due=THRESHOLD + 5)
    await seed(client, neighbour, fields_of(neighbour, "submitted"), due=NOW + 5)
    before = await trans_state(client, gid)

    assert await reset(client) == [1, 0]

    after = await trans_state(client, gid)
    assert after.due == {gid: NOW, neighbour: NOW + 5}
    assert (after.fields, after.branches, after.expire_at, after.idx, after.exp) == (
        before.fields,
        before.branches,
        before.expire_at,
        before.idx,
        before.exp,
    )
    assert "next_cron_time" not in after.fields


async def _due_of(client: Client, shards: list[int]) -> dict[int, dict[str, float]]:
    return {shard: await zset(client, KEYS.due(shard)) for shard in shards}


async def test_store_walks_every_shard(store: RedisStore, client: Client) -> None:
    # The first and the last shard and one between: on the cluster they live on different masters.
    shards = [0, 128, KEYS.shards - 1]
    if isinstance(client, RedisCluster):
        await client.initialize()
        nodes = {client.get_node_from_key(KEYS.due(shard)) for shard in shards}
        assert len({node.name for node in nodes if node is not None}) == 3
    for shard in shards:
        far, inside = gids_in_shard(shard, 2, stem=f"s{shard}")
        await due_in(client, {far: THRESHOLD + shard + 1, inside: THRESHOLD}, shard)

    assert await store.reset_cron(THRESHOLD, NOW, 100) == (3, False)

    for shard, scores in (await _due_of(client, shards)).items():
        far, inside = gids_in_shard(shard, 2, stem=f"s{shard}")
        assert scores == {far: NOW, inside: THRESHOLD}, shard


async def test_store_gives_each_shard_only_the_limit_left(store: RedisStore, client: Client) -> None:
    shards = [3, 100, 200]
    gids = {shard: gids_in_shard(shard, 2, stem=f"s{shard}") for shard in shards}
    for shard, (first, second) in gids.items():
        await due_in(client, {first: THRESHOLD + 1, second: THRESHOLD + 2}, shard)

    assert await store.reset_cron(THRESHOLD, NOW, 3) == (3, True)

    # Shards in order, each earliest first: shard 3 gives both, shard 100 its earliest, shard 200 is not reached.
    assert await _due_of(client, shards) == {
        3: dict.fromkeys(gids[3], NOW),
        100: {gids[100][0]: NOW, gids[100][1]: THRESHOLD + 2},
        200: {gids[200][0]: THRESHOLD + 1, gids[200][1]: THRESHOLD + 2},
    }


async def test_store_reports_the_limit_hit_until_a_call_moves_less(store: RedisStore, client: Client) -> None:
    shards = [3, 100, 200]
    for shard in shards:
        await due_in(client, dict.fromkeys(gids_in_shard(shard, 2, stem=f"s{shard}"), THRESHOLD + 1), shard)

    assert await store.reset_cron(THRESHOLD, NOW, 4) == (4, True)
    # limit_hit: exactly the limit moved, so the caller asks again, even though nothing was left this time.
    assert await store.reset_cron(THRESHOLD, NOW, 2) == (2, True)
    assert await store.reset_cron(THRESHOLD, NOW, 2) == (0, False)

    for scores in (await _due_of(client, shards)).values():
        assert set(scores.values()) == {NOW}


async def test_store_with_nothing_to_move(store: RedisStore, client: Client) -> None:
    await due_in(client, {gids_in_shard(SHARD, 1)[0]: THRESHOLD})

    assert await store.reset_cron(THRESHOLD, NOW, 100) == (0, False)
