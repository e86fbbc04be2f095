"""Nothing is lost when a node dies: the cron of another node finishes its transactions, and its
shard leases move to the survivors within the lease TTL. Also: shards spread over every cluster master.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import pytest
import redis
from dtmcli import saga, utils
from redis.cluster import RedisCluster

from fastdtm.sharding import Keys
from tests.e2e.helpers import paths, statuses
from tests.support.busi import BusiServer, Reply
from tests.support.node import NodeFactory, wait_status
from tests.support.redis_servers import ClusterTarget

KEYS = Keys()
LEASE_TTL = 1.5  # the test nodes' --lease-ttl (tests/support/node.py)


def sync_client(redis_url: str) -> redis.Redis | RedisCluster:
    if redis_url.startswith("redis+cluster://"):
        # One startup node is enough: the client discovers the others.
        host, port = redis_url.removeprefix("redis+cluster://").split(",")[0].rsplit(":", 1)
        return RedisCluster(host=host, port=int(port), decode_responses=True)
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis | RedisCluster]:
    client = sync_client(redis_url)
    yield client
    client.close()


def lease_holders(client: redis.Redis | RedisCluster) -> collections.Counter[str]:
    """node_id -> number of shard leases it holds (None for free shards)."""
    holders: collections.Counter[str] = collections.Counter()
    for shard in range(KEYS.shards):
        value = client.get(KEYS.lease(shard))
        holders[str(value).split(" ")[0] if value else "-"] += 1
    return holders


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_a_saga_whose_node_was_killed_mid_branch_is_finished_by_another_node(
    node_factory: NodeFactory, redis_url: str, busi: BusiServer
) -> None:
    first = node_factory(redis_url, env={"FASTDTM_NODE_ID": "first"})
    second = node_factory(redis_url, env={"FASTDTM_NODE_ID": "second"})
    # The first call of TransOut hangs: the node that made it dies meanwhile.
    busi.script("/TransOut", [Reply(200, delay=5.0), 200])
    s = saga.Saga(first.dtm, utils.gen_gid(first.dtm))
    s.add({"amount": 30}, busi.url("/TransOut"), busi.url("/TransOutRevert"))
    s.add({"amount": 30}, busi.url("/TransIn"), busi.url("/TransInRevert"))
    s.submit()
    gid = s.trans_base.gid
    busi.wait_calls("/TransOut", 1)
    first.kill()
    reply = wait_status(second, gid, {"succeed"}, timeout=15)
    assert statuses(reply) == "psps"
    # At-least-once: the interrupted action is called again; nothing is compensated.
    assert paths(busi, gid) == ["/TransOut", "/TransOut", "/TransIn"]


def test_leases_split_between_nodes_and_move_to_the_survivor_within_the_ttl(
    node_factory: NodeFactory, redis_url: str, store: redis.Redis | RedisCluster
) -> None:
    node_factory(redis_url, env={"FASTDTM_NODE_ID": "node-a"})
    wait_for(lambda: lease_holders(store)["node-a"] == KEYS.shards, 10, "node-a holds every shard alone")
    b = node_factory(redis_url, env={"FASTDTM_NODE_ID": "node-b"})
    # Rendezvous hashing: a newcomer gets roughly half of the shards, handed over without waiting for a TTL.
    wait_for(
        lambda: (
            lease_holders(store)["node-b"] > KEYS.shards // 4
            and sum(lease_holders(store)[n] for n in ("node-a", "node-b")) == KEYS.shards
        ),
        10,
        "node-b takes over part of the shards",
    )
    held_by_b = lease_holders(store)["node-b"]
    assert KEYS.shards // 4 < held_by_b < 3 * KEYS.shards // 4
    b.kill()
    killed_at = time.monotonic()
    wait_for(lambda: lease_holders(store)["node-a"] == KEYS.shards, 10, "node-a takes node-b's shards back")
    # The dead node's leases expire after the TTL; heartbeats and ticks add at most about a second.
    assert time.monotonic() - killed_at < LEASE_TTL + 2.0


def test_a_node_stopping_cleanly_hands_its_shards_over_at_once(
    node_factory: NodeFactory, redis_url: str, store: redis.Redis | RedisCluster
) -> None:
    node_factory(redis_url, "--lease-ttl", "30", env={"FASTDTM_NODE_ID": "stays"})
    leaving = node_factory(redis_url, "--lease-ttl", "30", env={"FASTDTM_NODE_ID": "leaves"})
    wait_for(lambda: lease_holders(store)["leaves"] > 0, 10, "the second node owns shards")
    leaving.stop()
    # With a 30 s TTL, only a release on shutdown explains a quick takeover.
    wait_for(lambda: lease_holders(store)["stays"] == KEYS.shards, 5, "the remaining node owns every shard")


@pytest.mark.cluster
def test_transactions_spread_over_every_cluster_master(
    node_factory: NodeFactory, redis_cluster: ClusterTarget, busi: BusiServer
) -> None:
    redis_cluster.flush()
    node = node_factory(redis_cluster.url)
    gids = set()
    for _ in range(60):
        s = saga.Saga(node.dtm, utils.gen_gid(node.dtm)).add({"n": 1}, busi.url("/A"), busi.url("/C"))
        s.trans_base.wait_result = True
        s.submit()
        gids.add(s.trans_base.gid)
    per_master: dict[int, set[str]] = {}
    for host, port in redis_cluster.masters():
        with redis.Redis(host=host, port=port, decode_responses=True) as client:
            # SCAN on one node lists only the keys that node holds.
            per_master[port] = {key.rsplit(":g:", 1)[1] for key in client.scan_iter(match="fastdtm:*:g:*")}
    assert set().union(*per_master.values()) == gids
    assert all(per_master.values()), {port: len(found) for port, found in per_master.items()}


def test_node_and_saga_status_shown_by_query_on_any_node(
    node_factory: NodeFactory, redis_url: str, busi: BusiServer
) -> None:
    a = node_factory(redis_url)
    b = node_factory(redis_url)
    s = saga.Saga(a.dtm, utils.gen_gid(a.dtm)).add({}, busi.url("/A"), busi.url("/C"))
    s.trans_base.wait_result = True
    s.submit()
    assert wait_status(b, s.trans_base.gid, {"succeed"}, timeout=2)["transaction"]["status"] == "succeed"
