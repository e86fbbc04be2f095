"""Msg topics end to end over raw HTTP (reference dtm-protocol §4.2 subscribe/unsubscribe/topic, §6.2; S24).

Subscriptions are made with DTM's `GET subscribe?topic=&url=&remark=` and a msg is submitted in the Go SDK's shape
(`AddTopic` puts `topic://<name>` as a step's action). Proves: a topic step fans out to one branch per subscriber,
ids `01-01`, `01-02` (plain `01` for a single subscriber), each called with the step's payload; an unknown, emptied
or deleted topic is refused with 4xx "topic not found" and nothing is written; a duplicate subscription is a 409;
an unsubscribed URL is no longer called; and, with no per-node cache, a change made through one node is used at
once by another node on the same store.
"""

from __future__ import annotations

import json

import httpx

from tests.e2e.helpers import bodies, branch_rows, sequence
from tests.e2e.raw import Raw, failure, lit, ok
from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

TOPIC = "t"
#: Go's TransBase for `NewMsg(dtm, gid).AddTopic(...).Add(...).Submit()` (dtm-clients §3.2).
GO_MSG = '{"gid":$gid,"trans_type":"msg","concurrent":false,"steps":$steps,"payloads":$payloads,"protocol":""}'
#: ... and for `Prepare(queryPrepared)`.
GO_MSG_PREPARE = (
    '{"gid":$gid,"trans_type":"msg","concurrent":false,"steps":$steps,"payloads":$payloads,'
    '"query_prepared":$query_prepared,"protocol":""}'
)
TOPIC_PAYLOAD = '{"order":1}'
PLAIN_PAYLOAD = '{"amount":30}'


def subscribe(dtm: Raw, url: str, topic: str = TOPIC) -> httpx.Response:
    return dtm.get("/subscribe", topic=topic, url=url, remark="")


def submit_topic_msg(dtm: Raw, busi: BusiServer, topic: str = TOPIC) -> tuple[str, httpx.Response]:
    """A msg whose first step goes to a topic and whose second is a plain URL; returns (gid, reply)."""
    gid = dtm.new_gid()
    steps = [{"action": f"topic://{topic}"}, {"action": busi.url("/C")}]
    body = lit(GO_MSG, gid=gid, steps=steps, payloads=[TOPIC_PAYLOAD, PLAIN_PAYLOAD])
    return gid, dtm.post("/submit", body)


def assert_topic_not_found(node: FastdtmNode, gid: str, reply: httpx.Response) -> None:
    assert 400 <= reply.status_code < 500, f"HTTP {reply.status_code} {reply.text}"
    assert "topic not found" in reply.json()["message"]
    assert query(node, gid) == {"transaction": None, "branches": []}


def subscribers(dtm: Raw, topic: str = TOPIC) -> list[dict[str, str]]:
    """The topic's stored value (KV cat=topics), as DTM's admin UI reads it."""
    entries = dtm.get("/queryKV", cat="topics", key=topic).json()["kv"]
    return [] if not entries else list(json.loads(entries[0]["v"]))


