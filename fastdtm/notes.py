"""What the operator's console knows of a transaction beyond DTM's fields, and the rules of its actions.

A round that ends in an error records it (`transition.lua`'s attention: `retries`, `failing_since`, and the
last error of each branch it called, hash fields `e<i>`); an operator's decision on a branch is kept beside
it (`o<i>`, `lua/admin_mark.lua`), and a paused transaction has `paused` (`lua/admin_pause.lua`). Pure: the
stores map these fields (store/hashes.py, store/sqlite_trans.py), the console's service applies the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Final

from fastdtm import wire
from fastdtm.models import Branch, Transaction
from fastdtm.records import record
from fastdtm.states import BranchStatus, Op, Outcome, TransStatus, TransType

#: How much of a failing branch's reply is kept: enough to read the error, bounded whatever the branch sends.
DETAIL_CHARS: Final = 500
#: The longest reason an operator may give.
MAX_REASON: Final = 500

SKIP: Final = "skip"
FAIL: Final = "fail"
#: The branch status each operator action records.
ACTION_STATUS: Final[Mapping[str, BranchStatus]] = {SKIP: BranchStatus.SUCCEED, FAIL: BranchStatus.FAILED}

#: The ops the coordinator itself calls, by type and status: the branches an operator may decide for it.
#: Workflow branches are decided by the workflow's own code, a prepared transaction by its client.
SERVER_CALLS: Final[Mapping[TransType, Mapping[TransStatus, frozenset[str]]]] = {
    TransType.SAGA: {TransStatus.SUBMITTED: frozenset({Op.ACTION}), TransStatus.ABORTING: frozenset({Op.COMPENSATE})},
    TransType.MSG: {TransStatus.SUBMITTED: frozenset({Op.ACTION})},
    TransType.TCC: {TransStatus.SUBMITTED: frozenset({Op.CONFIRM}), TransStatus.ABORTING: frozenset({Op.CANCEL})},
    TransType.XA: {TransStatus.SUBMITTED: frozenset({Op.COMMIT}), TransStatus.ABORTING: frozenset({Op.ROLLBACK})},
    TransType.WORKFLOW: {},
}
#: The ops whose FAILURE ends the transaction's forward path (a saga's action: it then compensates); every other
#: op is retried until it succeeds, so failing it by hand would contradict its type.
FAILABLE: Final[Mapping[TransType, frozenset[str]]] = {TransType.SAGA: frozenset({Op.ACTION})}


@record
class BranchError:
    """The last unsuccessful reply of a branch: when, what it counted as, and an excerpt of what came back."""

    at_ms: int
    outcome: str
    #: The reply's status ("HTTP 500", "gRPC Unavailable"), "" when none came.
    code: str
    detail: str


@record
class Mark:
    """An operator's decision on a branch."""

    action: str
    reason: str
    at_ms: int


@record
class Notes:
    paused_ms: int = 0
    failing_since_ms: int = 0
    retries: int = 0
    held_until_ms: int = 0
    errors: Mapping[int, BranchError] = field(default_factory=dict)
    marks: Mapping[int, Mark] = field(default_factory=dict)


def error_field(index: int, at_ms: int, outcome: Outcome, code: str, detail: str) -> tuple[str, str]:
    return f"e{index}", wire.encode_text([at_ms, str(outcome), code, detail[:DETAIL_CHARS]])


def mark_value(action: str, reason: str, at_ms: int) -> str:
    return wire.encode_text([action, reason, at_ms])


def decode_error(value: str) -> BranchError:
    at_ms, outcome, code, detail = wire.decode(value)
    return BranchError(int(at_ms), str(outcome), str(code), str(detail))


def decode_mark(value: str) -> Mark:
    action, reason, at_ms = wire.decode(value)
    return Mark(str(action), str(reason), int(at_ms))


def can_skip(trans: Transaction, branch: Branch) -> bool:
    """Whether an operator may record this branch as succeeded: the coordinator would call it next."""
    calls = SERVER_CALLS[trans.trans_type].get(trans.status, frozenset())
    return branch.status is BranchStatus.PREPARED and branch.op in calls


def can_fail(trans: Transaction, branch: Branch) -> bool:
    """Whether an operator may record this branch as failed (only where a FAILURE reply would end it)."""
    return can_skip(trans, branch) and branch.op in FAILABLE.get(trans.trans_type, frozenset())
