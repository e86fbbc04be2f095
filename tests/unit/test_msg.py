"""Two-phase message rules (reference §6.2), decided by the pure kind."""

from __future__ import annotations

import pytest

from fastdtm.errors import Invalid
from fastdtm.kinds.base import CHECK_BACK, Policy, Round, Step
from fastdtm.kinds.msg import Msg
from fastdtm.models import Branch, Options, Transaction, TransRequest
from fastdtm.states import BranchStatus, Op, Outcome, TransStatus, TransType

POLICY = Policy(retry_interval_ms=10_000, timeout_to_fail_ms=35_000)
P, S = BranchStatus.PREPARED, BranchStatus.SUCCEED


def msg_round(
    statuses: list[BranchStatus],
    *,
    status: TransStatus = TransStatus.SUBMITTED,
    custom_data: str = "",
    options: Options | None = None,
    now_ms: int = 1000,
) -> Round:
    branches = [Branch(f"{i + 1:02d}", Op.ACTION, f"http://b/{i}", "{}", 0, s) for i, s in enumerate(statuses)]
    trans = Transaction(
        "g", TransType.MSG, status, options or Options(), 0, 0, custom_data=custom_data, query_prepared="http://b/qp"
    )
    return Round(trans, branches, now_ms, POLICY)


def test_build_one_action_per_step() -> None:
    req = TransRequest(
        gid="g", trans_type="msg", steps=({"action": "http://x/a"}, {"action": "http://x/b"}), payloads=("1", "2")
    )
    assert [(b.branch_id, b.op, b.data) for b in Msg().build(req, 0, {})] == [
        ("01", "action", "1"),
        ("02", "action", "2"),
    ]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (TransRequest(gid="g", trans_type="msg", steps=({"action": ""},), payloads=("1",)), "not an http"),
        (
            TransRequest(
                gid="g", trans_type="msg", steps=({"action": "http://x"},), payloads=("1",), custom_data='{"delay": -1}'
            ),
            "delay",
        ),
        (TransRequest(gid="g", trans_type="msg", steps=(), query_prepared="nope"), "query_prepared"),
    ],
)
def test_build_refuses_bad_requests(req: TransRequest, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        Msg().build(req, 0, {})


def test_sequential_delivery_one_at_a_time_then_succeed() -> None:
    assert [c.index for c in Msg().step(msg_round([P, P])).start] == [0]
    assert [c.index for c in Msg().step(msg_round([S, P])).start] == [1]
    assert Msg().step(msg_round([S, S])).status is TransStatus.SUCCEED


def test_concurrent_delivery_starts_all() -> None:
    step = Msg().step(msg_round([P, P], options=Options(concurrent=True)))
    assert [c.index for c in step.start] == [0, 1]


def test_a_branch_error_stops_the_round_and_never_fails_the_msg() -> None:
    rnd = msg_round([P, P])
    rnd.attempts[0] = 1
    rnd.outcomes[0] = Outcome.FAILURE
    assert Msg().step(rnd) == Step()


def test_delay_postpones_delivery() -> None:
    step = Msg().step(msg_round([P], custom_data='{"delay": 5}', now_ms=1000))
    assert step == Step(wake_at_ms=5000)
    assert [c.index for c in Msg().step(msg_round([P], custom_data='{"delay": 5}', now_ms=5000)).start] == [0]


def test_prepared_msg_waits_for_its_timeout_then_checks_back() -> None:
    assert Msg().step(msg_round([P], status=TransStatus.PREPARED, now_ms=34_999)) == Step()
    step = Msg().step(msg_round([P], status=TransStatus.PREPARED, now_ms=35_000))
    assert [(c.index, c.branch_id, c.op, c.url, c.data) for c in step.start] == [
        (CHECK_BACK, "00", "msg", "http://b/qp", "")
    ]


def test_own_timeout_applies_to_the_check_back() -> None:
    step = Msg().step(msg_round([P], status=TransStatus.PREPARED, options=Options(timeout_to_fail=2), now_ms=2000))
    assert step.start


@pytest.mark.parametrize(
    ("outcome", "status"), [(Outcome.SUCCESS, TransStatus.SUBMITTED), (Outcome.FAILURE, TransStatus.FAILED)]
)
def test_check_back_outcome_decides(outcome: Outcome, status: TransStatus) -> None:
    rnd = msg_round([P], status=TransStatus.PREPARED, now_ms=40_000)
    rnd.attempts[CHECK_BACK] = 1
    rnd.outcomes[CHECK_BACK] = outcome
    assert Msg().step(rnd).status is status


@pytest.mark.parametrize("outcome", [Outcome.ONGOING, Outcome.ERROR])
def test_check_back_undecided_waits(outcome: Outcome) -> None:
    rnd = msg_round([P], status=TransStatus.PREPARED, now_ms=40_000)
    rnd.attempts[CHECK_BACK] = 1
    rnd.outcomes[CHECK_BACK] = outcome
    assert Msg().step(rnd) == Step()
