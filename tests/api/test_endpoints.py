"""DTM's HTTP API over raw HTTP: reply shapes, status codes and state rules (scenarios S23, S25)."""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import statuses
from tests.support.busi import BusiServer, Reply
from tests.support.node import FastdtmNode, query, wait_status

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
SUCCESS = {"dtm_result": "SUCCESS"}


@pytest.fixture
def client(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.dtm, timeout=15) as c:
        yield c


def new_gid() -> str:
    return f"api-{uuid.uuid4().hex}"


def saga_body(gid: str, busi: BusiServer, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "gid": gid,
        "trans_type": "saga",
        "steps": [{"action": busi.url("/A"), "compensate": busi.url("/C")}],
        "payloads": ['{"amount":30}'],
    }
    body.update(fields)
    return body


def msg_body(gid: str, busi: BusiServer) -> dict[str, Any]:
    return {
        "gid": gid,
        "trans_type": "msg",
        "steps": [{"action": busi.url("/A")}],
        "payloads": ["{}"],
        "query_prepared": busi.url("/QP"),
    }


def test_new_gid_version_and_ping(client: httpx.Client, node: FastdtmNode) -> None:
    reply = client.get("/newGid").json()
    assert reply["dtm_result"] == "SUCCESS"
    assert re.fullmatch(r"[2-9A-HJ-NP-Za-km-z]{22}", reply["gid"])
    assert client.get("/newGid").json()["gid"] != reply["gid"]
    assert client.get("/version").json()["version"].startswith("v")
    assert httpx.get(f"{node.base}/api/ping").json() == {"msg": "pong"}
    assert httpx.get(f"{node.base}/api/live").status_code == 200
    assert httpx.get(f"{node.base}/api/ready").json() == {"status": "ready"}


def test_query_of_an_unknown_gid(client: httpx.Client) -> None:
    reply = client.get("/query", params={"gid": "never-seen"})
    assert reply.status_code == 200
    assert reply.json() == {"transaction": None, "branches": []}


def test_query_reply_shape(client: httpx.Client, busi: BusiServer) -> None:
    gid = new_gid()
    assert client.post("/submit", json=saga_body(gid, busi, wait_result=True)).json() == SUCCESS
    reply = client.get("/query", params={"gid": gid}).json()
    trans = reply["transaction"]
    assert list(trans)[:3] == ["id", "create_time", "update_time"]
    assert trans["gid"] == gid and trans["trans_type"] == "saga" and trans["status"] == "succeed"
    assert trans["protocol"] == "http" and trans["concurrent"] is False and trans["wait_result"] is True
    for key in ("create_time", "update_time", "finish_time"):
        assert RFC3339.match(trans[key]), trans[key]
    assert "rollback_reason" not in trans and "rollback_time" not in trans  # omitempty
    assert [(b["branch_id"], b["op"], b["status"]) for b in reply["branches"]] == [
        ("01", "compensate", "prepared"),
        ("01", "action", "succeed"),
    ]
    action = reply["branches"][1]
    assert base64.b64decode(action["bin_data"]) == b'{"amount":30}'
    assert action["url"] == busi.url("/A") and RFC3339.match(action["finish_time"])


def test_s23_resubmits(client: httpx.Client, busi: BusiServer, node: FastdtmNode) -> None:
    busi.script("/A", [Reply(200, delay=1.0)])
    gid = new_gid()
    assert client.post("/submit", json=saga_body(gid, busi)).json() == SUCCESS
    # Submitted and still running: a second submit is accepted (DTM re-processes it).
    assert client.post("/submit", json=saga_body(gid, busi)).status_code == 200
    wait_status(node, gid, {"succeed"})
    again = client.post("/submit", json=saga_body(gid, busi))
    assert again.status_code == 409
    assert again.json() == {"dtm_result": "FAILURE", "message": "current status 'succeed', cannot submit. FAILURE"}
    # The action was not re-run by the resubmit while it was in flight on this node.
    assert len(busi.calls("/A")) == 1


def test_s23_msg_prepare_is_idempotent_until_it_finishes(client: httpx.Client, busi: BusiServer) -> None:
    gid = new_gid()
    assert client.post("/prepare", json=msg_body(gid, busi)).json() == SUCCESS
    assert client.post("/prepare", json=msg_body(gid, busi)).json() == SUCCESS
    assert client.post("/submit", json={**msg_body(gid, busi), "wait_result": True}).json() == SUCCESS
    late = client.post("/prepare", json=msg_body(gid, busi))
    assert late.status_code == 409
    assert late.json()["message"] == "current status 'succeed', cannot prepare. FAILURE"


