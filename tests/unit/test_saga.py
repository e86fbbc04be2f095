"""Saga rules (reference §6.1), decided by the pure kind without any I/O."""

from __future__ import annotations

import pytest

from fastdtm.errors import Invalid
from fastdtm.kinds.base import Policy, Round, Step
from fastdtm.kinds.saga import Saga, SagaConfig
from fastdtm.models import Branch, Options, Transaction, TransRequest
from fastdtm.states import BranchStatus, Op, Outcome, TransStatus, TransType

POLICY = Policy(retry_interval_ms=10_000, timeout_to_fail_ms=35_000)
P, S, F = BranchStatus.PREPARED, BranchStatus.SUCCEED, BranchStatus.FAILED


def saga_round(
    actions: list[BranchStatus],
    compensations: list[BranchStatus] | None = None,
    *,
    status: TransStatus = TransStatus.SUBMITTED,
    custom_data: str = "",
    options: Options | None = None,
    now_ms: int = 1000,
) -> Round:
    comps = compensations or [P] * len(actions)
    branches = []
    for i, (action, comp) in enumerate(zip(actions, comps, strict=True)):
        branches.append(Branch(f"{i + 1:02d}", Op.COMPENSATE, f"http://b/c{i}", "{}", 0, comp))
        branches.append(Branch(f"{i + 1:02d}", Op.ACTION, f"http://b/a{i}", "{}", 0, action))
    trans = Transaction("g", TransType.SAGA, status, options or Options(), 0, 0, custom_data=custom_data)
    return Round(trans, branches, now_ms, POLICY)


def started(step: Step) -> list[tuple[str, str]]:
    return [(c.branch_id, c.op) for c in step.start]


def test_build_makes_compensate_then_action_per_step() -> None:
    req = TransRequest(
        gid="g",
        trans_type="saga",
        steps=({"action": "http://x/a", "compensate": "http://x/c"}, {"action": "http://x/b", "compensate": ""}),
        payloads=("p0", "p1"),
    )
    branches = Saga().build(req, 5, {})
    assert [(b.branch_id, b.op, b.url, b.data) for b in branches] == [
        ("01", "compensate", "http://x/c", "p0"),
        ("01", "action", "http://x/a", "p0"),
        ("02", "compensate", "", "p1"),
        ("02", "action", "http://x/b", "p1"),
    ]


def test_build_accepts_the_old_format_with_data_in_steps() -> None:
    req = TransRequest(gid="g", trans_type="saga", steps=({"action": "http://x/a", "data": "old"},))
    assert [b.data for b in Saga().build(req, 0, {})] == ["old", "old"]


@pytest.mark.parametrize(
    ("steps", "payloads", "message"),
    [
        (({"action": "ftp://x/a"},), ("p",), "not an http"),
        (({"action": "http://x/a"},), (), "no payload"),
        (({"action": "grpc-host:8080/svc/Method"},), ("p",), "not an http"),
    ],
)
def test_build_refuses_bad_steps(steps: tuple[dict[str, str], ...], payloads: tuple[str, ...], message: str) -> None:
    with pytest.raises(Invalid, match=message):
        Saga().build(TransRequest(gid="g", trans_type="saga", steps=steps, payloads=payloads), 0, {})


