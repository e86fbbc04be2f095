"""Why every script takes keys of one shard only, shown on the 3-master cluster (skipped on standalone): for many
gids and every shard, each script's keys hash to one slot and the shards spread over all masters; the scripts run
on each master; and a call mixing two shards' keys is refused (by redis-py before sending, or by the server) and
writes nothing."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from fastdtm.models import PAUSED_MS
from tests.lua.support import (
    ADMIN_MARK,
    ADMIN_PAUSE,
    ADMIN_RESUME,
    CLAIM_DUE,
    CREATE,
    KEYS,
    LEASE_RELEASE,
    LEASE_RENEW,
    LOAD,
    REGISTER_BRANCH,
    RESET_CRON,
    T0,
    TAKE,
    TAKE_OVER,
    TOUCH,
    TRANSITION,
    gids_in_shard,
    tagged,
)
from tests.support.redis_client import Client
from tests.support.redis_servers import CLUSTER_SCHEME


def cluster_of(redis_url: str, client: Client) -> RedisCluster:
    if not redis_url.startswith(CLUSTER_SCHEME):
        pytest.skip("hash slots exist only on Redis Cluster")
    assert isinstance(client, RedisCluster)
    return client


def script_keys(gid: str) -> list[list[str]]:
    """The KEYS of every per-transaction script for one gid, as `RedisStore` passes them: create, transition,
    touch, load (and take, take_over, admin_mark), register_branch, admin_pause (and admin_resume)."""
    g, b, due, idx, exp = KEYS.of_trans(gid)
    att = KEYS.attention(KEYS.shard_of(gid))
    return [[g, b, due, idx, exp], list(KEYS.of_transition(gid)), [g, due], [g, b, due], [g, b], [g, due, att]]


def shard_keys(shard: int) -> list[list[str]]:
    """The KEYS of every per-shard script: claim_due, lease_renew and lease_release, reset_cron."""
    return [
        [KEYS.lease(shard), KEYS.due(shard), KEYS.index(shard), KEYS.expiring(shard)],
        [KEYS.lease(shard)],
        [KEYS.due(shard)],
    ]


async def test_each_scripts_keys_share_a_slot_and_the_shards_cover_every_master(redis_url: str, client: Client) -> None:
    cluster = cluster_of(redis_url, client)
    await cluster.initialize()  # loads the slot map that `get_node_from_key` reads
    calls = [keys for i in range(2_000) for keys in script_keys(f"gid-{i}")]
    calls += [keys for shard in range(KEYS.shards) for keys in shard_keys(shard)]

    masters: set[str] = set()
    for keys in calls:
        assert len({cluster.keyslot(key) for key in keys}) == 1, keys
        node = cluster.get_node_from_key(keys[0])
        assert node is not None
        masters.add(node.name)

    assert masters == {node.name for node in cluster.get_primaries()}
    assert len(masters) == 3


async def test_every_script_runs_on_every_master(redis_url: str, client: Client) -> None:
    cluster = cluster_of(redis_url, client)
    lease = "node-a 5f0c1e9a7b3d2c4e"
    # One gid per shard, so that every master serves some of the calls below.
    gids = [gids_in_shard(shard, 1)[0] for shard in range(KEYS.shards)]
    for shard, gid in enumerate(gids):
        g, b, due, idx, exp = KEYS.of_trans(gid)
        fields = ["gid", gid, "trans_type", "tcc", "status", "prepared"]
        args: list[str | int] = [gid, "tcc", T0, T0, "", 3, *fields, '["01", "cancel", "", "", 0]']
        assert tagged(await CREATE(cluster, [g, b, due, idx, exp], args)) == ["CREATED"]
        triple = ['["01", "confirm", "", "", 0]', "u:01:confirm", "prepared"]
        assert tagged(await REGISTER_BRANCH(cluster, [g, b], [T0, "tcc", 100, "http", *triple])) == ["OK"]
        assert tagged(await TOUCH(cluster, [g, due], [gid, T0 + 5, T0])) == ["OK", "prepared"]
        transition_keys = list(KEYS.of_transition(gid))
        moved = await TRANSITION(cluster, transition_keys, [gid, "prepared", "submitted", "", "", "", "tcc", str(T0)])
        assert tagged(moved) == ["OK"]
        assert await RESET_CRON(cluster, [due], [T0, T0 - 1, 10, PAUSED_MS]) == [1, 0]
        loaded = await LOAD(cluster, [g, b, due], [gid])
        assert len(loaded[1]) == 2
        assert loaded[2] == str(T0 - 1)
        await cluster.set(KEYS.lease(shard), lease)
        claimed = await CLAIM_DUE(cluster, shard_keys(shard)[0], [lease, T0, 10, T0 + 1])
        assert tagged(claimed) == ["OK", str(T0 + 1), gid]
        assert await LEASE_RENEW(cluster, [KEYS.lease(shard)], [lease, 1_000]) == 1
        assert await LEASE_RELEASE(cluster, [KEYS.lease(shard)], [lease]) == 1
        assert (await TAKE(cluster, [g, b, due], [gid, T0 + 2, T0 + 9, "r1"]))[0] == "OK"
        taking_over = await TAKE_OVER(cluster, [g, b, due], [gid, "tcc", "prepared", "aborting", T0 + 9, "r2"])
        assert tagged(taking_over) == ["STALE", "submitted"]
        att = KEYS.attention(shard)
        assert tagged(await ADMIN_PAUSE(cluster, [g, due, att], [gid, T0 + 10, PAUSED_MS, "op1"])) == ["OK"]
        assert tagged(await ADMIN_RESUME(cluster, [g, due, att], [gid, T0 + 11])) == ["OK"]
        mark: list[str | int] = [gid, 0, "01", "cancel", "submitted", "succeed", '["skip", "r", 1]', T0 + 12, "op2"]
        assert tagged(await ADMIN_MARK(cluster, [g, b, due], mark)) == ["OK"]

    for node in cluster.get_primaries():
        stored = await cluster.keys(f"{KEYS.prefix}:*:g:*", target_nodes=node)
        assert stored, f"no transaction landed on {node.name}"


async def test_a_call_mixing_two_shards_is_refused_by_the_client(redis_url: str, client: Client) -> None:
    cluster = cluster_of(redis_url, client)
    mine, other = gids_in_shard(1, 1)[0], gids_in_shard(200, 1)[0]
    g, b, due, idx, exp = KEYS.of_trans(mine)
    other_due = KEYS.due(KEYS.shard_of(other))
    create_args: list[str | int] = [mine, "saga", T0, T0, "", 1, "status", "prepared"]
    mixed = [g, b, other_due, idx, exp]

    # redis-py 8.1 checks the slots only once it knows the cluster: the very first command of a fresh client goes
    # out unchecked, and then it is the server that refuses it (CROSSSLOT). Either way nothing is written.
    with pytest.raises((RedisClusterException, ClusterCrossSlotError)):
        await CREATE(cluster, mixed, create_args)
    # From then on the client refuses before sending: a script may only touch one slot. Had the keys not shared a
    # tag, no script could touch a transaction's hash and its shard's due set atomically.
    with pytest.raises(RedisClusterException, match="same key slot"):
        await CREATE(cluster, mixed, create_args)
    with pytest.raises(RedisClusterException, match="same key slot"):
        await LOAD(cluster, [g, b, other_due], [mine])
    with pytest.raises(RedisClusterException, match="same key slot"):
        await REGISTER_BRANCH(
            cluster, [g, KEYS.branches(other)], [T0, "tcc", 100, "http", "[]", "u:01:try", "prepared"]
        )

    assert await cluster.exists(g, b, other_due, idx, exp, KEYS.branches(other)) == 0
    # The same script with keys of one tag goes through, even for two different gids of that shard.
    neighbour = gids_in_shard(1, 2)[1]
    assert await LOAD(cluster, [g, KEYS.branches(neighbour), due], [mine]) == []
    assert tagged(await CREATE(cluster, [g, b, due, idx, exp], create_args)) == ["CREATED"]
