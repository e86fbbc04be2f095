"""SAGA through the real Python SDK (dtmcli 1.7.7.0) against a real node: scenarios S01-S10.

Scenario numbers and expectations are those of reference/dtm-clients.md §6.2.
"""

from __future__ import annotations

import json
import time

import pytest
from dtmcli import saga, utils

from tests.e2e.helpers import bodies, paths, sequence, statuses
from tests.support.busi import BusiServer, Reply
from tests.support.node import FastdtmNode, query, wait_status

BODY = {"amount": 30}


def transfer(node: FastdtmNode, busi: BusiServer, gid: str | None = None) -> saga.Saga:
    s = saga.Saga(node.dtm, gid or utils.gen_gid(node.dtm))
    s.add(BODY, busi.url("/TransOut"), busi.url("/TransOutRevert"))
    s.add(BODY, busi.url("/TransIn"), busi.url("/TransInRevert"))
    return s


def gid_of(s: saga.Saga) -> str:
    gid: str = s.trans_base.gid
    return gid


def test_s01_saga_succeeds_calling_actions_in_order(node: FastdtmNode, busi: BusiServer) -> None:
    s = transfer(node, busi)
    s.submit()
    reply = wait_status(node, gid_of(s), {"succeed"})
    assert statuses(reply) == "psps"
    assert sequence(busi, gid_of(s)) == [("/TransOut", "01", "action", "POST"), ("/TransIn", "02", "action", "POST")]
    # Payloads travel byte for byte (the SDK's json.dumps has a space after the colon).
    assert [c.body for c in busi.calls("/TransOut")] == [json.dumps(BODY).encode()]
    assert bodies(reply) == [json.dumps(BODY)] * 4
    assert all(c.headers.get("content-type") == "application/json" for c in busi.calls())


@pytest.mark.parametrize(
    "failure", [pytest.param(409, id="409"), pytest.param((200, '{"dtm_result":"FAILURE"}'), id="legacy-body")]
)
def test_s02_s03_failed_action_rolls_back_in_reverse(
    node: FastdtmNode, busi: BusiServer, failure: int | tuple[int, str]
) -> None:
    busi.script("/TransIn", [failure])
    s = transfer(node, busi)
    s.submit()
    reply = wait_status(node, gid_of(s), {"failed"})
    assert statuses(reply) == "sssf"
    assert "FAILURE" in reply["transaction"]["rollback_reason"]
    assert paths(busi, gid_of(s)) == ["/TransOut", "/TransIn", "/TransInRevert", "/TransOutRevert"]


@pytest.mark.parametrize(("first", "gap"), [(425, 1.0), (500, 2.0)], ids=["ongoing", "error"])
def test_s04_ongoing_and_errors_are_retried_by_the_cron(
    node: FastdtmNode, busi: BusiServer, first: int, gap: float
) -> None:
    busi.script("/TransOut", [first, 200])
    s = transfer(node, busi)
    s.trans_base.retry_interval = 1
    s.submit()
    busi.wait_calls("/TransOut", 1)
    time.sleep(0.3)
    after_first = query(node, gid_of(s))
    assert after_first["transaction"]["status"] == "submitted"
    assert statuses(after_first) == "pppp"
    reply = wait_status(node, gid_of(s), {"succeed"}, timeout=15)
    assert statuses(reply) == "psps"
    out = busi.calls("/TransOut")
    assert len(out) == 2
    # ONGOING retries at the interval; an error doubles it first.
    assert gap * 0.8 <= out[1].at - out[0].at <= gap + 2.5
    assert paths(busi, gid_of(s)) == ["/TransOut", "/TransOut", "/TransIn"]