@pytest.mark.parametrize(
    ("custom_data", "message"),
    [
        ("not json", "JSON object"),
        ('{"orders": {"5": [0]}}', "has step '5'"),
        ('{"orders": {"1": [7]}}', "step indexes below"),
        ('{"orders": {"0": [1], "1": [0]}}', "cycle"),
        ('{"concurrent": "yes"}', "boolean"),
    ],
)
def test_custom_data_is_validated(custom_data: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        SagaConfig.parse(custom_data, 2)


def test_sequential_forward_starts_only_the_next_action() -> None:
    assert started(Saga().step(saga_round([P, P]))) == [("01", "action")]
    assert started(Saga().step(saga_round([S, P]))) == [("02", "action")]


def test_all_actions_succeeded_means_succeed() -> None:
    assert Saga().step(saga_round([S, S])).status is TransStatus.SUCCEED


def test_a_failed_action_rolls_back_with_its_reason_once_nothing_runs() -> None:
    rnd = saga_round([S, F])
    rnd.failure_reason = "url:x return failed: no money"
    step = Saga().step(rnd)
    assert step.status is TransStatus.ABORTING
    assert step.reason == "url:x return failed: no money"
    rnd.running.add(99)
    assert Saga().step(rnd) == Step()


def test_compensation_runs_in_reverse_and_includes_the_failed_step() -> None:
    rnd = saga_round([S, F], status=TransStatus.ABORTING)
    assert started(Saga().step(rnd)) == [("02", "compensate")]
    rnd = saga_round([S, F], [P, S], status=TransStatus.ABORTING)
    assert started(Saga().step(rnd)) == [("01", "compensate")]
    rnd = saga_round([S, F], [S, S], status=TransStatus.ABORTING)
    assert Saga().step(rnd).status is TransStatus.FAILED


def test_actions_never_started_get_no_compensation() -> None:
    rnd = saga_round([F, P, P], status=TransStatus.ABORTING)
    assert started(Saga().step(rnd)) == [("01", "compensate")]


def test_an_action_that_may_have_run_is_compensated() -> None:
    # Allowed to start, no result recorded (error, lost reply): treated as maybe executed.
    rnd = saga_round([S, P], status=TransStatus.ABORTING)
    assert started(Saga().step(rnd)) == [("02", "compensate")]


def test_timeout_aborts_with_dtms_reason() -> None:
    rnd = saga_round([P, P], options=Options(timeout_to_fail=2), now_ms=2000)
    step = Saga().step(rnd)
    assert (step.status, step.reason) == (TransStatus.ABORTING, "Timeout after 2 seconds")
    assert Saga().step(saga_round([P, P], options=Options(timeout_to_fail=2), now_ms=1999)).status is None


def test_saga_has_no_timeout_unless_it_asks() -> None:
    assert Saga().step(saga_round([P], now_ms=10**9)).status is None


def test_an_action_runs_once_per_round_without_retry_limit() -> None:
    rnd = saga_round([P, P])
    rnd.attempts[1] = 1
    rnd.outcomes[1] = Outcome.ERROR
    assert Saga().step(rnd) == Step()


def test_retry_limit_recalls_then_aborts() -> None:
    rnd = saga_round([S, P], options=Options(retry_limit=1))
    rnd.attempts[3] = 1
    assert started(Saga().step(rnd)) == [("02", "action")]
    rnd.attempts[3] = 2
    step = Saga().step(rnd)
    assert (step.status, step.reason) == (TransStatus.ABORTING, "RetryCount is greater than RetryLimit, RetryLimit: 1")


def test_concurrent_orders_gate_the_forward_phase() -> None:
    custom = '{"concurrent": true, "orders": {"2": [0, 1], "3": [0, 1]}}'
    assert started(Saga().step(saga_round([P, P, P, P], custom_data=custom))) == [("01", "action"), ("02", "action")]
    assert started(Saga().step(saga_round([S, P, P, P], custom_data=custom))) == [("02", "action")]
    assert started(Saga().step(saga_round([S, S, P, P], custom_data=custom))) == [("03", "action"), ("04", "action")]


def test_concurrent_rollback_waits_for_dependents() -> None:
    custom = '{"concurrent": true, "orders": {"1": [0]}}'
    rnd = saga_round([S, F], status=TransStatus.ABORTING, custom_data=custom)
    assert started(Saga().step(rnd)) == [("02", "compensate")]
    rnd = saga_round([S, F], [P, S], status=TransStatus.ABORTING, custom_data=custom)
    assert started(Saga().step(rnd)) == [("01", "compensate")]


def test_concurrent_failure_of_a_prerequisite_compensates_only_it() -> None:
    custom = '{"concurrent": true, "orders": {"1": [0]}}'
    rnd = saga_round([F, P], status=TransStatus.ABORTING, custom_data=custom)
    assert started(Saga().step(rnd)) == [("01", "compensate")]
    rnd = saga_round([F, P], [S, P], status=TransStatus.ABORTING, custom_data=custom)
    assert Saga().step(rnd).status is TransStatus.FAILED


def test_a_compensation_that_failed_this_round_waits_for_the_cron() -> None:
    rnd = saga_round([S, F], status=TransStatus.ABORTING)
    rnd.attempts[2] = 1
    assert Saga().step(rnd) == Step()