def test_a_topic_step_fans_out_to_every_subscriber(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    ok(subscribe(dtm, busi.url("/A")))
    ok(subscribe(dtm, busi.url("/B")))
    assert subscribers(dtm) == [{"url": busi.url("/A"), "remark": ""}, {"url": busi.url("/B"), "remark": ""}]
    gid, reply = submit_topic_msg(dtm, busi)
    ok(reply)
    done = wait_status(node, gid, {"succeed"})
    assert branch_rows(done) == [
        ("01-01", "action", "succeed"),
        ("01-02", "action", "succeed"),
        ("02", "action", "succeed"),
    ]
    assert [b["url"] for b in done["branches"]] == [busi.url("/A"), busi.url("/B"), busi.url("/C")]
    assert bodies(done) == [TOPIC_PAYLOAD, TOPIC_PAYLOAD, PLAIN_PAYLOAD]
    assert sequence(busi, gid) == [
        ("/A", "01-01", "action", "POST"),
        ("/B", "01-02", "action", "POST"),
        ("/C", "02", "action", "POST"),
    ]
    assert [c.body for c in busi.calls()] == [TOPIC_PAYLOAD.encode()] * 2 + [PLAIN_PAYLOAD.encode()]


def test_a_topic_with_one_subscriber_keeps_the_plain_branch_id(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    ok(subscribe(dtm, busi.url("/A")))
    gid, reply = submit_topic_msg(dtm, busi)
    ok(reply)
    done = wait_status(node, gid, {"succeed"})
    assert branch_rows(done) == [("01", "action", "succeed"), ("02", "action", "succeed")]
    assert sequence(busi, gid) == [("/A", "01", "action", "POST"), ("/C", "02", "action", "POST")]


def test_an_unknown_topic_is_refused_and_nothing_is_written(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    ok(subscribe(dtm, busi.url("/A"), topic="other"))
    gid, reply = submit_topic_msg(dtm, busi)
    assert_topic_not_found(node, gid, reply)
    # prepare resolves topics too (dtm-protocol §6.2: subscribers are resolved when the records are created).
    steps = [{"action": "topic://nope"}]
    prepare = lit(GO_MSG_PREPARE, gid=gid, steps=steps, payloads=[TOPIC_PAYLOAD], query_prepared=busi.url("/QP"))
    assert_topic_not_found(node, gid, dtm.post("/prepare", prepare))
    assert busi.calls() == []


def test_a_duplicate_subscription_is_a_conflict(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    ok(subscribe(dtm, busi.url("/A")))
    body = failure(subscribe(dtm, busi.url("/A")))
    assert body["message"].startswith("this url exists")
    assert subscribers(dtm) == [{"url": busi.url("/A"), "remark": ""}]


def test_an_unsubscribed_url_is_no_longer_called(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    ok(subscribe(dtm, busi.url("/A")))
    ok(subscribe(dtm, busi.url("/B")))
    ok(dtm.get("/unsubscribe", topic=TOPIC, url=busi.url("/A")))
    gid, reply = submit_topic_msg(dtm, busi)
    ok(reply)
    done = wait_status(node, gid, {"succeed"})
    assert branch_rows(done) == [("01", "action", "succeed"), ("02", "action", "succeed")]
    assert sequence(busi, gid) == [("/B", "01", "action", "POST"), ("/C", "02", "action", "POST")]
    # The last subscriber gone, the topic is empty: nothing to deliver to.
    ok(dtm.get("/unsubscribe", topic=TOPIC, url=busi.url("/B")))
    empty_gid, empty = submit_topic_msg(dtm, busi)
    assert_topic_not_found(node, empty_gid, empty)
    assert busi.calls("/A") == []


def test_a_deleted_topic_cannot_be_used(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    ok(subscribe(dtm, busi.url("/A")))
    ok(dtm.delete(f"/topic/{TOPIC}"))
    assert subscribers(dtm) == []
    gid, reply = submit_topic_msg(dtm, busi)
    assert_topic_not_found(node, gid, reply)
    assert busi.calls() == []


def test_topic_changes_are_seen_at_once_by_every_node(
    node_factory: NodeFactory, redis_url: str, busi: BusiServer
) -> None:
    # Several nodes on one store: Redis only (the embedded store serves one node).
    first, second = node_factory(redis_url), node_factory(redis_url)
    one, two = Raw.of(first), Raw.of(second)
    ok(subscribe(one, busi.url("/A")))
    ok(subscribe(one, busi.url("/B")))
    # No pause between the change and its use on the other node: there is no cache to refresh.
    gid, reply = submit_topic_msg(two, busi)
    ok(reply)
    assert [b["branch_id"] for b in wait_status(second, gid, {"succeed"})["branches"]] == ["01-01", "01-02", "02"]
    ok(two.get("/unsubscribe", topic=TOPIC, url=busi.url("/A")))
    gid, reply = submit_topic_msg(one, busi)
    ok(reply)
    assert [b["url"] for b in wait_status(first, gid, {"succeed"})["branches"]] == [busi.url("/B"), busi.url("/C")]
    # A deleted topic is gone for every node at once (DTM serves it from memory until restart: its quirk 5).
    ok(one.delete(f"/topic/{TOPIC}"))
    gid, reply = submit_topic_msg(two, busi)
    assert_topic_not_found(second, gid, reply)
