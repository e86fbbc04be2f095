"""`Tcc`: try-confirm-cancel. The initiator registers each branch (confirm and cancel URLs) and calls its try
itself; on submit the coordinator confirms every branch, on abort it cancels them, last branch first."""

from __future__ import annotations

from typing import ClassVar

from .http import BranchReply, encode_payload
from .options import branch_query
from .results import OP_TRY
from .twophase import TwoPhaseTransaction


class Tcc(TwoPhaseTransaction):
    """``async with Tcc(client, gid) as tcc: await tcc.call_branch(...)``; nested: `Tcc.from_branch`."""

    trans_type: ClassVar[str] = "tcc"

    async def call_branch(self, payload: object, try_url: str, confirm_url: str, cancel_url: str) -> BranchReply:
        """Register the branch, then POST its try; raises `Failure` / `Ongoing` / `BranchError` as it answered."""
        branch_id = self.branch_ids.next()
        data = encode_payload(payload)
        registration = {"gid": self.gid, "trans_type": "tcc", "branch_id": branch_id, "data": data}
        await self.client.call("registerBranch", {**registration, "confirm": confirm_url, "cancel": cancel_url})
        query = branch_query(self.client.server, self.gid, "tcc", branch_id, OP_TRY)
        return await self.client.call_branch(
            "POST", try_url, query=query, payload=data, headers=self.options.branch_headers
        )
