"""Workflow over raw HTTP in the Go workflow client's shapes (reference dtm-protocol §6.5, dtm-clients §3.3, S30).

The test plays the Go client (`workflow.InitHTTP` + `Execute`): prepareWorkflow with the input in custom_data and its
resume callback in query_prepared, one registerBranch per finished step, and a submit whose req_extra carries the
verdict. Proves: the prepareWorkflow reply is what the client's protojson reader needs (`transaction.{gid,status,
rollback_reason,result}`, `progresses[].{branch_id,op,status,bin_data}` in registration order), which is how a
client replays; a duplicate (branch_id, op) is refused; submit sets succeed/failed and keeps the result (base64) and
the reason for the next Execute; a bad or late submit changes nothing; finishing keeps custom_data, query_prepared
and create_time (DTM's Redis store loses them: its quirk 2); and a workflow left prepared is resumed by the cron,
which POSTs the decoded input to the callback every retry interval without back-off until the client submits.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from typing import Any

import httpx

from tests.e2e.raw import Raw, failure, lit, ok
from tests.support.busi import BusiServer, Call, Reply
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

NAME = "transfer"
INPUT = b'{"amount":30}'
INPUT_B64 = "eyJhbW91bnQiOjMwfQ=="
CUSTOM_DATA = r'{"data":"eyJhbW91bnQiOjMwfQ==","name":"transfer"}'
#: Go's TransBase for prepareWorkflow, key for key (dtm-clients §3.3).
PREPARE = (
    r'{"gid":$gid,"trans_type":"workflow","custom_data":"{\"data\":\"eyJhbW91bnQiOjMwfQ==\",\"name\":\"transfer\"}",'
    r'"concurrent":false,"query_prepared":$callback,"protocol":"http"}'
)
#: A step's result: a Go map[string]string, keys sorted.
BRANCH = '{"branch_id":$branch_id,"data":$data,"gid":$gid,"op":$op,"status":$status,"trans_type":"workflow"}'
SUBMIT = (
    '{"gid":$gid,"trans_type":"workflow","req_extra":{"status":$status,"rollback_reason":$reason,"result":$result}}'
)
RESULT = b'{"balance":70}'
RESUME = "/workflow/resume"

Record = tuple[str, str, str, str]  # branch_id, op, status, data


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def prepare_workflow(dtm: Raw, gid: str, callback: str) -> dict[str, Any]:
    reply = dtm.post("/prepareWorkflow", lit(PREPARE, gid=gid, callback=callback))
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    assert list(body) == ["transaction", "progresses"]
    return body


def register(dtm: Raw, gid: str, record: Record) -> httpx.Response:
    branch_id, op, status, data = record
    return dtm.post("/registerBranch", lit(BRANCH, branch_id=branch_id, data=data, gid=gid, op=op, status=status))


def submit(dtm: Raw, gid: str, status: str, reason: str = "", result: str = "") -> httpx.Response:
    return dtm.post("/submit", lit(SUBMIT, gid=gid, status=status, reason=reason, result=result))


def records(rows: list[dict[str, Any]]) -> list[Record]:
    """Branch rows as the client reads them; bin_data is absent (= empty bytes to protojson) when empty."""
    return [(r["branch_id"], r["op"], r["status"], base64.b64decode(r.get("bin_data", "")).decode()) for r in rows]


def progress(reply: dict[str, Any]) -> list[Record]:
    """The `progresses` of a prepareWorkflow reply: what a client replays."""
    return records(reply["progresses"])


def assert_protojson_types(reply: dict[str, Any]) -> None:
    """protojson rejects a known field of the wrong type, so every field the client reads must be a string."""
    trans = reply["transaction"]
    for key in ("gid", "status", "rollback_reason", "result"):
        assert isinstance(trans.get(key, ""), str), (key, trans)
    for p in reply["progresses"]:
        assert all(isinstance(p.get(key, ""), str) for key in ("status", "bin_data", "branch_id", "op")), p


def started(node: FastdtmNode, busi: BusiServer) -> tuple[Raw, str]:
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    assert prepare_workflow(dtm, gid, busi.url(RESUME))["transaction"]["status"] == "prepared"
    return dtm, gid


def test_prepare_workflow_starts_a_prepared_workflow(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    reply = prepare_workflow(dtm, gid, busi.url(RESUME))
    assert reply["progresses"] == []
    trans = reply["transaction"]
    assert (trans["gid"], trans["trans_type"], trans["status"]) == (gid, "workflow", "prepared")
    assert (trans["custom_data"], trans["query_prepared"], trans["protocol"]) == (CUSTOM_DATA, busi.url(RESUME), "http")
    assert_protojson_types(reply)
    # A second Execute of the same gid gets the stored workflow back, not a new one.
    again = prepare_workflow(dtm, gid, busi.url(RESUME))
    assert again["transaction"]["create_time"] == trans["create_time"]
    assert again["transaction"]["status"] == "prepared"
    assert again["progresses"] == []


def test_registered_steps_come_back_as_progresses_in_order(node: FastdtmNode, busi: BusiServer) -> None:
    dtm, gid = started(node, busi)
    records: list[Record] = [
        ("01", "action", "succeed", '{"ok":true}'),
        ("02", "action", "failed", "insufficient balance"),
        ("02", "rollback", "succeed", ""),
        ("01", "rollback", "succeed", '{"undone":30}'),
    ]
    for record in records:
        ok(register(dtm, gid, record))
    reply = prepare_workflow(dtm, gid, busi.url(RESUME))
    assert reply["transaction"]["status"] == "prepared"
    assert progress(reply) == records
    assert [p["bin_data"] for p in reply["progresses"] if "bin_data" in p] == [
        b64(b'{"ok":true}'),
        b64(b"insufficient balance"),
        b64(b'{"undone":30}'),
    ]
    assert_protojson_types(reply)
    # A step recorded twice (a replay raced the first run): refused, and the first record stays.
    failure(register(dtm, gid, ("01", "action", "failed", "late")))
    assert progress(prepare_workflow(dtm, gid, busi.url(RESUME))) == records


def test_submit_succeed_keeps_the_result_for_the_next_execute(node: FastdtmNode, busi: BusiServer) -> None:
    dtm, gid = started(node, busi)
    records: list[Record] = [("01", "action", "succeed", '{"ok":true}'), ("01", "commit", "succeed", "")]
    for record in records:
        ok(register(dtm, gid, record))
    before = query(node, gid)["transaction"]
    ok(submit(dtm, gid, "succeed", result=b64(RESULT)))
    after = query(node, gid)["transaction"]
    assert (after["status"], after["result"]) == ("succeed", b64(RESULT))
    assert "finish_time" in after and "rollback_reason" not in after
    # DTM's Redis store rewrites the record from the thin submit body and loses these (its quirk 2).
    for key in ("custom_data", "query_prepared", "create_time", "trans_type", "protocol"):
        assert after[key] == before[key], key
    # The client's next Execute of this gid returns the stored result without running anything.
    replay = prepare_workflow(dtm, gid, busi.url(RESUME))
    assert (replay["transaction"]["status"], replay["transaction"]["result"]) == ("succeed", b64(RESULT))
    assert base64.b64decode(replay["transaction"]["result"]) == RESULT
    assert progress(replay) == records
    assert_protojson_types(replay)
    # Finished: a second verdict or a late step is refused.
    failure(submit(dtm, gid, "failed", reason="too late"))
    failure(register(dtm, gid, ("02", "action", "succeed", "")))
    assert query(node, gid)["transaction"]["status"] == "succeed"


def test_submit_failed_stores_the_reason(node: FastdtmNode, busi: BusiServer) -> None:
    dtm, gid = started(node, busi)
    ok(register(dtm, gid, ("01", "action", "failed", "insufficient balance")))
    before = query(node, gid)["transaction"]
    ok(submit(dtm, gid, "failed", reason="insufficient balance"))
    trans = query(node, gid)["transaction"]
    assert (trans["status"], trans["rollback_reason"]) == ("failed", "insufficient balance")
    assert "rollback_time" in trans and "result" not in trans
    for key in ("custom_data", "query_prepared", "create_time"):
        assert trans[key] == before[key], key  # DTM's quirk 2, as for succeed
    # The client's next Execute returns an error built from the reason.
    replay = prepare_workflow(dtm, gid, busi.url(RESUME))
    assert (replay["transaction"]["status"], replay["transaction"]["rollback_reason"]) == (
        "failed",
        "insufficient balance",
    )
    failure(submit(dtm, gid, "succeed"))
    assert query(node, gid)["transaction"]["status"] == "failed"


def outcome(node: FastdtmNode, gid: str) -> tuple[object, ...]:
    """What a submit may change (the cron moves next_cron_time of a prepared workflow on its own)."""
    reply = query(node, gid)
    trans = reply["transaction"]
    fields = ("status", "result", "rollback_reason", "finish_time", "rollback_time", "custom_data", "query_prepared")
    return (*(trans.get(key) for key in fields), records(reply["branches"]))


def test_a_submit_with_a_bad_status_changes_nothing(node: FastdtmNode, busi: BusiServer) -> None:
    dtm, gid = started(node, busi)
    ok(register(dtm, gid, ("01", "action", "succeed", '{"ok":true}')))
    before = outcome(node, gid)
    for status in ("done", "prepared", "submitted", ""):
        reply = submit(dtm, gid, status, result=b64(RESULT))
        assert reply.status_code in (409, 422), reply.text
        assert outcome(node, gid) == before
    no_extra = dtm.post("/submit", lit('{"gid":$gid,"trans_type":"workflow"}', gid=gid))
    assert no_extra.status_code in (409, 422), no_extra.text
    assert outcome(node, gid) == before
    # Still prepared and usable.
    ok(submit(dtm, gid, "succeed"))
    assert query(node, gid)["transaction"]["status"] == "succeed"


def resume_by_registering_and_submitting(dtm: Raw, busi: BusiServer) -> threading.Event:
    """Turn the callback into the Go client's resumed run: prepareWorkflow (to replay), the missing step, submit."""
    done = threading.Event()

    def resumed_run(call: Call) -> Reply:
        gid = call.query["gid"]
        replay = prepare_workflow(dtm, gid, busi.url(RESUME))
        if replay["transaction"]["status"] == "prepared":
            ok(register(dtm, gid, ("01", "action", "succeed", '{"ok":true}')))
            ok(submit(dtm, gid, "succeed", result=b64(RESULT)))
        done.set()
        return Reply(200)

    busi.on(RESUME, resumed_run)
    return done