def test_s05_compensation_errors_are_retried(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransIn", [409])
    busi.script("/TransOutRevert", [500, 200])
    s = transfer(node, busi)
    s.submit()
    wait_status(node, gid_of(s), {"aborting"})
    reply = wait_status(node, gid_of(s), {"failed"}, timeout=15)
    assert statuses(reply) == "sssf"
    assert paths(busi, gid_of(s)) == ["/TransOut", "/TransIn", "/TransInRevert", "/TransOutRevert", "/TransOutRevert"]


def test_s06_wait_result_success(node: FastdtmNode, busi: BusiServer) -> None:
    s = transfer(node, busi)
    s.trans_base.wait_result = True
    s.submit()
    # Already finished when submit returned: no polling.
    reply = query(node, gid_of(s))
    assert reply["transaction"]["status"] == "succeed"
    assert statuses(reply) == "psps"


def test_s06_wait_result_failure_raises_with_the_reason(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransIn", [(409, '{"dtm_result":"FAILURE","message":"Insufficient balance"}')])
    s = transfer(node, busi)
    s.trans_base.wait_result = True
    with pytest.raises(utils.DTMFailureError):
        s.submit()
    reply = query(node, gid_of(s))
    assert reply["transaction"]["status"] == "failed"
    assert "Insufficient balance" in reply["transaction"]["rollback_reason"]
    assert statuses(reply) == "sssf"
    assert paths(busi, gid_of(s)) == ["/TransOut", "/TransIn", "/TransInRevert", "/TransOutRevert"]


def test_s07_timeout_compensates_the_action_that_may_have_run(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransOut", [425])
    s = transfer(node, busi)
    s.trans_base.timeout_to_fail = 2
    s.trans_base.retry_interval = 1
    s.submit()
    reply = wait_status(node, gid_of(s), {"failed"}, timeout=15)
    assert reply["transaction"]["rollback_reason"] == "Timeout after 2 seconds"
    assert statuses(reply) == "sppp"
    seen = paths(busi, gid_of(s))
    assert "/TransIn" not in seen
    assert seen[-1] == "/TransOutRevert"
    assert set(seen[:-1]) == {"/TransOut"}


def concurrent_saga(node: FastdtmNode, busi: BusiServer, steps: int) -> saga.Saga:
    s = saga.Saga(node.dtm, utils.gen_gid(node.dtm))
    for i in range(steps):
        s.add(BODY, busi.url(f"/A{i}"), busi.url(f"/C{i}"))
    # dtmcli 1.7.7.0 never initialises these two attributes (reference/dtm-clients.md §1.5).
    s.orders = {}
    s.concurrent = True
    return s.set_concurrent()


def test_s08_concurrent_saga_respects_orders(node: FastdtmNode, busi: BusiServer) -> None:
    for i in (0, 1):
        busi.script(f"/A{i}", [Reply(200, delay=0.3)])
    s = concurrent_saga(node, busi, 4).add_branch_order(2, [0, 1]).add_branch_order(3, [0, 1])
    s.submit()
    reply = wait_status(node, gid_of(s), {"succeed"})
    assert statuses(reply) == "psps" * 2
    calls = {c.path: c for c in busi.calls()}
    first_done = max(calls["/A0"].at, calls["/A1"].at) + 0.3
    assert calls["/A2"].at >= first_done - 0.05
    assert calls["/A3"].at >= first_done - 0.05
    # A0 and A1 ran side by side.
    assert abs(calls["/A0"].at - calls["/A1"].at) < 0.25


def test_s09_concurrent_failure_of_a_prerequisite(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/A0", [409])
    s = concurrent_saga(node, busi, 2).add_branch_order(1, [0])
    s.submit()
    reply = wait_status(node, gid_of(s), {"failed"})
    assert statuses(reply) == "sfpp"
    assert paths(busi, gid_of(s)) == ["/A0", "/C0"]


def test_s10_branch_headers_reach_every_call(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/TransOut", [425, 200])
    s = transfer(node, busi)
    s.trans_base.branch_headers = {"test_header": "test"}
    s.trans_base.retry_interval = 1
    s.submit()
    wait_status(node, gid_of(s), {"succeed"}, timeout=15)
    calls = busi.calls()
    assert len(calls) == 3
    assert all(c.headers.get("test_header") == "test" for c in calls)
