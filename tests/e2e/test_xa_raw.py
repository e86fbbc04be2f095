"""XA over raw HTTP in the Go SDK's shapes (reference dtm-protocol §4.4 and §6.4, dtm-clients §3.2, scenario S29).

The test plays the AP (`XaGlobalTransaction`): prepare, call each RM branch itself with `op=action` and
`phase2_url`, then submit or abort. The busi plays the RM (`XaLocalTransaction`): on `op=action` it registers its
phase-two URL with registerBranch from inside its (imagined) XA local transaction, using the `dtm` the AP passed.
Proves: the server POSTs commit (empty body) to each registered branch in registration order, rollbacks on abort and
on timeout (reason `Timeout after 0 seconds`), a failing commit is retried until it succeeds, and registerBranch is
refused with 409 and nothing appended when the transaction is no longer prepared, is of another type, or already
has that branch.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest

from tests.e2e.helpers import branch_rows, sequence, statuses
from tests.e2e.raw import JSON_HEADERS, SUCCESS_TEXT, Raw, failure, lit, ok
from tests.support.busi import BusiServer, Call, Reply
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

#: Go's TransBase: omitempty everywhere except `concurrent` and `protocol` (dtm-clients §3.2); DOC_TRANS is the
#: same prepare/submit as dtm-protocol §4.4 writes it, without those two keys.
GO_TRANS = '{"gid":$gid,"trans_type":"xa","concurrent":false,"protocol":""}'
DOC_TRANS = '{"gid":$gid,"trans_type":"xa"}'
GO_ABORT = '{"gid":$gid,"trans_type":"xa","concurrent":false,"protocol":"","rollback_reason":$reason}'
#: XaLocalTransaction's registerBranch: a Go map[string]string, so the keys come sorted.
GO_XA_BRANCH = '{"branch_id":$branch_id,"gid":$gid,"trans_type":"xa","url":$url}'
#: TccGlobalTransaction's registerBranch (dtm-clients §3.2), aimed at an xa gid by mistake.
GO_TCC_BRANCH = (
    '{"branch_id":$branch_id,"cancel":$cancel,"confirm":$confirm,"data":$data,"gid":$gid,"trans_type":"tcc"}'
)
BODY = '{"amount":30}'
#: What a Go AP puts in rollback_reason after an RM answered 409 (HTTPResp2DtmError wraps ErrFailure).
GO_FAILURE_REASON = '{"dtm_result":"FAILURE"}. FAILURE'


def play_rm(busi: BusiServer, *paths: str) -> list[httpx.Response]:
    """Make each path an XA resource manager; returns the registerBranch replies it got, in order."""
    replies: list[httpx.Response] = []

    def rm(call: Call) -> Reply | None:
        if call.query.get("op") != "action":
            return None  # phase two (commit / rollback): answered from the path's script
        q = call.query
        reply = Raw(q["dtm"]).post(
            "/registerBranch", lit(GO_XA_BRANCH, branch_id=q["branch_id"], gid=q["gid"], url=q["phase2_url"])
        )
        replies.append(reply)
        # A refused registration makes the RM roll its local XA back and fail the action.
        return Reply(200) if reply.status_code == 200 else Reply(500, reply.text)

    for path in paths:
        busi.on(path, rm)
    return replies


def call_branch(node: FastdtmNode, busi: BusiServer, gid: str, branch_id: str, path: str) -> httpx.Response:
    """The AP's `xa.CallBranch(body, url)`: POST url?dtm&gid&branch_id&trans_type=xa&op=action&phase2_url=url."""
    url = busi.url(path)
    query = [("dtm", node.dtm), ("gid", gid), ("branch_id", branch_id), ("trans_type", "xa")]
    query += [("op", "action"), ("phase2_url", url)]
    return httpx.post(f"{url}?{urlencode(query)}", content=BODY, headers=JSON_HEADERS, timeout=10)


def phase_two_calls(busi: BusiServer, gid: str) -> list[Call]:
    return [c for c in busi.calls() if c.query.get("gid") == gid and c.query.get("op") in ("commit", "rollback")]


def assert_phase_two_shape(calls: list[Call], gid: str, op: str) -> None:
    """Phase two is always a POST with an empty body and exactly DTM's four query keys (no `dtm`)."""
    assert calls
    for c in calls:
        assert (c.method, c.body) == ("POST", b"")
        assert c.query == {"gid": gid, "trans_type": "xa", "branch_id": c.query["branch_id"], "op": op}
        assert c.headers.get("content-type") == "application/json"


