"""Byte replays of the SDKs that cannot run here (reference dtm-clients §2, §4; scenarios S26, S27).

The Node SDK (not on npm) is replayed from the bodies the reference quotes: its bare saga
`{"gid","trans_type","steps","payloads"}` (and its concurrent custom_data), its TCC through `/registerTccBranch` with
an extra `try` key and a try call that says `branch_type=try`, its typedjson msg. The Java SDK's bodies are the bytes
dtmcli-java 2.1.5 really sends (pretty-printed Jackson with `subType` twice), captured and kept in step by
tests/interop/test_java_sdk.py. Proves the outcomes match the Python-SDK scenarios
(S01, S08, S11-S12, S17, S18), and that newGid, prepare and registerBranch answer with `"dtm_result":"SUCCESS"`
literally in the text, which the Java SDK checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest

from tests.e2e.helpers import bodies, paths, sequence, statuses
from tests.e2e.raw import JSON_HEADERS, Raw, lit, ok
from tests.support.busi import BusiServer, Reply
from tests.support.node import FastdtmNode, query, wait_status

BODY = '{"amount":30}'  # JSON.stringify / Jackson: no spaces

NODE_SAGA = '{"gid":$gid,"trans_type":"saga","steps":$steps,"payloads":$payloads}'
NODE_CONCURRENT_SAGA = (
    r'{"gid":$gid,"trans_type":"saga","steps":$steps,"payloads":$payloads,'
    r'"custom_data":"{\"concurrent\":true,\"orders\":{\"1\":[0]}}"}'
)
#: typedjson writes only the members that were set.
NODE_MSG = '{"gid":$gid,"trans_type":"msg","steps":$steps,"payloads":$payloads}'
NODE_MSG_PREPARED = '{"gid":$gid,"trans_type":"msg","steps":$steps,"payloads":$payloads,"query_prepared":$qp}'
NODE_MSG_DELAYED = r'{"gid":$gid,"trans_type":"msg","steps":$steps,"payloads":$payloads,"custom_data":"{\"delay\": 1}"}'
#: The Java SDK's bodies as dtmcli-java 2.1.5 sends them (captured by tests/interop/test_java_sdk.py, which also
#: checks that these templates still match the real SDK byte for byte): Feign's JacksonEncoder pretty-prints
#: (`" : "`, two-space indent, `[ a, b ]`, `[ ]`, `{ }`), writes Jackson's type id `subType` first and then the
#: field of the same name again, omits a null custom_data, and names the type id of a bare OperatorParam
#: (prepare/submit/abort) "OperatorParam". Holes: the gid and each URL (as JSON strings), $wait (true/false).
JAVA_SAGA = (
    '{\n  "subType" : "saga",\n  "gid" : $gid,\n  "trans_type" : "saga",\n  "subType" : "saga",\n'
    '  "steps" : [ {\n    "action" : $a0,\n    "compensate" : $c0\n  }, {\n    "action" : $a1,\n'
    '    "compensate" : $c1\n  } ],\n'
    '  "payloads" : [ "{\\"amount\\":30}", "{\\"amount\\":30}" ],\n'
    '  "wait_result" : $wait,\n  "timeout_to_fail" : 0,\n  "retry_interval" : 0,\n'
    '  "passthrough_headers" : [ ],\n  "branch_headers" : { }\n}'
)
#: prepare, submit and abort of a TCC.
JAVA_TCC_TRANS = '{\n  "subType" : "OperatorParam",\n  "gid" : $gid,\n  "trans_type" : "tcc"\n}'
JAVA_TCC_BRANCH = (
    '{\n  "subType" : "tcc",\n  "gid" : $gid,\n  "trans_type" : "tcc",\n  "subType" : "tcc",\n'
    '  "branch_id" : $branch_id,\n  "status" : "prepared",\n  "data" : $data,\n'
    '  "confirm" : $confirm_url,\n  "cancel" : $cancel_url\n}'
)


@dataclass(frozen=True, slots=True)
class TccDialect:
    """How one SDK speaks TCC: its prepare/submit/abort body, its registerBranch path and body, and the query key
    its try call names the op with."""

    trans: str
    register_path: str
    branch: str
    try_key: str
    #: The SDK's own check of prepare/registerBranch replies.
    accepts: str = "exact"

    def check(self, reply: httpx.Response) -> None:
        if self.accepts == "exact":
            ok(reply)
        else:
            # Java: HTTP 200 and dtm_result == "SUCCESS", read from the JSON text.
            assert reply.status_code == 200 and '"dtm_result":"SUCCESS"' in reply.text, reply.text


NODE_TCC = TccDialect(
    trans='{"gid":$gid,"trans_type":"tcc"}',
    register_path="/registerTccBranch",
    branch=(
        '{"gid":$gid,"branch_id":$branch_id,"trans_type":"tcc","status":"prepared","data":$data,'
        '"try":$try_url,"confirm":$confirm_url,"cancel":$cancel_url}'
    ),
    try_key="branch_type",
)


JAVA_TCC = TccDialect(
    trans=JAVA_TCC_TRANS,
    register_path="/registerBranch",
    branch=JAVA_TCC_BRANCH,
    try_key="op",
    accepts="literal",
)


def tcc_transfer(dtm: Raw, busi: BusiServer, sdk: TccDialect) -> tuple[str, bool]:
    """The SDK's TCC global transaction over TransOut and TransIn; returns (gid, True if it submitted)."""
    gid = dtm.new_gid()
    sdk.check(dtm.post("/prepare", lit(sdk.trans, gid=gid)))
    for branch_id, name in (("01", "TransOut"), ("02", "TransIn")):
        urls = {f"{op}_url": busi.url(f"/{name}{op.capitalize()}") for op in ("try", "confirm", "cancel")}
        body = lit(sdk.branch, gid=gid, branch_id=branch_id, data=BODY, **urls)
        sdk.check(dtm.post(sdk.register_path, body))
        # The SDK calls try itself (the server never stores or calls it).
        query = urlencode([("gid", gid), ("trans_type", "tcc"), ("branch_id", branch_id), (sdk.try_key, "try")])
        tried = httpx.post(f"{urls['try_url']}?{query}", content=BODY, headers=JSON_HEADERS, timeout=10)
        if tried.status_code != 200:  # axios / OkHttp: a non-2xx try is an error, so the SDK aborts
            ok(dtm.post("/abort", lit(sdk.trans, gid=gid)))
            return gid, False
    ok(dtm.post("/submit", lit(sdk.trans, gid=gid)))
    return gid, True


