"""DTM's sub-transaction barrier, independent of the database: `BranchBarrier` decides, from which rows its
insert-ignores created, whether the business code runs (reference: DTM's barrier, "idempotence, null
compensation, suspension"). Backends (`postgres`, `mysql`, `sqlalchemy`) only run the two statements inside
the local transaction that also runs the business code; `redis` has its own atomic script."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Final, Protocol, TypeVar

from ..branch import BranchInfo
from ..errors import DtmClientError, Duplicated, Failure
from ..results import (
    MSG_BARRIER_ID,
    MSG_BRANCH_ID,
    OP_ACTION,
    OP_CANCEL,
    OP_COMPENSATE,
    OP_MSG,
    OP_ROLLBACK,
    OP_TRY,
)

#: The op whose row a compensation also writes: it is how a late forward call finds it was compensated.
ORIGIN_OPS: Final[Mapping[str, str]] = {OP_CANCEL: OP_TRY, OP_COMPENSATE: OP_ACTION, OP_ROLLBACK: OP_ACTION}
DEFAULT_TABLE: Final = "dtm_barrier.barrier"
# A table name cannot be a bind parameter, so it is checked instead: schema.table of plain identifiers.
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

Tx = TypeVar("Tx")


def checked_table(name: str) -> str:
    if not _TABLE_NAME.match(name):
        raise ValueError(f"barrier table name {name!r} is not of the form schema.table")
    return name


@dataclass(frozen=True, slots=True)
class BarrierRow:
    trans_type: str
    gid: str
    branch_id: str
    op: str
    barrier_id: str
    reason: str

    def values(self) -> tuple[str, str, str, str, str, str]:
        return (self.trans_type, self.gid, self.branch_id, self.op, self.barrier_id, self.reason)


class BarrierStore(Protocol[Tx]):
    """A database the barrier table lives in; `Tx` is what the business callback receives (a connection, a
    session) while the local transaction is open."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """Begin a local transaction: committed when the block exits cleanly, rolled back on an exception."""
        ...

    async def insert_ignore(self, tx: Tx, row: BarrierRow) -> int:
        """Insert `row` unless (gid, branch_id, op, barrier_id) exists; the number of rows inserted."""
        ...

    async def reason(self, tx: Tx, row: BarrierRow) -> str | None:
        """The `reason` of the row with `row`'s key, if any."""
        ...


class BranchBarrier:
    """The barrier of one branch call. Each `call` in the same handler gets the next barrier id (01, 02, ...)."""

    def __init__(self, trans_type: str, gid: str, branch_id: str, op: str) -> None:
        if not (trans_type and gid and branch_id and op):
            raise DtmClientError("a barrier needs trans_type, gid, branch_id and op")
        self.trans_type = trans_type
        self.gid = gid
        self.branch_id = branch_id
        self.op = op
        self._barrier_count = 0

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> BranchBarrier:
        """From the query string DTM puts on every branch call."""
        return cls.from_branch(BranchInfo.from_query(query))

    @classmethod
    def from_branch(cls, branch: BranchInfo) -> BranchBarrier:
        return cls(branch.trans_type, branch.gid, branch.branch_id, branch.op)

    def next_barrier_id(self) -> str:
        self._barrier_count += 1
        return f"{self._barrier_count:02d}"

    def row(self, op: str, barrier_id: str, reason: str) -> BarrierRow:
        return BarrierRow(self.trans_type, self.gid, self.branch_id, op, barrier_id, reason)

    async def call(self, store: BarrierStore[Tx], business: Callable[[Tx], Awaitable[None]]) -> None:
        """Run `business` at most once for this branch and op, in one local transaction with the barrier rows.

        Skipped (the transaction commits, the call returns normally): a repeated call; a compensation whose
        forward op never ran (null compensation); a forward op arriving after its compensation (suspension).
        A msg's local step that finds its row raises `Duplicated`. An exception from `business` rolls back."""
        barrier_id = self.next_barrier_id()
        origin = ORIGIN_OPS.get(self.op)
        async with store.transaction() as tx:
            origin_inserted = 0
            if origin is not None:
                origin_inserted = await store.insert_ignore(tx, self.row(origin, barrier_id, self.op))
            current_inserted = await store.insert_ignore(tx, self.row(self.op, barrier_id, self.op))
            if self.op == OP_MSG and current_inserted == 0:
                raise Duplicated(f"msg {self.gid}: its local transaction was already decided")
            if origin_inserted or not current_inserted:
                return
            await business(tx)

    async def query_prepared(self, store: BarrierStore[Tx]) -> None:
        """The msg check-back: raises `Failure` when the local transaction did not commit, and makes sure it
        never will (its barrier row is taken with reason "rollback")."""
        row = BarrierRow(self.trans_type, self.gid, MSG_BRANCH_ID, OP_MSG, MSG_BARRIER_ID, OP_ROLLBACK)
        async with store.transaction() as tx:
            await store.insert_ignore(tx, row)
            reason = await store.reason(tx, row)
        if reason == OP_ROLLBACK:
            raise Failure(f"msg {self.gid}: its local transaction was rolled back")


def migration_sql(dialect: str) -> str:
    """The barrier table's DDL shipped with the SDK: `dialect` is "postgres" or "mysql" (MariaDB too)."""
    if dialect not in ("postgres", "mysql"):
        raise ValueError(f"no barrier migration for {dialect!r}: postgres or mysql")
    return resources.files(__package__).joinpath("migrations", f"{dialect}.sql").read_text(encoding="utf-8")
