"""What every transaction kind shares: the round a kind reads, the step it decides, and timing rules.

A kind is pure: given the transaction, its branches and what happened so far in this processing
round, it says which branch calls to start and whether the global status moves. The engine does
the I/O and asks again after every result. Nothing here touches the network, the store or a clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Protocol, TypeAlias

from fastdtm.errors import Invalid
from fastdtm.models import Branch, BranchRequest, Options, Transaction, TransRequest
from fastdtm.records import record
from fastdtm.states import BranchStatus, Outcome, TransStatus

#: Subscribers of the topics a request names (topic -> branch URLs), resolved before `build`.
Topics: TypeAlias = Mapping[str, Sequence[str]]

#: Index of a call that is not a stored branch (the msg check-back, the workflow resume callback).
CHECK_BACK: Final = -1


@dataclass(frozen=True, slots=True)
class Policy:
    """The server defaults the kinds need, in milliseconds."""

    retry_interval_ms: int
    timeout_to_fail_ms: int


@record
class Call:
    """One branch call to make: `index` into the branch list, or CHECK_BACK."""

    index: int
    branch_id: str
    op: str
    url: str
    data: str
    #: POST even without a body (XA's phase two); otherwise POST only when there is a body.
    post: bool = False

    @classmethod
    def of(cls, index: int, branch: Branch, *, post: bool = False) -> Call:
        return cls(index, branch.branch_id, branch.op, branch.url, branch.data, post)


@record
class Step:
    """A kind's decision: start these calls, or move the global status, or look again later."""

    start: tuple[Call, ...] = ()
    status: TransStatus | None = None
    reason: str = ""
    #: Stop this round and look again at this time (ms), e.g. a msg whose delay has not passed.
    wake_at_ms: int = 0
    #: The calls depend on results of this round that another round could not rebuild (the saga's
    #: rollback reads which actions succeeded): write them before the calls go out.
    record_first: bool = False


@dataclass(slots=True)
class Round:
    """One processing round of one transaction, as the engine keeps it."""

    trans: Transaction
    branches: list[Branch]
    now_ms: int
    policy: Policy
    #: Calls started in this round, per index; a kind never starts the same call twice unless it
    #: retries on purpose (saga retry_limit).
    attempts: dict[int, int] = field(default_factory=dict)
    running: set[int] = field(default_factory=set)
    #: The last outcome of each call finished in this round.
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    #: Why a branch failed terminally (becomes the rollback reason).
    failure_reason: str = ""
    #: The kind's reading of `custom_data`, parsed once per round rather than at every step.
    # Any, not object: mypyc's dataclasses cannot resolve a field annotated `object` at import.
    parsed: Any = None

    def finished_with(self, index: int) -> Outcome | None:
        return self.outcomes.get(index) if index not in self.running else None

    def all_succeeded(self, indexes: Sequence[int]) -> bool:
        return all(self.branches[i].status is BranchStatus.SUCCEED for i in indexes)


class Kind(Protocol):
    """The rules of one trans_type."""

    #: Ops whose FAILURE is terminal for the branch (saga action); for every other op a FAILURE
    #: is retried like any error.
    failure_ends: ClassVar[frozenset[str]]

    def build(self, request: TransRequest, now_ms: int, topics: Topics) -> list[Branch]:
        """Validate a prepare/submit request of this kind and build its branch records."""
        ...

    def register(self, request: BranchRequest, now_ms: int) -> list[Branch]:
        """Validate a registerBranch request of this kind and build the records to append."""
        ...

    def step(self, rnd: Round) -> Step:
        """Decide what to do next in this round."""
        ...


def timeout_ms(trans: Transaction, policy: Policy, *, default_applies: bool) -> int:
    """The transaction's timeout: its own, else the server default for kinds that have one; 0 = never."""
    if trans.options.timeout_to_fail > 0:
        return trans.options.timeout_to_fail * 1000
    return policy.timeout_to_fail_ms if default_applies else 0


def is_timed_out(rnd: Round, *, default_applies: bool) -> bool:
    limit = timeout_ms(rnd.trans, rnd.policy, default_applies=default_applies)
    return limit > 0 and rnd.now_ms - rnd.trans.create_ms >= limit


def timeout_reason(trans: Transaction) -> str:
    # DTM prints the transaction's own value (0 when the server default applied); SDK tests match it.
    return f"Timeout after {trans.options.timeout_to_fail} seconds"


#: The retry interval doubles after each error up to this (a day), or the base interval if that is longer:
#: DTM doubles without end, which after some forty errors schedules past the year 9999.
MAX_BACKOFF_MS: Final = 86_400_000


def backoff_ms(interval_ms: int, reset_ms: int) -> int:
    """The interval after an error: twice the current one, within MAX_BACKOFF_MS (or the base interval)."""
    return min(interval_ms * 2, max(reset_ms, MAX_BACKOFF_MS))


def reset_interval_ms(opts: Options, policy: Policy) -> int:
    """The base retry interval (reference §5.1): own retry_interval, else a short timeout, else default."""
    if opts.retry_interval > 0:
        return opts.retry_interval * 1000
    if 0 < opts.timeout_to_fail * 1000 < policy.retry_interval_ms:
        return opts.timeout_to_fail * 1000
    return policy.retry_interval_ms


def branch_status_after(kind: Kind, call: Call, outcome: Outcome) -> BranchStatus | None:
    """What a branch becomes after a call; None = it stays as it is and is retried."""
    if call.index == CHECK_BACK:
        return None
    if outcome is Outcome.SUCCESS:
        return BranchStatus.SUCCEED
    if outcome is Outcome.FAILURE and call.op in kind.failure_ends:
        return BranchStatus.FAILED
    return None


class NoRegistration:
    """Kinds whose branches all come with the transaction (saga, msg) refuse registerBranch."""

    def register(self, request: BranchRequest, now_ms: int) -> list[Branch]:
        raise Invalid(f"registerBranch is for tcc, xa and workflow transactions, not '{request.trans_type}'.")


class NoSteps:
    """Kinds whose branches are registered one by one (tcc, xa, workflow) build none up front."""

    def build(self, request: TransRequest, now_ms: int, topics: Topics) -> list[Branch]:
        return []


def two_phase_step(rnd: Round, confirm: str, cancel: str, order: Sequence[int], *, post: bool = False) -> Step:
    """TCC and XA: a prepared transaction waits for its app (until its timeout aborts it); then the
    second phase runs `confirm` (submitted) or `cancel` (aborting) over the records in `order`."""
    status = rnd.trans.status
    if status is TransStatus.PREPARED:
        if is_timed_out(rnd, default_applies=True):
            return Step(status=TransStatus.ABORTING, reason=timeout_reason(rnd.trans))
        return Step()
    return phase_two(rnd, confirm if status is TransStatus.SUBMITTED else cancel, order, post=post)


def phase_two(rnd: Round, op: str, order: Sequence[int], *, post: bool = False) -> Step:
    """TCC/XA second phase: call every prepared record of `op` one at a time in `order`; stop at the
    first that does not succeed (the cron retries it); when none is left, the phase is done."""
    pending = [i for i in order if rnd.branches[i].op == op and rnd.branches[i].status is BranchStatus.PREPARED]
    if not pending:
        done = TransStatus.SUCCEED if rnd.trans.status is TransStatus.SUBMITTED else TransStatus.FAILED
        return Step(status=done)
    if rnd.running or any(o is not Outcome.SUCCESS for o in rnd.outcomes.values()):
        return Step()
    return Step(start=(Call.of(pending[0], rnd.branches[pending[0]], post=post),))