def transfer_steps(busi: BusiServer) -> list[dict[str, str]]:
    return [
        {"action": busi.url("/TransOut"), "compensate": busi.url("/TransOutRevert")},
        {"action": busi.url("/TransIn"), "compensate": busi.url("/TransInRevert")},
    ]


def transfer_urls(busi: BusiServer) -> dict[str, str]:
    """The holes of JAVA_SAGA for the TransOut/TransIn saga."""
    return {
        "a0": busi.url("/TransOut"),
        "c0": busi.url("/TransOutRevert"),
        "a1": busi.url("/TransIn"),
        "c1": busi.url("/TransInRevert"),
    }


def msg_steps(busi: BusiServer) -> list[dict[str, str]]:
    return [{"action": busi.url("/TransOut")}, {"action": busi.url("/TransIn")}]


# --- Node (S26) ---------------------------------------------------------------------------------------------------


def test_node_saga_succeeds_as_s01(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    ok(dtm.post("/submit", lit(NODE_SAGA, gid=gid, steps=transfer_steps(busi), payloads=[BODY, BODY])))
    reply = wait_status(node, gid, {"succeed"})
    assert statuses(reply) == "psps"
    assert sequence(busi, gid) == [("/TransOut", "01", "action", "POST"), ("/TransIn", "02", "action", "POST")]
    assert [c.body for c in busi.calls()] == [BODY.encode()] * 2
    # No protocol in Node's body: it defaults to http.
    assert reply["transaction"]["protocol"] == "http"


def test_node_concurrent_saga_respects_its_orders(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransOut", [Reply(200, delay=0.3)])
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    body = lit(NODE_CONCURRENT_SAGA, gid=gid, steps=transfer_steps(busi), payloads=[BODY, BODY])
    ok(dtm.post("/submit", body))
    reply = wait_status(node, gid, {"succeed"})
    assert statuses(reply) == "psps"
    assert reply["transaction"]["custom_data"] == '{"concurrent":true,"orders":{"1":[0]}}'
    out, into = busi.calls("/TransOut")[0], busi.calls("/TransIn")[0]
    # orders {"1":[0]}: step 1 starts only once step 0 has answered.
    assert into.at >= out.at + 0.25


def test_node_tcc_confirms_as_s17(node: FastdtmNode, busi: BusiServer) -> None:
    gid, submitted = tcc_transfer(Raw.of(node), busi, NODE_TCC)
    assert submitted
    reply = wait_status(node, gid, {"succeed"})
    assert statuses(reply) == "psps"
    # Node's try calls carry branch_type=try, not op; the server's confirms carry op=confirm, last branch first.
    assert sequence(busi, gid) == [
        ("/TransOutTry", "01", "", "POST"),
        ("/TransInTry", "02", "", "POST"),
        ("/TransInConfirm", "02", "confirm", "POST"),
        ("/TransOutConfirm", "01", "confirm", "POST"),
    ]
    assert [c.body for c in busi.calls("/TransInConfirm")] == [BODY.encode()]
    # The extra `try` key is not stored as a branch: only cancel/confirm records exist.
    assert [(b["branch_id"], b["op"]) for b in reply["branches"]] == [
        ("01", "cancel"),
        ("01", "confirm"),
        ("02", "cancel"),
        ("02", "confirm"),
    ]
    assert bodies(reply) == [BODY] * 4


def test_node_tcc_rollback_cancels_as_s18(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransInTry", [409])
    gid, submitted = tcc_transfer(Raw.of(node), busi, NODE_TCC)
    assert not submitted
    reply = wait_status(node, gid, {"failed"})
    assert statuses(reply) == "spsp"
    assert paths(busi, gid) == ["/TransOutTry", "/TransInTry", "/TransInCancel", "/TransOutCancel"]


def test_node_msg_submit_delivers_as_s11(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    ok(dtm.post("/submit", lit(NODE_MSG, gid=gid, steps=msg_steps(busi), payloads=[BODY, BODY])))
    assert statuses(wait_status(node, gid, {"succeed"})) == "ss"
    assert sequence(busi, gid) == [("/TransOut", "01", "action", "POST"), ("/TransIn", "02", "action", "POST")]


def test_node_msg_prepare_then_submit_as_s12(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    # After prepare(qp) the Msg object has query_prepared set, so submit sends it too.
    body = lit(NODE_MSG_PREPARED, gid=gid, steps=msg_steps(busi), payloads=[BODY, BODY], qp=busi.url("/QP"))
    ok(dtm.post("/prepare", body))
    prepared = query(node, gid)
    assert (prepared["transaction"]["status"], statuses(prepared)) == ("prepared", "pp")
    assert busi.calls() == []
    ok(dtm.post("/submit", body))
    assert statuses(wait_status(node, gid, {"succeed"})) == "ss"
    assert paths(busi, gid) == ["/TransOut", "/TransIn"]


def test_node_msg_delay_holds_the_branches_back(node: FastdtmNode, busi: BusiServer) -> None:
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    sent = time.monotonic()
    ok(dtm.post("/submit", lit(NODE_MSG_DELAYED, gid=gid, steps=msg_steps(busi), payloads=[BODY, BODY])))
    assert statuses(wait_status(node, gid, {"succeed"}, timeout=10)) == "ss"
    # custom_data {"delay": 1} (Node writes the space): no branch call in the first second.
    assert busi.calls("/TransOut")[0].at - sent >= 0.9


# --- Java (S27) ---------------------------------------------------------------------------------------------------


def test_java_new_gid_says_success_literally(node: FastdtmNode) -> None:
    reply = Raw.of(node).get("/newGid")
    assert reply.status_code == 200
    assert '"dtm_result":"SUCCESS"' in reply.text
    assert len(reply.json()["gid"]) == 22


@pytest.mark.parametrize("wait", [False, True], ids=["async", "wait-result"])
def test_java_saga_succeeds_as_s01(node: FastdtmNode, busi: BusiServer, wait: bool) -> None:
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    urls = transfer_urls(busi)
    ok(dtm.post("/submit", lit(JAVA_SAGA, gid=gid, wait=wait, **urls)))
    if wait:
        # enableWaitResult(): finished when submit answered.
        assert query(node, gid)["transaction"]["status"] == "succeed"
    reply = wait_status(node, gid, {"succeed"})
    assert statuses(reply) == "psps"
    assert sequence(busi, gid) == [("/TransOut", "01", "action", "POST"), ("/TransIn", "02", "action", "POST")]
    assert [c.body for c in busi.calls()] == [BODY.encode()] * 2


def test_java_tcc_confirms_as_s17(node: FastdtmNode, busi: BusiServer) -> None:
    gid, submitted = tcc_transfer(Raw.of(node), busi, JAVA_TCC)
    assert submitted
    reply = wait_status(node, gid, {"succeed"})
    assert statuses(reply) == "psps"
    assert sequence(busi, gid) == [
        ("/TransOutTry", "01", "try", "POST"),
        ("/TransInTry", "02", "try", "POST"),
        ("/TransInConfirm", "02", "confirm", "POST"),
        ("/TransOutConfirm", "01", "confirm", "POST"),
    ]
    assert [c.body for c in busi.calls("/TransOutConfirm")] == [BODY.encode()]