def test_a_prepared_workflow_is_resumed_by_the_cron_until_it_submits(
    node_factory: NodeFactory, store_url: str, busi: BusiServer
) -> None:
    node = node_factory(store_url, "--retry-interval", "0.5")
    # The client died mid-run (or a step said ONGOING); its callback is not healthy yet either.
    busi.script(RESUME, [500])
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    begun = time.monotonic()
    prepare_workflow(dtm, gid, busi.url(RESUME))
    calls = busi.wait_calls(RESUME, 4, timeout=10)[:4]
    for c in calls:
        assert c.method == "POST"
        assert c.query == {"gid": gid, "trans_type": "workflow", "branch_id": "00", "op": NAME}
        assert c.body == INPUT  # the base64-decoded input, not the base64 text
        assert c.headers.get("content-type") == "application/json"
    assert calls[0].at - begun >= 0.4  # not before the first retry interval
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    # Every retry interval (0.5 s): no doubling although the callback keeps answering 500.
    assert all(0.3 <= gap < 0.95 for gap in gaps), gaps
    assert query(node, gid)["transaction"]["status"] == "prepared"

    done = resume_by_registering_and_submitting(dtm, busi)
    assert done.wait(5), "the cron stopped calling the callback"
    reply = wait_status(node, gid, {"succeed"})
    assert reply["transaction"]["result"] == b64(RESULT)
    seen = len(busi.calls(RESUME))
    time.sleep(1.2)  # more than two retry intervals
    assert len(busi.calls(RESUME)) == seen, "the callback was called after the workflow finished"
