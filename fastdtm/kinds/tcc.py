"""TCC: the app calls each branch's try itself; the server confirms (or cancels) what was registered.

registerBranch stores two records per branch, ``cancel`` then ``confirm``, with the branch's body.
Once submitted the server confirms from the last registered branch to the first (a nested branch
``0201`` before its parent ``02``); when aborting, or when a prepared TCC outlives its timeout, it
cancels in the same order. A FAILURE from confirm or cancel is retried like any error (reference §6.3).
"""

from __future__ import annotations

from typing import ClassVar

from fastdtm.kinds.base import NoSteps, Round, Step, is_timed_out, phase_two, timeout_reason
from fastdtm.models import Branch, BranchRequest
from fastdtm.states import Op, TransStatus


class Tcc(NoSteps):
    failure_ends: ClassVar[frozenset[str]] = frozenset()

    def register(self, request: BranchRequest, now_ms: int) -> list[Branch]:
        data = request.fields.get("data", "")
        cancel = request.url(Op.CANCEL, required=False)
        confirm = request.url(Op.CONFIRM, required=False)
        return [
            Branch(request.branch_id, Op.CANCEL, cancel, data, now_ms),
            Branch(request.branch_id, Op.CONFIRM, confirm, data, now_ms),
        ]

    def step(self, rnd: Round) -> Step:
        status = rnd.trans.status
        if status is TransStatus.PREPARED:
            if is_timed_out(rnd, default_applies=True):
                return Step(status=TransStatus.ABORTING, reason=timeout_reason(rnd.trans))
            return Step()
        op = Op.CONFIRM if status is TransStatus.SUBMITTED else Op.CANCEL
        return phase_two(rnd, op, range(len(rnd.branches) - 1, -1, -1))
