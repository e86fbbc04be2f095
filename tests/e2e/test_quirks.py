"""DTM's bugs (reference §11, quirks 1, 3, 4) are fixed here on purpose: each test fails on DTM's behaviour.

Quirk 2 (a finished workflow loses its fields) is covered in test_workflow_raw.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from fastdtm.sharding import Keys
from tests.e2e.helpers import statuses
from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

KEYS = Keys()


@pytest.fixture
def client(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.dtm, timeout=15) as c:
        yield c


def register_tcc(client: httpx.Client, busi: BusiServer, gid: str, branch_id: str, name: str) -> None:
    body = {
        "gid": gid,
        "trans_type": "tcc",
        "branch_id": branch_id,
        "data": "{}",
        "confirm": busi.url(f"/{name}Confirm"),
        "cancel": busi.url(f"/{name}Cancel"),
    }
    assert client.post("/registerBranch", json=body).json() == {"dtm_result": "SUCCESS"}


def test_quirk1_a_second_submit_never_finishes_a_tcc_without_its_confirms(
    client: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    # DTM re-processes a second submit with a freshly built branch list, empty for tcc, which
    # reads as "everything confirmed": succeed, with TransOutConfirm never done.
    busi.script("/TransOutConfirm", [500])
    gid = "quirk1-tcc"
    client.post("/prepare", json={"gid": gid, "trans_type": "tcc", "retry_interval": 60})
    register_tcc(client, busi, gid, "01", "TransOut")
    register_tcc(client, busi, gid, "02", "TransIn")
    client.post("/submit", json={"gid": gid, "trans_type": "tcc"})
    busi.wait_calls("/TransOutConfirm", 1)
    time.sleep(0.2)
    again = client.post("/submit", json={"gid": gid, "trans_type": "tcc", "wait_result": True})
    assert again.status_code == 500  # the confirm it re-drove failed again
    reply = query(node, gid)
    assert reply["transaction"]["status"] == "submitted"
    assert statuses(reply) == "ppps"
    assert len(busi.calls("/TransOutConfirm")) == 2
    busi.script("/TransOutConfirm", [200])
    client.post("/resetNextCronTime", json={"gid": gid})
    assert statuses(wait_status(node, gid, {"succeed"}, timeout=10)) == "psps"


def test_quirk3_reset_next_cron_time_moves_the_schedule(
    client: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    busi.script("/A", [500, 200])
    gid = "quirk3-saga"
    body = {"gid": gid, "trans_type": "saga", "steps": [{"action": busi.url("/A")}], "payloads": ["{}"]}
    client.post("/submit", json={**body, "retry_interval": 100})
    busi.wait_calls("/A", 1)
    time.sleep(0.2)
    assert query(node, gid)["transaction"]["status"] == "submitted"  # next retry: 200 s away
    client.post("/resetNextCronTime", json={"gid": gid})
    # DTM's Redis store only rewrote the stored JSON: the retry stayed 200 s away.
    wait_status(node, gid, {"succeed"}, timeout=5)


def test_quirk4_finished_and_orphaned_gids_leave_the_due_index(
    node_factory: NodeFactory, busi: BusiServer, redis_url: str
) -> None:
    # Inspects Redis keys directly: Redis stores only (tests/store covers the embedded one).
    node = node_factory(redis_url)
    client = httpx.Client(base_url=node.dtm, timeout=15)
    store_url = redis_url
    gid = "quirk4-saga"
    body = {"gid": gid, "trans_type": "saga", "steps": [{"action": busi.url("/A")}], "payloads": ["{}"]}
    client.post("/submit", json={**body, "wait_result": True})
    r = _sync_client(store_url)
    due = KEYS.due(KEYS.shard_of(gid))
    assert r.zscore(due, gid) is None  # finished: out of the schedule at once
    # An orphan: scheduled, but its data is gone (DTM's cron re-scored such members forever).
    orphan = "quirk4-orphan"
    r.zadd(KEYS.due(KEYS.shard_of(orphan)), {orphan: 1})
    deadline = time.monotonic() + 5
    while r.zscore(KEYS.due(KEYS.shard_of(orphan)), orphan) is not None:
        assert time.monotonic() < deadline, "the orphan stayed in the due index"
        time.sleep(0.1)
    r.close()
    client.close()


def _sync_client(store_url: str) -> redis.Redis | redis.RedisCluster:
    if store_url.startswith("redis+cluster://"):
        host, port = store_url.removeprefix("redis+cluster://").split(",")[0].rsplit(":", 1)
        return redis.RedisCluster(host=host, port=int(port), decode_responses=True)
    return redis.Redis.from_url(store_url, decode_responses=True)
