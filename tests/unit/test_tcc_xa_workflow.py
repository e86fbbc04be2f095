"""TCC, XA and workflow rules (reference §6.3-§6.5), decided by the pure kinds."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pytest

from fastdtm.errors import Invalid
from fastdtm.kinds.base import CHECK_BACK, Policy, Round, Step
from fastdtm.kinds.tcc import Tcc
from fastdtm.kinds.workflow import Workflow, workflow_input
from fastdtm.kinds.xa import Xa
from fastdtm.models import Branch, BranchRequest, Options, Transaction, TransRequest
from fastdtm.states import BranchStatus, Op, Outcome, TransStatus, TransType

POLICY = Policy(retry_interval_ms=10_000, timeout_to_fail_ms=35_000)
P, S = BranchStatus.PREPARED, BranchStatus.SUCCEED


def two_phase_round(
    trans_type: TransType, ops: Sequence[tuple[str, str, BranchStatus]], status: TransStatus, now_ms: int = 1000
) -> Round:
    branches = [Branch(bid, op, f"http://b/{bid}/{op}", "{}", 0, st) for bid, op, st in ops]
    trans = Transaction("g", trans_type, status, Options(), 0, 0)
    return Round(trans, branches, now_ms, POLICY)


def tcc_ops(*statuses: tuple[str, BranchStatus, BranchStatus]) -> list[tuple[str, str, BranchStatus]]:
    out: list[tuple[str, str, BranchStatus]] = []
    for bid, cancel, confirm in statuses:
        out += [(bid, Op.CANCEL, cancel), (bid, Op.CONFIRM, confirm)]
    return out


def started(step: Step) -> list[tuple[str, str, bool]]:
    return [(c.branch_id, c.op, c.post) for c in step.start]


def branch_request(**fields: str) -> BranchRequest:
    return BranchRequest.parse({"gid": "g", "branch_id": "01", **fields})


def test_tcc_register_stores_cancel_then_confirm() -> None:
    req = branch_request(trans_type="tcc", data="d", confirm="http://x/confirm", cancel="http://x/cancel", try_="t")
    assert [(b.op, b.url, b.data) for b in Tcc().register(req, 0)] == [
        ("cancel", "http://x/cancel", "d"),
        ("confirm", "http://x/confirm", "d"),
    ]


def test_tcc_confirms_last_registered_first_one_at_a_time() -> None:
    ops = tcc_ops(("01", P, P), ("02", P, P), ("0201", P, P))
    rnd = two_phase_round(TransType.TCC, ops, TransStatus.SUBMITTED)
    assert started(Tcc().step(rnd)) == [("0201", "confirm", False)]
    rnd.branches[5] = rnd.branches[5].with_status(S, 1)
    assert started(Tcc().step(rnd)) == [("02", "confirm", False)]


def test_tcc_stops_at_the_first_failing_confirm_and_succeeds_when_all_are_done() -> None:
    rnd = two_phase_round(TransType.TCC, tcc_ops(("01", P, P), ("02", P, P)), TransStatus.SUBMITTED)
    rnd.attempts[3] = 1
    rnd.outcomes[3] = Outcome.FAILURE
    assert Tcc().step(rnd) == Step()
    done = two_phase_round(TransType.TCC, tcc_ops(("01", P, S), ("02", P, S)), TransStatus.SUBMITTED)
    assert Tcc().step(done).status is TransStatus.SUCCEED


def test_tcc_cancels_when_aborting_then_fails() -> None:
    rnd = two_phase_round(TransType.TCC, tcc_ops(("01", P, P), ("02", P, P)), TransStatus.ABORTING)
    assert started(Tcc().step(rnd)) == [("02", "cancel", False)]
    done = two_phase_round(TransType.TCC, tcc_ops(("01", S, P), ("02", S, P)), TransStatus.ABORTING)
    assert Tcc().step(done).status is TransStatus.FAILED


def test_a_prepared_tcc_times_out_with_the_server_default() -> None:
    rnd = two_phase_round(TransType.TCC, tcc_ops(("01", P, P)), TransStatus.PREPARED, now_ms=35_000)
    step = Tcc().step(rnd)
    assert (step.status, step.reason) == (TransStatus.ABORTING, "Timeout after 0 seconds")
    early = two_phase_round(TransType.TCC, tcc_ops(("01", P, P)), TransStatus.PREPARED, now_ms=34_999)
    assert Tcc().step(early) == Step()


def test_xa_commits_in_registration_order_with_posts() -> None:
    ops = [("01", Op.ROLLBACK, P), ("01", Op.COMMIT, P), ("02", Op.ROLLBACK, P), ("02", Op.COMMIT, P)]
    rnd = two_phase_round(TransType.XA, ops, TransStatus.SUBMITTED)
    assert started(Xa().step(rnd)) == [("01", "commit", True)]
    rnd = two_phase_round(TransType.XA, ops, TransStatus.ABORTING)
    assert started(Xa().step(rnd)) == [("01", "rollback", True)]


def test_xa_register_needs_an_http_url() -> None:
    assert [b.op for b in Xa().register(branch_request(trans_type="xa", url="http://rm/xa"), 0)] == [
        "rollback",
        "commit",
    ]
    with pytest.raises(Invalid, match="url"):
        Xa().register(branch_request(trans_type="xa"), 0)


def workflow_request(**fields: str) -> TransRequest:
    custom = '{"name": "transfer", "data": "' + base64.b64encode(b'{"amount":30}').decode() + '"}'
    values = {"gid": "g", "trans_type": "workflow", "custom_data": custom, "query_prepared": "http://b/resume"}
    values.update(fields)
    return TransRequest.parse(values)


def test_workflow_input_is_decoded_from_custom_data() -> None:
    assert workflow_input(workflow_request().custom_data) == ("transfer", '{"amount":30}')
    with pytest.raises(Invalid, match="custom_data"):
        Workflow().build(workflow_request(custom_data='{"data": ""}'), 0, {})
    with pytest.raises(Invalid, match="base64"):
        Workflow().build(workflow_request(custom_data='{"name": "n", "data": "%%%"}'), 0, {})


def test_workflow_register_records_the_clients_result() -> None:
    [branch] = Workflow().register(branch_request(trans_type="workflow", op="action", status="succeed", data="r"), 5)
    assert (branch.op, branch.status, branch.data, branch.finish_ms) == ("action", S, "r", 5)
    with pytest.raises(Invalid, match="status"):
        Workflow().register(branch_request(trans_type="workflow", op="action", status="prepared"), 5)


def test_a_prepared_workflow_is_resumed_through_its_callback_without_back_off() -> None:
    req = workflow_request()
    trans = Transaction(
        "g", TransType.WORKFLOW, TransStatus.PREPARED, Options(), 0, 0, req.custom_data, req.query_prepared
    )
    rnd = Round(trans, [], 1000, POLICY)
    [call] = Workflow().step(rnd).start
    assert (call.index, call.branch_id, call.op, call.url, call.data) == (
        CHECK_BACK,
        "00",
        "transfer",
        "http://b/resume",
        '{"amount":30}',
    )
    rnd.attempts[CHECK_BACK] = 1
    rnd.outcomes[CHECK_BACK] = Outcome.ERROR
    assert Workflow().step(rnd) == Step(wake_at_ms=11_000)


def test_bad_branch_requests() -> None:
    with pytest.raises(Invalid, match="must be a string"):
        BranchRequest.parse({"gid": "g", "branch_id": "01", "data": 1})
    with pytest.raises(Invalid, match="branch_id"):
        BranchRequest.parse({"gid": "g", "branch_id": "0 1"})


def test_changes_outside_the_transition_table_are_refused() -> None:
    from fastdtm.store.base import Change

    Change("g", TransStatus.SUBMITTED, TransStatus.SUBMITTED, 0)  # recording a branch: allowed
    Change("g", TransStatus.ABORTING, TransStatus.FAILED, 0)
    for expected, status in [
        (TransStatus.SUCCEED, TransStatus.FAILED),
        (TransStatus.ABORTING, TransStatus.SUCCEED),
        (TransStatus.SUBMITTED, TransStatus.PREPARED),
    ]:
        with pytest.raises(ValueError, match="not an allowed transition"):
            Change("g", expected, status, 0)
