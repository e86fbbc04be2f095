"""XA: resource managers register their prepared local XA transactions; the server commits or rolls back.

registerBranch (sent by the RM from inside its XA transaction) stores ``rollback`` then ``commit``
for the branch, both with the RM's phase-two URL. Once submitted the server commits every branch in
registration order; when aborting or timed out it rolls them back. Phase-two calls are POSTs with an
empty body (reference §6.4).
"""

from __future__ import annotations

from typing import ClassVar

from fastdtm.kinds.base import NoSteps, Round, Step, two_phase_step
from fastdtm.models import Branch, BranchRequest
from fastdtm.states import Op


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
        return two_phase_step(rnd, Op.COMMIT, Op.ROLLBACK, range(len(rnd.branches)), post=True)
