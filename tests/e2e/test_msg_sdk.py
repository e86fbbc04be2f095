"""Two-phase messages through the real Python SDK (dtmcli 1.7.7.0): scenarios S11-S16."""

from __future__ import annotations

import time

import pytest
from dtmcli import msg, utils

from tests.e2e.helpers import paths, sequence, statuses
from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode, query, wait_status

BODY = {"amount": 30}


def message(node: FastdtmNode, busi: BusiServer) -> msg.Msg:
    m = msg.Msg(node.dtm, utils.gen_gid(node.dtm))
    m.add(BODY, busi.url("/TransOut"))
    m.add(BODY, busi.url("/TransIn"))
    return m


def gid_of(m: msg.Msg) -> str:
    gid: str = m.trans_base.gid
    return gid


def test_s11_submit_delivers_in_order(node: FastdtmNode, busi: BusiServer) -> None:
    m = message(node, busi)
    m.submit()
    reply = wait_status(node, gid_of(m), {"succeed"})
    assert statuses(reply) == "ss"
    assert sequence(busi, gid_of(m)) == [("/TransOut", "01", "action", "POST"), ("/TransIn", "02", "action", "POST")]
    out, into = busi.calls("/TransOut")[0], busi.calls("/TransIn")[0]
    assert out.at < into.at


def test_s12_prepare_then_submit(node: FastdtmNode, busi: BusiServer) -> None:
    m = message(node, busi)
    m.prepare(busi.url("/QueryPrepared"))
    reply = query(node, gid_of(m))
    assert reply["transaction"]["status"] == "prepared"
    assert statuses(reply) == "pp"
    assert busi.calls() == []
    m.submit()
    assert statuses(wait_status(node, gid_of(m), {"succeed"})) == "ss"
    assert paths(busi, gid_of(m)) == ["/TransOut", "/TransIn"]


def test_s13_check_back_submits_a_prepared_msg(node: FastdtmNode, busi: BusiServer) -> None:
    m = message(node, busi)
    m.trans_base.timeout_to_fail = 2
    started = time.monotonic()
    m.prepare(busi.url("/QueryPrepared"))
    reply = wait_status(node, gid_of(m), {"succeed"}, timeout=15)
    assert statuses(reply) == "ss"
    assert sequence(busi, gid_of(m)) == [
        ("/QueryPrepared", "00", "msg", "GET"),
        ("/TransOut", "01", "action", "POST"),
        ("/TransIn", "02", "action", "POST"),
    ]
    check = busi.calls("/QueryPrepared")[0]
    assert check.body == b""
    assert check.at - started >= 1.9


def test_s14_check_back_failure_fails_the_msg(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/QueryPrepared", [409])
    m = message(node, busi)
    m.trans_base.timeout_to_fail = 2
    m.prepare(busi.url("/QueryPrepared"))
    reply = wait_status(node, gid_of(m), {"failed"}, timeout=15)
    assert statuses(reply) == "pp"
    assert paths(busi, gid_of(m)) == ["/QueryPrepared"]


def test_s14_check_back_ongoing_asks_again(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/QueryPrepared", [425, 200])
    m = message(node, busi)
    m.trans_base.timeout_to_fail = 2
    m.prepare(busi.url("/QueryPrepared"))
    wait_status(node, gid_of(m), {"prepared"})
    reply = wait_status(node, gid_of(m), {"succeed"}, timeout=15)
    assert statuses(reply) == "ss"
    assert paths(busi, gid_of(m)) == ["/QueryPrepared", "/QueryPrepared", "/TransOut", "/TransIn"]


def one_branch(node: FastdtmNode, busi: BusiServer) -> msg.Msg:
    m = msg.Msg(node.dtm, utils.gen_gid(node.dtm))
    return m.add(BODY, busi.url("/TransIn"))


def test_s15_do_and_submit_success(node: FastdtmNode, busi: BusiServer) -> None:
    m = one_branch(node, busi)
    m.do_and_submit(busi.url("/QueryPrepared"), lambda barrier: None)
    assert statuses(wait_status(node, gid_of(m), {"succeed"})) == "s"
    assert paths(busi, gid_of(m)) == ["/TransIn"]


def test_s15_do_and_submit_business_failure_aborts(node: FastdtmNode, busi: BusiServer) -> None:
    def refuse(barrier: object) -> None:
        raise utils.DTMFailureError("FAILURE")

    m = one_branch(node, busi)
    with pytest.raises(utils.DTMFailureError):
        m.do_and_submit(busi.url("/QueryPrepared"), refuse)
    reply = query(node, gid_of(m))
    assert reply["transaction"]["status"] == "failed"
    assert statuses(reply) == "p"
    assert busi.calls() == []


@pytest.mark.parametrize(("answer", "final", "branch"), [(200, "succeed", "s"), (409, "failed", "p")])
def test_s15_do_and_submit_unknown_error_asks_query_prepared(
    node: FastdtmNode, busi: BusiServer, answer: int, final: str, branch: str
) -> None:
    def crash(barrier: object) -> None:
        raise RuntimeError("connection to the business DB dropped")

    busi.script("/QueryPrepared", [answer])
    m = one_branch(node, busi)
    with pytest.raises(RuntimeError):
        m.do_and_submit(busi.url("/QueryPrepared"), crash)
    reply = wait_status(node, gid_of(m), {final})
    assert statuses(reply) == branch
    check = busi.calls("/QueryPrepared")[0]
    assert check.query["dtm"] == node.dtm  # the SDK itself asked, not the server


@pytest.mark.parametrize(
    ("script", "calls"), [([500, 500, 200], 3), ([409, 200], 2)], ids=["errors", "failure-is-retried"]
)
def test_s16_msg_branch_errors_are_retried_until_success(
    node: FastdtmNode, busi: BusiServer, script: list[int], calls: int
) -> None:
    busi.script("/TransIn", script)
    m = message(node, busi)
    m.submit()
    reply = wait_status(node, gid_of(m), {"succeed"}, timeout=20)
    assert statuses(reply) == "ss"
    assert len(busi.calls("/TransIn")) == calls
    assert len(busi.calls("/TransOut")) == 1
