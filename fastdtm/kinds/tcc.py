"""TCC: the app calls each branch's try itself; the server confirms (or cancels) what was registered.

registerBranch stores two records per branch, ``cancel`` then ``confirm``, with the branch's body.
Once submitted the server confirms from the last registered branch to the first (a nested branch
``0201`` before its parent ``02``); when aborting, or when a prepared TCC outlives its timeout, it
cancels in the same order. A FAILURE from confirm or cancel is retried like any error (reference §6.3).
"""

from __future__ import annotations

from typing import ClassVar

from fastdtm.kinds.base import NoSteps, Round, Step, two_phase_step
from fastdtm.models import Branch, BranchRequest
from fastdtm.states import Op


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
        return two_phase_step(rnd, Op.CONFIRM, Op.CANCEL, range(len(rnd.branches) - 1, -1, -1))