def test_s23_abort_rules(client: httpx.Client, busi: BusiServer) -> None:
    msg_gid = new_gid()
    client.post("/prepare", json=msg_body(msg_gid, busi))
    assert client.post("/abort", json={"gid": msg_gid, "trans_type": "msg"}).json() == SUCCESS
    assert client.get("/query", params={"gid": msg_gid}).json()["transaction"]["status"] == "failed"
    saga_gid = new_gid()
    client.post("/submit", json=saga_body(saga_gid, busi, wait_result=True))
    refused = client.post("/abort", json={"gid": saga_gid, "trans_type": "saga"})
    assert refused.status_code == 409
    assert "cannot abort" in refused.json()["message"]


def test_s23_force_stop(client: httpx.Client, busi: BusiServer) -> None:
    busi.script("/A", [500])
    gid = new_gid()
    client.post("/submit", json=saga_body(gid, busi))
    assert client.post("/forceStop", json={"gid": gid}).json() == SUCCESS
    reply = client.get("/query", params={"gid": gid}).json()
    assert reply["transaction"]["status"] == "failed"
    assert "rollback_time" in reply["transaction"]
    assert client.post("/forceStop", json={"gid": gid}).status_code == 409
    # No compensation runs after a forceStop, now or from the cron.
    time.sleep(1.5)
    assert busi.calls("/C") == []


def test_reset_next_cron_time_retries_at_once(client: httpx.Client, busi: BusiServer, node: FastdtmNode) -> None:
    busi.script("/A", [500, 200])
    gid = new_gid()
    client.post("/submit", json=saga_body(gid, busi, retry_interval=60))
    busi.wait_calls("/A", 1)
    time.sleep(0.2)
    assert query(node, gid)["transaction"]["status"] == "submitted"
    # The next retry is two minutes away (60 s doubled); the reset makes the cron take it now.
    assert client.post("/resetNextCronTime", json={"gid": gid}).json() == SUCCESS
    wait_status(node, gid, {"succeed"}, timeout=5)
    finished = client.post("/resetNextCronTime", json={"gid": gid})
    assert finished.json() == SUCCESS


def test_s25_old_format_and_go_style_bodies(client: httpx.Client, busi: BusiServer) -> None:
    old = new_gid()
    body = {"gid": old, "trans_type": "saga", "steps": [{"action": busi.url("/A"), "compensate": "", "data": "old"}]}
    assert client.post("/submit", json={**body, "wait_result": True}).json() == SUCCESS
    assert busi.calls("/A")[0].body == b"old"
    go = new_gid()
    go_body = {**saga_body(go, busi), "protocol": "", "concurrent": False, "custom_data": "", "wait_result": True}
    assert client.post("/submit", json=go_body).json() == SUCCESS
    reply = client.get("/query", params={"gid": go}).json()
    assert reply["transaction"]["protocol"] == "http"
    assert statuses(reply) == "ps"


def test_sdk_nulls_and_unknown_keys_are_accepted(client: httpx.Client, busi: BusiServer) -> None:
    gid = new_gid()
    body = {
        **saga_body(gid, busi),
        "custom_data": None,
        "query_prepared": None,
        "protocol": None,
        "passthrough_headers": [],
        "subType": "saga",
        "branch_headers": None,
        "wait_result": True,
    }
    assert client.post("/submit", json=body).json() == SUCCESS


def test_empty_urls_succeed_without_calls(client: httpx.Client, busi: BusiServer) -> None:
    gid = new_gid()
    body = {"gid": gid, "trans_type": "saga", "steps": [{"action": "", "compensate": ""}] * 2, "payloads": ["", ""]}
    assert client.post("/submit", json={**body, "wait_result": True}).json() == SUCCESS
    assert statuses(client.get("/query", params={"gid": gid}).json()) == "psps"
    assert busi.calls() == []


def test_wait_result_reports_the_rollback_reason(client: httpx.Client, busi: BusiServer) -> None:
    busi.script("/A", [(409, '{"dtm_result":"FAILURE","message":"Insufficient balance"}')])
    reply = client.post("/submit", json=saga_body(new_gid(), busi, wait_result=True))
    assert reply.status_code == 409
    assert reply.json()["dtm_result"] == "FAILURE"
    assert "Insufficient balance" in reply.json()["message"]


