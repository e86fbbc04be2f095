"""SAGA: forward actions in order (or concurrently under `orders`), compensations in reverse.

Branch records: for step i, index 2i is its `compensate` and 2i+1 its `action` (DTM's order), both
with branch_id ``%02d`` (i+1) and payload i. Rules (reference §6.1): a FAILURE from an action fails
that step and rolls the saga back; the failed step is compensated too, and so is any action that may
have run (it was allowed to start and has no result). Everything else is retried by the cron.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from types import MappingProxyType
from typing import ClassVar, Final

from fastdtm.errors import Invalid
from fastdtm.kinds.base import Call, NoRegistration, Round, Step, Topics, is_timed_out, timeout_reason
from fastdtm.models import ASCII_DIGITS, Branch, TransRequest, check_call_url
from fastdtm.records import record
from fastdtm.states import BranchStatus, Op, TransStatus
from fastdtm.wire import custom_data_object


@record
class SagaConfig:
    """What a saga reads from `custom_data`: `{"concurrent": bool, "orders": {"<i>": [j, ...]}}`."""

    concurrent: bool = False
    #: step -> steps whose actions must have succeeded before it may start.
    orders: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def parse(cls, custom_data: str, steps: int) -> SagaConfig:
        if not custom_data:
            return _PLAIN  # most sagas: parsed twice per submit, so worth skipping
        data = custom_data_object(custom_data)
        concurrent = data.get("concurrent") or False
        if not isinstance(concurrent, bool):
            raise Invalid("custom_data.concurrent must be a boolean.")
        orders = _parse_orders(data.get("orders") or {}, steps)
        _check_acyclic(orders)
        return cls(concurrent, orders)

    def dependents(self, step: int) -> list[int]:
        """Steps that wait for `step` going forward, so `step` is rolled back after them."""
        return [j for j, before in self.orders.items() if step in before]


#: The configuration of a saga without custom_data: sequential, no orders. Never mutated.
_PLAIN: Final = SagaConfig(orders=MappingProxyType({}))
#: Steps every round of every saga ends with; values, so built once.
_NOTHING: Final = Step()
_SUCCEED: Final = Step(status=TransStatus.SUCCEED)
_FAILED: Final = Step(status=TransStatus.FAILED)


def _parse_orders(raw: object, steps: int) -> dict[int, tuple[int, ...]]:
    if not isinstance(raw, dict):
        raise Invalid("custom_data.orders must be an object of step index -> array of step indexes.")
    orders: dict[int, tuple[int, ...]] = {}
    for key, before in raw.items():
        if not (ASCII_DIGITS.fullmatch(key) and int(key) < steps):
            raise Invalid(f"custom_data.orders has step '{key}', but the saga has {steps} steps.")
        ok = isinstance(before, list) and all(type(j) is int and 0 <= j < steps for j in before)
        if not ok:
            raise Invalid(f"custom_data.orders['{key}'] must be an array of step indexes below {steps}.")
        orders[int(key)] = tuple(before)
    return orders


def _check_acyclic(orders: Mapping[int, tuple[int, ...]]) -> None:
    # A cycle would leave the saga waiting forever: refuse it up front.
    done: set[int] = set()

    def visit(step: int, path: tuple[int, ...]) -> None:
        if step in path:
            raise Invalid(f"custom_data.orders has a cycle through step {step}.")
        if step not in done:
            for before in orders.get(step, ()):
                visit(before, (*path, step))
            done.add(step)

    for step in orders:
        visit(step, ())


class Saga(NoRegistration):
    failure_ends: ClassVar[frozenset[str]] = frozenset({Op.ACTION})

    def build(self, request: TransRequest, now_ms: int, topics: Topics) -> list[Branch]:
        steps = request.steps
        SagaConfig.parse(request.custom_data, len(steps))
        branches: list[Branch] = []
        for i, step in enumerate(steps):
            payload = request.payload(i)
            branch_id = f"{i + 1:02d}"
            for op in (Op.COMPENSATE, Op.ACTION):
                url = step.get(op, "")
                if url:
                    check_call_url(url, f"steps[{i}].{op}", request.protocol)
                branches.append(Branch(branch_id, op, url, payload, now_ms))
        return branches

    def step(self, rnd: Round) -> Step:
        config = rnd.parsed
        if not isinstance(config, SagaConfig):
            config = rnd.parsed = SagaConfig.parse(rnd.trans.custom_data, len(rnd.branches) // 2)
        if rnd.trans.status is TransStatus.SUBMITTED:
            return _Forward(rnd, config).step()
        if rnd.trans.status is TransStatus.ABORTING:
            return _Backward(rnd, config).step()
        return _NOTHING


class _Saga:
    """Index arithmetic shared by both directions; `statuses[i]` is the status of step i's action."""

    __slots__ = ("config", "n", "rnd", "statuses")

    def __init__(self, rnd: Round, config: SagaConfig) -> None:
        self.rnd = rnd
        self.config = config
        self.statuses = [branch.status for branch in rnd.branches[1::2]]
        self.n = len(self.statuses)

    def may_start(self, i: int) -> bool:
        """The forward rule: in order (unless concurrent) and after every step in `orders[i]`."""
        statuses = self.statuses
        if not self.config.concurrent and i > 0 and statuses[i - 1] is not BranchStatus.SUCCEED:
            return False
        before = self.config.orders.get(i)
        return not before or all(statuses[j] is BranchStatus.SUCCEED for j in before)

    def call(self, index: int) -> Call:
        return Call.of(index, self.rnd.branches[index])


