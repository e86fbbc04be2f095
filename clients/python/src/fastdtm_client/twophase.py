"""What TCC and XA share on the initiator's side: prepare on entering `async with`, branches registered and
called inside, submit on a clean exit, abort (with the exception's text as rollback reason) on an error."""

from __future__ import annotations

from types import TracebackType
from typing import Any, ClassVar, Self

from .branch import BranchInfo
from .http import DtmClient
from .options import BranchIdGenerator, TransOptions, trans_body


class TwoPhaseTransaction:
    trans_type: ClassVar[str]

    def __init__(
        self, client: DtmClient, gid: str, *, options: TransOptions | None = None, parent_branch_id: str = ""
    ) -> None:
        self.client = client
        self.gid = gid
        self.options = options if options is not None else TransOptions()
        self.branch_ids = BranchIdGenerator(parent_branch_id)
        #: A nested transaction (started from an incoming branch call) neither prepares nor submits.
        self.nested = bool(parent_branch_id)

    @classmethod
    def from_branch(cls, client: DtmClient, branch: BranchInfo) -> Self:
        """The transaction of an incoming branch call, to register sub-branches under it (ids 0101, 0102...)."""
        return cls(client, branch.gid, parent_branch_id=branch.branch_id)

    def body(self, **extra: Any) -> dict[str, Any]:
        return trans_body(self.gid, self.trans_type, self.options, **extra)

    async def __aenter__(self) -> Self:
        if not self.nested:
            await self.client.call("prepare", self.body())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.nested:
            return
        if exc is None:
            await self.client.call("submit", self.body())
        elif isinstance(exc, Exception):
            # Cancellation and interpreter exits are left to the coordinator's timeout instead.
            await self.client.call("abort", self.body(rollback_reason=str(exc) or type(exc).__name__))