def prepared_xa(node: FastdtmNode, trans: str = GO_TRANS) -> tuple[Raw, str]:
    dtm = Raw.of(node)
    gid = dtm.new_gid()
    ok(dtm.post("/prepare", lit(trans, gid=gid)))
    return dtm, gid


@pytest.mark.parametrize("trans", [GO_TRANS, DOC_TRANS], ids=["go-transbase", "protocol-4.4"])
def test_submit_commits_every_branch_in_registration_order(node: FastdtmNode, busi: BusiServer, trans: str) -> None:
    registered = play_rm(busi, "/TransOutXa", "/TransInXa")
    dtm, gid = prepared_xa(node, trans)
    assert call_branch(node, busi, gid, "01", "/TransOutXa").status_code == 200
    assert call_branch(node, busi, gid, "02", "/TransInXa").status_code == 200
    assert [r.text for r in registered] == [SUCCESS_TEXT, SUCCESS_TEXT]
    before = query(node, gid)
    assert before["transaction"]["status"] == "prepared"
    # Two records per registered branch, rollback first, both carrying the RM's phase-two URL and no body.
    assert branch_rows(before) == [
        ("01", "rollback", "prepared"),
        ("01", "commit", "prepared"),
        ("02", "rollback", "prepared"),
        ("02", "commit", "prepared"),
    ]
    out, into = busi.url("/TransOutXa"), busi.url("/TransInXa")
    assert [b["url"] for b in before["branches"]] == [out, out, into, into]
    assert all("bin_data" not in b for b in before["branches"])

    ok(dtm.post("/submit", lit(trans, gid=gid)))
    reply = wait_status(node, gid, {"succeed"})
    assert statuses(reply) == "psps"
    assert sequence(busi, gid) == [
        ("/TransOutXa", "01", "action", "POST"),
        ("/TransInXa", "02", "action", "POST"),
        ("/TransOutXa", "01", "commit", "POST"),
        ("/TransInXa", "02", "commit", "POST"),
    ]
    assert_phase_two_shape(phase_two_calls(busi, gid), gid, "commit")


def test_abort_rolls_back_every_registered_branch(node: FastdtmNode, busi: BusiServer) -> None:
    play_rm(busi, "/TransOutXa", "/TransInXa")
    # The third RM fails its business SQL: it rolls its XA back locally and never registers.
    busi.script("/FeeXa", [409])
    dtm, gid = prepared_xa(node)
    assert call_branch(node, busi, gid, "01", "/TransOutXa").status_code == 200
    assert call_branch(node, busi, gid, "02", "/TransInXa").status_code == 200
    assert call_branch(node, busi, gid, "03", "/FeeXa").status_code == 409
    ok(dtm.post("/abort", lit(GO_ABORT, gid=gid, reason=GO_FAILURE_REASON)))
    reply = wait_status(node, gid, {"failed"})
    assert statuses(reply) == "spsp"
    assert reply["transaction"]["rollback_reason"] == GO_FAILURE_REASON
    assert sequence(busi, gid) == [
        ("/TransOutXa", "01", "action", "POST"),
        ("/TransInXa", "02", "action", "POST"),
        ("/FeeXa", "03", "action", "POST"),
        # Rollbacks walk the records forward, like commits (reference §6.4).
        ("/TransOutXa", "01", "rollback", "POST"),
        ("/TransInXa", "02", "rollback", "POST"),
    ]
    assert_phase_two_shape(phase_two_calls(busi, gid), gid, "rollback")


def test_a_failing_commit_is_retried_until_it_succeeds(node: FastdtmNode, busi: BusiServer) -> None:
    play_rm(busi, "/TransOutXa", "/TransInXa")
    # Phase two of branch 01: an error, then a FAILURE (not terminal for a commit), then success.
    busi.script("/TransOutXa", [500, 409, 200])
    dtm, gid = prepared_xa(node)
    call_branch(node, busi, gid, "01", "/TransOutXa")
    call_branch(node, busi, gid, "02", "/TransInXa")
    ok(dtm.post("/submit", lit(GO_TRANS, gid=gid)))
    reply = wait_status(node, gid, {"succeed"}, timeout=15)
    assert statuses(reply) == "psps"
    commits = phase_two_calls(busi, gid)
    assert [c.query["branch_id"] for c in commits] == ["01", "01", "01", "02"]
    # Errors back off: the first retry comes after the doubled interval (2 x 0.5 s), not at once.
    assert commits[1].at - commits[0].at >= 0.8
    assert_phase_two_shape(commits, gid, "commit")