def test_all_walks_every_shard_with_a_cursor(client: httpx.Client, busi: BusiServer) -> None:
    prefix = f"list-{uuid.uuid4().hex[:8]}"
    gids = {f"{prefix}-{i}" for i in range(25)}
    for gid in gids:
        client.post("/submit", json=saga_body(gid, busi, wait_result=True))
    failed = f"{prefix}-failed"
    busi.script("/A", [409])
    client.post("/submit", json=saga_body(failed, busi, wait_result=True))
    seen: list[str] = []
    position = ""
    for _ in range(100):
        page = client.get("/all", params={"limit": "7", "position": position}).json()
        assert len(page["transactions"]) <= 7
        seen += [t["gid"] for t in page["transactions"]]
        position = page["next_position"]
        if not position:
            break
    assert len(seen) == len(set(seen)), "a cursor must never repeat a transaction"
    assert gids | {failed} <= set(seen)
    only_failed = client.get("/all", params={"status": "failed", "limit": "1000"}).json()["transactions"]
    assert failed in {t["gid"] for t in only_failed}
    assert all(t["status"] == "failed" for t in only_failed)
    assert client.get("/all", params={"transType": "msg", "limit": "1000"}).json()["transactions"] == [] or all(
        t["trans_type"] == "msg" for t in client.get("/all", params={"transType": "msg"}).json()["transactions"]
    )
    one = client.get("/all", params={"gid": failed}).json()
    assert [t["gid"] for t in one["transactions"]] == [failed]


def test_all_filters_by_create_time(client: httpx.Client, busi: BusiServer) -> None:
    before = int(time.time() * 1000)
    gid = new_gid()
    client.post("/submit", json=saga_body(gid, busi, wait_result=True))
    after = int(time.time() * 1000)
    window = client.get("/all", params={"createTimeStart": str(before), "createTimeEnd": str(after), "limit": "1000"})
    assert gid in {t["gid"] for t in window.json()["transactions"]}
    earlier = client.get("/all", params={"createTimeEnd": str(before - 1), "limit": "1000"})
    assert gid not in {t["gid"] for t in earlier.json()["transactions"]}


def test_reset_cron_time_brings_far_retries_forward(client: httpx.Client, busi: BusiServer, node: FastdtmNode) -> None:
    busi.script("/A", [500, 200])
    gid = new_gid()
    client.post("/submit", json=saga_body(gid, busi, retry_interval=300))
    busi.wait_calls("/A", 1)
    time.sleep(0.2)
    assert query(node, gid)["transaction"]["status"] == "submitted"  # next retry 600 s away
    reply = client.get("/resetCronTime", params={"timeout": "10", "limit": "1000"}).json()
    assert reply["succeed_count"] >= 1
    assert reply["has_remaining"] is False
    wait_status(node, gid, {"succeed"}, timeout=5)


def test_register_branch_aliases_and_refusals(client: httpx.Client, busi: BusiServer) -> None:
    gid = new_gid()
    assert client.post("/prepare", json={"gid": gid, "trans_type": "tcc"}).json() == SUCCESS
    branch = {"gid": gid, "trans_type": "tcc", "branch_id": "01", "data": "{}", "confirm": "", "cancel": ""}
    assert client.post("/registerTccBranch", json={**branch, "try": busi.url("/Try")}).json() == SUCCESS
    duplicate = client.post("/registerBranch", json=branch)
    assert duplicate.status_code == 409
    wrong_type = client.post(
        "/registerXaBranch", json={**branch, "branch_id": "02", "trans_type": "xa", "url": busi.url("/X")}
    )
    assert wrong_type.status_code == 409
    not_strings = client.post("/registerBranch", json={**branch, "branch_id": 2})
    assert not_strings.status_code == 422
    unknown = client.post("/registerBranch", json={**branch, "gid": "never-prepared"})
    assert unknown.status_code == 409
    assert unknown.json()["message"] == "no trans with gid: never-prepared status: prepared found FAILURE"
    reply = client.get("/query", params={"gid": gid}).json()
    assert [(b["branch_id"], b["op"]) for b in reply["branches"]] == [("01", "cancel"), ("01", "confirm")]