class _Forward(_Saga):
    __slots__ = ()

    def step(self) -> Step:
        rnd = self.rnd
        if is_timed_out(rnd, default_applies=False):
            return Step(status=TransStatus.ABORTING, reason=timeout_reason(rnd.trans))
        if self.statuses.count(BranchStatus.SUCCEED) == self.n:
            return _SUCCEED
        abort = self._abort_reason()
        if abort:
            # Let calls in flight report first, so their results are recorded before rolling back.
            return _NOTHING if rnd.running else Step(status=TransStatus.ABORTING, reason=abort)
        # A saga with a timeout may be rolled back by another round (this one paused or died) that sees
        # only what is stored: an action it does not know succeeded is one it would not compensate.
        record_first = rnd.trans.options.timeout_to_fail > 0
        return Step(
            tuple([self.call(2 * i + 1) for i in range(self.n) if self._startable(i)]), record_first=record_first
        )

    def _abort_reason(self) -> str:
        if BranchStatus.FAILED in self.statuses:
            return self.rnd.failure_reason or "fail message lost"
        limit = self.rnd.trans.options.retry_limit
        if limit > 0 and any(self.rnd.attempts.get(2 * i + 1, 0) > limit for i in range(self.n)):
            return f"RetryCount is greater than RetryLimit, RetryLimit: {limit}"
        return ""

    def _startable(self, i: int) -> bool:
        index = 2 * i + 1
        if self.statuses[i] is not BranchStatus.PREPARED or index in self.rnd.running:
            return False
        attempts = self.rnd.attempts.get(index, 0)
        # Within a round an action runs once; retry_limit > 0 re-calls it at once up to that limit.
        if attempts > 0 and attempts > self.rnd.trans.options.retry_limit:
            return False
        return self.may_start(i)


class _Backward(_Saga):
    __slots__ = ()

    def step(self) -> Step:
        if all(self.rolled_back(i) for i in range(self.n)):
            return _FAILED
        return Step(tuple([self.call(2 * i) for i in reversed(range(self.n)) if self._startable(i)]))

    def needs_compensation(self, i: int) -> bool:
        if self.statuses[i] is BranchStatus.PREPARED:
            # Allowed to start but without a result: it may have run (a lost reply, a crashed node).
            return self.may_start(i)
        return True

    def rolled_back(self, i: int) -> bool:
        return not self.needs_compensation(i) or self.rnd.branches[2 * i].status is BranchStatus.SUCCEED

    def _startable(self, i: int) -> bool:
        index = 2 * i
        if self.rolled_back(i) or index in self.rnd.running or index in self.rnd.attempts:
            return False
        later = self.config.dependents(i) if self.config.concurrent else ([i + 1] if i + 1 < self.n else [])
        return all(self.rolled_back(j) for j in later)
