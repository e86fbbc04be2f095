"""A paused node never acts on a transaction it has lost (docs/architecture.md, "Failure model").

Two nodes on one standalone Redis. Node B reaches Redis through a `HoldingProxy`, so a test can stall its
replies or freeze it (SIGSTOP) at an exact point: when B sends the script that loads the transaction for its
cron round (the first request after the pause that names the gid). Meanwhile node A takes B's shards over
(its heartbeat and leases lapse) and finishes the transaction its own way; then B wakes up with a stale view.
The participant is `tests.support.bank.Bank`, with DTM's barrier semantics: money moves only as the
coordinator decided, so a transfer that ends `failed` with money moved is the coordinator's fault.

The first two tests are issue 11's scenario (a saga whose TransOut fails for A: B must not call TransIn from
its stale view); the third is its variant for a node that crashes with an action's success unrecorded and is
rolled back by a timeout; the last is the same class for TCC and msg: a node frozen mid-round, woken after an
operator's forceStop, calls nothing more.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from fastdtm.cron import rendezvous_owner
from fastdtm.sharding import Keys
from tests.support.bank import Bank, transfer
from tests.support.busi import BusiServer, Call, Reply
from tests.support.node import FastdtmNode, NodeFactory, wait_status
from tests.support.redis_servers import RedisTarget
from tests.support.tcp_proxy import HoldingProxy

KEYS = Keys()
NODES = ("node-a", "node-b")
#: Long enough for A to see B gone (3 heartbeats), take its leases (TTL 1.5 s) and finish the saga.
STALL = 5.0


@pytest.fixture
def redis_url(redis_standalone: RedisTarget) -> str:
    redis_standalone.flush()
    return redis_standalone.url


@pytest.fixture
def proxy(redis_url: str) -> Iterator[HoldingProxy]:
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    with HoldingProxy((parts.hostname, parts.port)) as running:
        yield running
    assert not running.errors, running.errors


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def gid_of(owner: str, stem: str) -> str:
    """A gid whose shard `owner` keeps while both nodes live: B drives it until it stalls, A only after."""
    n = 0
    while rendezvous_owner(KEYS.shard_of(f"{stem}-{n}"), NODES) != owner:
        n += 1
    return f"{stem}-{n}"


def two_nodes(
    node_factory: NodeFactory, redis_url: str, proxy: HoldingProxy, store: redis.Redis, gid: str
) -> tuple[FastdtmNode, FastdtmNode]:
    b = node_factory(proxy.url_for(0), env={"FASTDTM_NODE_ID": "node-b"})
    a = node_factory(redis_url, env={"FASTDTM_NODE_ID": "node-a"})
    lease = KEYS.lease(KEYS.shard_of(gid))
    deadline = time.monotonic() + 10
    while not str(store.get(lease) or "").startswith("node-b") or store.zcard(KEYS.nodes()) < 2:
        assert time.monotonic() < deadline, "node-b never held the gid's shard beside a live node-a"
        time.sleep(0.05)
    return a, b


def post(node: FastdtmNode, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{node.dtm}/{path}", json=body, timeout=10)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.02)


def after_its_first_round(store: redis.Redis, busi: BusiServer, gid: str) -> None:
    """B's first round called TransOut (500) and wrote its pause: the retry interval doubled (0.5 -> 1 s)."""
    busi.wait_calls("/TransOut", 1)
    wait_until(lambda: store.hget(KEYS.trans(gid), "next_cron_interval") == "1000", 5, "B's round paused")


def paths(busi: BusiServer) -> list[str]:
    return [call.path for call in sorted(busi.calls(), key=lambda c: c.at)]


def test_a_node_whose_redis_replies_stall_does_not_act_on_its_stale_view(
    node_factory: NodeFactory, redis_url: str, proxy: HoldingProxy, store: redis.Redis, busi: BusiServer
) -> None:
    gid = gid_of("node-b", "stalled")
    bank = Bank().serve(busi)
    bank.plan("/TransOut", [500, 409])  # B's round: an error; A's retry: the business refuses (FAILURE)
    a, b = two_nodes(node_factory, redis_url, proxy, store, gid)
    assert post(b, "submit", transfer(busi, gid)).status_code == 200
    after_its_first_round(store, busi, gid)

    # B's cron takes the saga again; every reply it gets from Redis from then on comes STALL seconds late.
    proxy.arm_reply_hold(gid.encode(), STALL)
    assert proxy.wait_triggered(5), "B never came back for the saga"
    assert wait_status(a, gid, {"failed"}, timeout=STALL)["transaction"]["status"] == "failed"
    assert proxy.wait_released(STALL + 1)
    time.sleep(1.5)  # B has its stale view now: give it time to act on it

    assert paths(busi) == ["/TransOut", "/TransOut", "/TransOutRevert"]
    assert bank.net(gid) == {"alice": 0, "bob": 0}
    assert wait_status(b, gid, {"failed"}, timeout=1)["transaction"]["status"] == "failed"
    assert "round stopped" in b.log_text()


