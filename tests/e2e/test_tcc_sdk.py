"""TCC through the real Python SDK (dtmcli 1.7.7.0): scenarios S17-S21 of reference/dtm-clients.md §6.2."""

from __future__ import annotations

import json
import time

import pytest
from dtmcli import tcc, utils

from tests.e2e.helpers import paths, sequence, statuses
from tests.support.busi import BusiServer, Call, Reply
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

BODY = {"amount": 30}


def transfer(node: FastdtmNode, busi: BusiServer) -> str:
    """The SDK's TCC: try TransOut then TransIn; returns the gid, or "" when it aborted."""

    def branches(t: tcc.Tcc) -> None:
        for name in ("TransOut", "TransIn"):
            t.call_branch(BODY, busi.url(f"/{name}Try"), busi.url(f"/{name}Confirm"), busi.url(f"/{name}Cancel"))

    gid: str = tcc.tcc_global_transaction(node.dtm, utils.gen_gid(node.dtm), branches)
    return gid


def test_s17_confirms_in_reverse_registration_order(node: FastdtmNode, busi: BusiServer) -> None:
    gid = transfer(node, busi)
    assert gid
    reply = wait_status(node, gid, {"succeed"})
    assert statuses(reply) == "psps"
    assert sequence(busi, gid) == [
        ("/TransOutTry", "01", "try", "POST"),
        ("/TransInTry", "02", "try", "POST"),
        ("/TransInConfirm", "02", "confirm", "POST"),
        ("/TransOutConfirm", "01", "confirm", "POST"),
    ]
    # The server sends each branch the body registered with it, byte for byte.
    assert busi.calls("/TransInConfirm")[0].body == json.dumps(BODY).encode()


def test_s18_a_failed_try_cancels_every_registered_branch(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransInTry", [409])
    assert transfer(node, busi) == ""
    gid = busi.calls("/TransInTry")[0].query["gid"]
    reply = wait_status(node, gid, {"failed"})
    assert statuses(reply) == "spsp"
    assert paths(busi, gid)[-2:] == ["/TransInCancel", "/TransOutCancel"]
    assert "/TransInConfirm" not in paths(busi, gid)


def test_s19_confirm_errors_are_retried_in_order(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransInConfirm", [500, 200])
    gid = transfer(node, busi)
    reply = wait_status(node, gid, {"succeed"}, timeout=15)
    assert statuses(reply) == "psps"
    assert paths(busi, gid)[2:] == ["/TransInConfirm", "/TransInConfirm", "/TransOutConfirm"]


def test_s19_a_confirm_failure_is_retried_not_terminal(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransOutConfirm", [409, 200])
    gid = transfer(node, busi)
    assert statuses(wait_status(node, gid, {"succeed"}, timeout=15)) == "psps"
    assert len(busi.calls("/TransOutConfirm")) == 2


def test_s20_nested_tcc_confirms_the_child_first(node: FastdtmNode, busi: BusiServer) -> None:
    def nested_try(call: Call) -> Reply:
        child = tcc.tcc_from_req(node.dtm, call.query["gid"], call.query["branch_id"])
        child.call_branch(BODY, busi.url("/NestedTry"), busi.url("/NestedConfirm"), busi.url("/NestedCancel"))
        return Reply(200)

    busi.on("/TransInTry", nested_try)
    gid = transfer(node, busi)
    reply = wait_status(node, gid, {"succeed"})
    assert [(b["branch_id"], b["op"]) for b in reply["branches"]] == [
        ("01", "cancel"),
        ("01", "confirm"),
        ("02", "cancel"),
        ("02", "confirm"),
        ("0201", "cancel"),
        ("0201", "confirm"),
    ]
    assert statuses(reply) == "pspsps"
    confirms = [p for p in paths(busi, gid) if p.endswith("Confirm")]
    assert confirms == ["/NestedConfirm", "/TransInConfirm", "/TransOutConfirm"]


def test_s21_a_tcc_outliving_its_timeout_is_cancelled(
    node_factory: NodeFactory, store_url: str, busi: BusiServer
) -> None:
    node = node_factory(store_url, "--timeout-to-fail", "2")

    def slow_branches(t: tcc.Tcc) -> None:
        t.call_branch(BODY, busi.url("/TransOutTry"), busi.url("/TransOutConfirm"), busi.url("/TransOutCancel"))
        time.sleep(3.5)
        t.call_branch(BODY, busi.url("/TransInTry"), busi.url("/TransInConfirm"), busi.url("/TransInCancel"))

    gid = utils.gen_gid(node.dtm)
    # The second registerBranch gets 409, so the SDK aborts; the abort gets 409 too and raises.
    with pytest.raises(utils.DTMFailureError):
        tcc.tcc_global_transaction(node.dtm, gid, slow_branches)
    reply = wait_status(node, gid, {"failed"})
    assert reply["transaction"]["rollback_reason"] == "Timeout after 0 seconds"
    assert statuses(reply) == "sp"
    assert paths(busi, gid) == ["/TransOutTry", "/TransOutCancel"]
    assert query(node, gid)["transaction"]["status"] == "failed"
