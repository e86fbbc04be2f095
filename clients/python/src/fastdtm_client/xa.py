"""XA. The initiator (`Xa`) prepares, calls each resource manager's action and submits or aborts. A resource
manager handles every call to its URL with `xa_local_transaction`: the action runs the business inside a
local XA transaction (MySQL/MariaDB `XA START`, PostgreSQL `BEGIN` ... `PREPARE TRANSACTION`), registers the
branch and prepares it; the coordinator's later `commit` / `rollback` call finishes that prepared transaction."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import ClassVar, Protocol, TypeVar

from .barrier.core import BarrierRow
from .branch import BranchInfo
from .errors import DtmClientError, Failure
from .http import BranchReply, DtmClient, encode_payload
from .options import branch_query
from .results import OP_ACTION, OP_COMMIT, OP_ROLLBACK
from .twophase import TwoPhaseTransaction

XA_BARRIER_ID = "01"
# An xid cannot be a bind parameter (XA START / PREPARE TRANSACTION take a literal), so it is checked: DTM's
# gids and branch ids are letters, digits and a few separators.
_XID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")

Conn = TypeVar("Conn")


class Xa(TwoPhaseTransaction):
    """``async with Xa(client, gid) as xa: await xa.call_branch(payload, url)``."""

    trans_type: ClassVar[str] = "xa"

    async def call_branch(self, payload: object, url: str) -> BranchReply:
        """POST the action to a resource manager; it registers its branch itself (with `url` for phase two)."""
        branch_id = self.branch_ids.next()
        query = {**branch_query(self.client.server, self.gid, "xa", branch_id, OP_ACTION), "phase2_url": url}
        return await self.client.call_branch(
            "POST", url, query=query, payload=encode_payload(payload), headers=self.options.branch_headers
        )


class XaResource(Protocol[Conn]):
    """One database connection able to run an XA branch; `Conn` is what the business callback receives."""

    connection: Conn

    async def start(self, xid: str) -> None: ...
    async def insert_barrier(self, row: BarrierRow) -> int:
        """Insert-ignore into the barrier table inside the open XA transaction."""
        ...

    async def prepare(self, xid: str) -> None:
        """End the XA transaction and prepare it."""
        ...

    async def rollback_open(self, xid: str) -> None:
        """Roll back the XA transaction that `start` opened and that was not prepared."""
        ...

    async def finish(self, xid: str, commit: bool) -> bool:
        """Commit or roll back a prepared transaction; False when no such xid is prepared (already done)."""
        ...

    async def insert_barrier_now(self, row: BarrierRow) -> int:
        """Insert-ignore into the barrier table in a transaction of its own."""
        ...


def checked_xid(branch: BranchInfo) -> str:
    xid = f"{branch.gid}-{branch.branch_id}"
    if not _XID.match(xid):
        raise DtmClientError(f"xid {xid!r} has characters an XA statement cannot take")
    return xid


async def xa_local_transaction(
    branch: BranchInfo,
    resource: XaResource[Conn],
    business: Callable[[Conn], Awaitable[None]],
    *,
    client: DtmClient | None = None,
) -> None:
    """Handle one call to a resource manager's XA URL: an action (business + prepare), commit or rollback.

    `client` registers the branch; by default a client for the `dtm` URL the action's query names."""
    xid = checked_xid(branch)
    if branch.op in (OP_COMMIT, OP_ROLLBACK):
        await _phase_two(branch, resource, xid)
        return
    if client is None:
        async with DtmClient(branch.dtm) as own:
            await _action(own, branch, resource, business, xid)
    else:
        await _action(client, branch, resource, business, xid)


async def _action(
    client: DtmClient,
    branch: BranchInfo,
    resource: XaResource[Conn],
    business: Callable[[Conn], Awaitable[None]],
    xid: str,
) -> None:
    await resource.start(xid)
    try:
        row = BarrierRow("xa", branch.gid, branch.branch_id, OP_ACTION, XA_BARRIER_ID, OP_ACTION)
        if not await resource.insert_barrier(row):
            # The rollback's row is there: the coordinator already rolled this branch back; never prepare it.
            raise Failure(f"xa branch {xid} was rolled back before its action ran")
        await business(resource.connection)
        registration = {"gid": branch.gid, "trans_type": "xa", "branch_id": branch.branch_id}
        await client.call("registerBranch", {**registration, "url": branch.phase2_url})
    except BaseException:
        await resource.rollback_open(xid)
        raise
    await resource.prepare(xid)


async def _phase_two(branch: BranchInfo, resource: XaResource[Conn], xid: str) -> None:
    await resource.finish(xid, commit=branch.op == OP_COMMIT)
    if branch.op == OP_ROLLBACK:
        # After a rollback, this row makes an action that arrives late refuse to run (see above).
        row = BarrierRow("xa", branch.gid, branch.branch_id, OP_ACTION, XA_BARRIER_ID, OP_ROLLBACK)
        await resource.insert_barrier_now(row)
