"""DTM's result words and ops, and the one rule that turns a branch's HTTP reply into an outcome."""

from __future__ import annotations

from typing import Final

from .errors import BranchError, Failure, Ongoing

SUCCESS: Final = "SUCCESS"
FAILURE: Final = "FAILURE"
ONGOING: Final = "ONGOING"

OP_ACTION: Final = "action"
OP_COMPENSATE: Final = "compensate"
OP_TRY: Final = "try"
OP_CONFIRM: Final = "confirm"
OP_CANCEL: Final = "cancel"
OP_COMMIT: Final = "commit"
OP_ROLLBACK: Final = "rollback"
OP_MSG: Final = "msg"

#: The branch id and barrier id of a msg's local transaction (its barrier and its check-back).
MSG_BRANCH_ID: Final = "00"
MSG_BARRIER_ID: Final = "01"


def raise_for_branch_reply(url: str, status: int, text: str) -> None:
    """DTM's reading of a branch reply: ONGOING first, then FAILURE, then anything but 200 is an error.

    The body substrings are the pre-v1.10 convention (200 with {"dtm_result": "FAILURE"}), still honoured."""
    if status == 425 or ONGOING in text:
        raise Ongoing(text)
    if status == 409 or FAILURE in text:
        raise Failure(text)
    if status != 200:
        raise BranchError(url, status, text)