def test_a_node_frozen_past_its_lease_does_not_act_on_its_stale_view(
    node_factory: NodeFactory, redis_url: str, proxy: HoldingProxy, store: redis.Redis, busi: BusiServer
) -> None:
    gid = gid_of("node-b", "frozen")
    bank = Bank().serve(busi)
    bank.plan("/TransOut", [500, 409])
    a, b = two_nodes(node_factory, redis_url, proxy, store, gid)
    assert post(b, "submit", transfer(busi, gid)).status_code == 200
    after_its_first_round(store, busi, gid)

    # A frozen VM: B stops right after sending the load of its cron round, the reply waiting in its socket.
    proxy.arm_reply_hold(gid.encode(), 0.0, on_trigger=lambda: os.kill(b.pid, signal.SIGSTOP))
    try:
        assert proxy.wait_triggered(5), "B never came back for the saga"
        assert wait_status(a, gid, {"failed"}, timeout=STALL)["transaction"]["status"] == "failed"
    finally:
        os.kill(b.pid, signal.SIGCONT)
    time.sleep(1.5)

    assert paths(busi) == ["/TransOut", "/TransOut", "/TransOutRevert"]
    assert bank.net(gid) == {"alice": 0, "bob": 0}
    assert b.alive()


def test_an_action_whose_node_dies_is_compensated_when_a_timeout_rolls_the_saga_back(
    node_factory: NodeFactory, redis_url: str, proxy: HoldingProxy, store: redis.Redis, busi: BusiServer
) -> None:
    gid = gid_of("node-b", "crashed")
    bank = Bank().serve(busi)
    a, b = two_nodes(node_factory, redis_url, proxy, store, gid)

    def crash(call: Call) -> None:
        if b.alive():
            b.kill()  # dies with TransIn sent (the bank applies it): whatever B had not written is gone

    bank.before("/TransIn", crash)
    # A saga with a timeout: the node that takes over finds it timed out and rolls it back from what is stored.
    assert post(b, "submit", transfer(busi, gid, timeout_to_fail=1)).status_code == 200

    assert wait_status(a, gid, {"failed"}, timeout=10)["transaction"]["status"] == "failed"
    assert bank.net(gid) == {"alice": 0, "bob": 0}
    assert "/TransInRevert" in paths(busi)


@pytest.mark.parametrize("kind", ["tcc", "msg"])
def test_a_frozen_node_woken_after_a_force_stop_calls_no_further_branch(
    node_factory: NodeFactory, redis_url: str, proxy: HoldingProxy, store: redis.Redis, busi: BusiServer, kind: str
) -> None:
    gid = gid_of("node-b", kind)
    a, b = two_nodes(node_factory, redis_url, proxy, store, gid)
    # TCC confirms the last registered branch first; a msg delivers in order.
    first, second = ("/Confirm2", "/Confirm1") if kind == "tcc" else ("/Deliver1", "/Deliver2")
    frozen_at: list[float] = []

    def freeze(call: Call) -> Reply:
        if not frozen_at:
            os.kill(b.pid, signal.SIGSTOP)  # B waits for this reply, frozen
            frozen_at.append(time.monotonic())
        return Reply(200)

    busi.on(first, freeze)
    if kind == "tcc":
        assert post(b, "prepare", {"gid": gid, "trans_type": "tcc"}).status_code == 200
        for n in (1, 2):
            branch = {
                "gid": gid,
                "trans_type": "tcc",
                "branch_id": f"0{n}",
                "confirm": busi.url(f"/Confirm{n}"),
                "cancel": busi.url(f"/Cancel{n}"),
                "data": "{}",
            }
            assert post(b, "registerBranch", branch).status_code == 200
        submitted = post(b, "submit", {"gid": gid, "trans_type": "tcc"})
    else:
        steps = [{"action": busi.url("/Deliver1")}, {"action": busi.url("/Deliver2")}]
        body = {"gid": gid, "trans_type": "msg", "steps": steps, "payloads": ["{}", "{}"]}
        body["query_prepared"] = busi.url("/QueryPrepared")
        assert post(b, "prepare", body).status_code == 200
        submitted = post(b, "submit", body)
    assert submitted.status_code == 200
    try:
        busi.wait_calls(first, 1)
        assert post(a, "forceStop", {"gid": gid}).status_code == 200
        # Woken past its hold (0.5 s) but before a round would write its progress anyway (1 s): only the
        # hold's fence stands between B and the next branch of a transaction the operator stopped.
        time.sleep(max(0.0, frozen_at[0] + 0.8 - time.monotonic()))
    finally:
        os.kill(b.pid, signal.SIGCONT)
    time.sleep(1.0)

    assert busi.calls(second) == []
    assert wait_status(a, gid, {"failed"}, timeout=1)["transaction"]["status"] == "failed"
