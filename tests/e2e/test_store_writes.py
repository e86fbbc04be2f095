"""How many store writes a saga costs, read from the node's own `fastdtm_store_calls_total`: a saga whose branches
need no I/O is stored once, already finished; one with branch calls is created before the first call goes out, and
its results are written with the final status; a slow round writes its progress as it goes."""

from __future__ import annotations

import time

import httpx

from tests.e2e.test_metrics_scrape import scrape, value
from tests.support.busi import BusiServer, Call, Reply
from tests.support.node import FastdtmNode


def writes(node: FastdtmNode) -> dict[str, float]:
    samples = scrape(node)
    return {name: value(samples, "fastdtm_store_calls_total", script=name) for name in ("create", "transition")}


def submit(node: FastdtmNode, gid: str, actions: list[str], *, wait: bool) -> httpx.Response:
    steps = [{"action": a, "compensate": a} for a in actions]
    body = {"gid": gid, "trans_type": "saga", "steps": steps, "payloads": ["{}"] * len(steps), "wait_result": wait}
    return httpx.post(f"{node.dtm}/submit", json=body, timeout=10)


def query(node: FastdtmNode, gid: str) -> dict[str, object]:
    reply: dict[str, object] = httpx.get(f"{node.dtm}/query", params={"gid": gid}, timeout=10).json()
    return reply


def statuses(reply: dict[str, object]) -> list[tuple[str, str]]:
    branches = reply["branches"]
    assert isinstance(branches, list)
    return [(b["op"], b["status"]) for b in branches]


def test_a_saga_without_branch_io_is_one_create_already_finished(node: FastdtmNode) -> None:
    before = writes(node)

    reply = submit(node, "no-io-wait", ["", ""], wait=True)

    assert reply.status_code == 200 and "SUCCESS" in reply.text
    after = writes(node)
    assert after["create"] - before["create"] == 1
    assert after["transition"] - before["transition"] == 0
    stored = query(node, "no-io-wait")
    assert isinstance(stored["transaction"], dict) and stored["transaction"]["status"] == "succeed"
    assert statuses(stored) == [("compensate", "prepared"), ("action", "succeed")] * 2


def test_without_wait_result_the_reply_comes_once_it_is_stored(node: FastdtmNode) -> None:
    reply = submit(node, "no-io-async", ["", ""], wait=False)

    assert reply.status_code == 200
    # Already stored, and here already finished: the reply waited for the one write.
    stored = query(node, "no-io-async")
    assert isinstance(stored["transaction"], dict) and stored["transaction"]["status"] == "succeed"


def test_a_saga_with_branch_calls_is_created_before_the_first_call(node: FastdtmNode, busi: BusiServer) -> None:
    seen: list[object] = []

    def look(call: Call) -> None:
        # What the store holds while the first branch is being called.
        seen.append(query(node, "with-io")["transaction"])

    busi.on("/Seen", look)
    before = writes(node)

    reply = submit(node, "with-io", [busi.url("/Seen"), busi.url("/Ok")], wait=True)

    assert reply.status_code == 200 and "SUCCESS" in reply.text
    after = writes(node)
    assert after["create"] - before["create"] == 1
    # Both results ride with the final status: the round took well under engine.PROGRESS_WRITE_MS.
    assert after["transition"] - before["transition"] == 1
    assert len(seen) == 1 and isinstance(seen[0], dict) and seen[0]["status"] == "submitted"


def test_a_slow_round_writes_its_progress_before_calling_on(node: FastdtmNode, busi: BusiServer) -> None:
    seen: list[object] = []

    def look(call: Call) -> None:
        seen.append(statuses(query(node, "slow")))

    busi.script("/Slow", [Reply(200, delay=1.2)])
    busi.on("/Look", look)

    reply = submit(node, "slow", [busi.url("/Slow"), busi.url("/Look")], wait=True)

    assert reply.status_code == 200 and "SUCCESS" in reply.text
    # The round had not written for longer than PROGRESS_WRITE_MS: the first result was stored before the second call.
    assert seen == [
        [("compensate", "prepared"), ("action", "succeed"), ("compensate", "prepared"), ("action", "prepared")]
    ]


def test_a_taken_gid_is_not_overwritten(node: FastdtmNode) -> None:
    assert submit(node, "taken", ["", ""], wait=True).status_code == 200
    created = query(node, "taken")["transaction"]
    time.sleep(0.01)

    again = submit(node, "taken", ["", "", ""], wait=True)

    assert again.status_code == 409
    stored = query(node, "taken")
    assert stored["transaction"] == created
    assert len(statuses(stored)) == 4
