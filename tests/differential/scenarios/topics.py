"""Topic scenarios: subscribe, unsubscribe and delete, and a msg sent to a topic's subscribers."""

from __future__ import annotations

from ..scenario import Request, Sleep, WaitStatus, get, msg_body, post, scenario

SUBSCRIBE = get("subscribe", topic="{topic}", url="{busi}/sub1", remark="first")
SUBSCRIBE_2 = get("subscribe", topic="{topic}", url="{busi}/sub2", remark="second")
DELETE = Request("DELETE", "/api/dtmsvr/topic/{topic}")
# Go DTM loads topics into memory every ConfigUpdateInterval (1 s here); a msg to a new topic waits for it.
RELOAD = Sleep(2.0)

SCENARIOS = (
    scenario("topic-subscribe", "topics", SUBSCRIBE, get("queryKV", cat="topics", key="{topic}")),
    scenario("topic-subscribe-twice", "topics", SUBSCRIBE, SUBSCRIBE),
    scenario("topic-subscribe-empty-topic", "topics", get("subscribe", topic="", url="{busi}/sub1")),
    scenario("topic-subscribe-empty-url", "topics", get("subscribe", topic="{topic}", url="")),
    scenario(
        "topic-unsubscribe",
        "topics",
        SUBSCRIBE,
        SUBSCRIBE_2,
        get("unsubscribe", topic="{topic}", url="{busi}/sub1"),
        get("queryKV", cat="topics", key="{topic}"),
    ),
    scenario(
        "topic-unsubscribe-unknown-url", "topics", SUBSCRIBE, get("unsubscribe", topic="{topic}", url="{busi}/nope")
    ),
    scenario("topic-unsubscribe-unknown-topic", "topics", get("unsubscribe", topic="{topic}", url="{busi}/sub1")),
    scenario(
        "topic-unsubscribe-last",
        "topics",
        SUBSCRIBE,
        get("unsubscribe", topic="{topic}", url="{busi}/sub1"),
        get("queryKV", cat="topics", key="{topic}"),
    ),
    scenario("topic-delete", "topics", SUBSCRIBE, DELETE, get("queryKV", cat="topics", key="{topic}")),
    scenario("topic-delete-missing", "topics", DELETE),
    scenario(
        "topic-msg-fanout",
        "topics",
        SUBSCRIBE,
        SUBSCRIBE_2,
        RELOAD,
        post("submit", msg_body(["/m1", "topic://{topic}"])),
        WaitStatus(),
    ),
    scenario("topic-msg-unknown-topic", "topics", post("submit", msg_body(["topic://{topic}"]))),
)
