"""XA: resource managers register their prepared local XA transactions; the server commits or rolls back.

registerBranch (sent by the RM from inside its XA transaction) stores ``rollback`` then ``commit``
for the branch, both with the RM's phase-two URL. Once submitted the server commits every branch in
registration order; when aborting or timed out it rolls them back. Phase-two calls are POSTs with an
empty body (reference §6.4).
"""

from __future__ import annotations

from typing import ClassVar

from fastdtm.kinds.base import NoSteps, Round, Step, is_timed_out, phase_two, timeout_reason
from fastdtm.models import Branch, BranchRequest
from fastdtm.states import Op, TransStatus


class Xa(NoSteps):
    failure_ends: ClassVar[frozenset[str]] = frozenset()

    def register(self, request: BranchRequest, now_ms: int) -> list[Branch]:
        url = request.url("url", required=True)
        data = request.fields.get("data", "")
        return [
            Branch(request.branch_id, Op.ROLLBACK, url, data, now_ms),
            Branch(request.branch_id, Op.COMMIT, url, data, now_ms),
        ]

    def step(self, rnd: Round) -> Step:
        status = rnd.trans.status
        if status is TransStatus.PREPARED:
            if is_timed_out(rnd, default_applies=True):
                return Step(status=TransStatus.ABORTING, reason=timeout_reason(rnd.trans))
            return Step()
        op = Op.COMMIT if status is TransStatus.SUBMITTED else Op.ROLLBACK
        return phase_two(rnd, op, range(len(rnd.branches)), post=True)