def test_a_prepared_xa_past_the_timeout_is_rolled_back(
    node_factory: NodeFactory, store_url: str, busi: BusiServer
) -> None:
    node = node_factory(store_url, "--timeout-to-fail", "2")
    play_rm(busi, "/TransOutXa")
    dtm, gid = prepared_xa(node)
    call_branch(node, busi, gid, "01", "/TransOutXa")
    prepared_at = busi.calls("/TransOutXa")[0].at
    # The AP never submits (it crashed): the server's own timeout decides.
    reply = wait_status(node, gid, {"failed"}, timeout=10)
    # DTM prints the transaction's own timeout_to_fail, 0 when the server default applied.
    assert reply["transaction"]["rollback_reason"] == "Timeout after 0 seconds"
    assert statuses(reply) == "sp"
    rollbacks = phase_two_calls(busi, gid)
    assert [(c.query["branch_id"], c.query["op"]) for c in rollbacks] == [("01", "rollback")]
    assert_phase_two_shape(rollbacks, gid, "rollback")
    assert rollbacks[0].at - prepared_at >= 1.8
    # The AP coming back late is refused, and nothing changes.
    assert "current status 'failed'" in failure(dtm.post("/submit", lit(GO_TRANS, gid=gid)))["message"]
    late = lit(GO_XA_BRANCH, branch_id="02", gid=gid, url=busi.url("/TransInXa"))
    failure(dtm.post("/registerBranch", late))
    assert branch_rows(query(node, gid)) == [("01", "rollback", "succeed"), ("01", "commit", "prepared")]


def test_register_branch_after_submit_is_refused(node: FastdtmNode, busi: BusiServer) -> None:
    play_rm(busi, "/TransOutXa")
    # A slow commit keeps the transaction `submitted` while the late RM registers.
    busi.script("/TransOutXa", [Reply(200, delay=1.0)])
    dtm, gid = prepared_xa(node)
    call_branch(node, busi, gid, "01", "/TransOutXa")
    ok(dtm.post("/submit", lit(GO_TRANS, gid=gid)))
    busi.wait_calls("/TransOutXa", 2)
    assert query(node, gid)["transaction"]["status"] == "submitted"
    late = dtm.post("/registerBranch", lit(GO_XA_BRANCH, branch_id="02", gid=gid, url=busi.url("/TransInXa")))
    assert late.status_code == 409
    assert late.json() == {
        "dtm_result": "FAILURE",
        "message": f"no trans with gid: {gid} status: prepared found FAILURE",
    }
    reply = wait_status(node, gid, {"succeed"})
    assert branch_rows(reply) == [("01", "rollback", "prepared"), ("01", "commit", "succeed")]
    # Finished: still refused.
    failure(dtm.post("/registerBranch", lit(GO_XA_BRANCH, branch_id="02", gid=gid, url=busi.url("/TransInXa"))))
    assert "/TransInXa" not in {c.path for c in busi.calls()}


def test_a_tcc_registration_on_an_xa_gid_is_refused(node: FastdtmNode, busi: BusiServer) -> None:
    dtm, gid = prepared_xa(node)
    tcc = lit(
        GO_TCC_BRANCH,
        branch_id="01",
        cancel=busi.url("/TransInCancel"),
        confirm=busi.url("/TransInConfirm"),
        data=BODY,
        gid=gid,
    )
    failure(dtm.post("/registerBranch", tcc))
    assert query(node, gid)["branches"] == []
    # Nothing of the refused registration lingers: the same branch id registers fine as xa.
    ok(dtm.post("/registerBranch", lit(GO_XA_BRANCH, branch_id="01", gid=gid, url=busi.url("/TransInXa"))))
    assert branch_rows(query(node, gid)) == [("01", "rollback", "prepared"), ("01", "commit", "prepared")]


def test_a_duplicate_registration_is_refused_and_appends_nothing(node: FastdtmNode, busi: BusiServer) -> None:
    dtm, gid = prepared_xa(node)
    first = busi.url("/TransOutXa")
    ok(dtm.post("/registerBranch", lit(GO_XA_BRANCH, branch_id="01", gid=gid, url=first)))
    failure(dtm.post("/registerBranch", lit(GO_XA_BRANCH, branch_id="01", gid=gid, url=busi.url("/Other"))))
    after = query(node, gid)
    assert branch_rows(after) == [("01", "rollback", "prepared"), ("01", "commit", "prepared")]
    assert [b["url"] for b in after["branches"]] == [first, first]
    # The transaction is still usable: the next branch appends after the first.
    ok(dtm.post("/registerBranch", lit(GO_XA_BRANCH, branch_id="02", gid=gid, url=busi.url("/TransInXa"))))
    assert [b["branch_id"] for b in query(node, gid)["branches"]] == ["01", "01", "02", "02"]
