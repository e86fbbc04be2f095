"""Statuses, branch ops and outcomes, and the table of allowed global status transitions."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

#: A transaction's `protocol`: how its SDK spoke to the server, and so how its branch bodies are kept (as text
#: for HTTP, base64 for gRPC's bytes). Which way a branch is called depends on its URL (invoker.py).
HTTP: Final = "http"
GRPC: Final = "grpc"
PROTOCOLS: Final = (HTTP, GRPC)


class TransStatus(StrEnum):
    PREPARED = "prepared"
    SUBMITTED = "submitted"
    ABORTING = "aborting"
    SUCCEED = "succeed"
    FAILED = "failed"


class BranchStatus(StrEnum):
    PREPARED = "prepared"
    SUCCEED = "succeed"
    FAILED = "failed"


class TransType(StrEnum):
    SAGA = "saga"
    MSG = "msg"
    TCC = "tcc"
    XA = "xa"
    WORKFLOW = "workflow"


class Op(StrEnum):
    ACTION = "action"
    COMPENSATE = "compensate"
    TRY = "try"
    CONFIRM = "confirm"
    CANCEL = "cancel"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    MSG = "msg"


class Outcome(StrEnum):
    """What a branch call came back with (reference §2.2)."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    ONGOING = "ONGOING"
    ERROR = "ERROR"


TERMINAL: Final = frozenset({TransStatus.SUCCEED, TransStatus.FAILED})

#: Every status change the engine or the API may ask the store for. `forceStop` may fail any
#: unfinished transaction; everything else follows the per-type state machines (reference §6.6).
TRANSITIONS: Final[Mapping[TransStatus, frozenset[TransStatus]]] = {
    TransStatus.PREPARED: frozenset(
        {TransStatus.SUBMITTED, TransStatus.ABORTING, TransStatus.SUCCEED, TransStatus.FAILED}
    ),
    TransStatus.SUBMITTED: frozenset({TransStatus.ABORTING, TransStatus.SUCCEED, TransStatus.FAILED}),
    TransStatus.ABORTING: frozenset({TransStatus.FAILED}),
    TransStatus.SUCCEED: frozenset(),
    TransStatus.FAILED: frozenset(),
}


def can_transition(current: TransStatus, new: TransStatus) -> bool:
    return new in TRANSITIONS[current]
