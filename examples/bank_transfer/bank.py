"""One bank: a FastAPI service over its own PostgreSQL database (table `account`, and the SDK's barrier table).
Every branch route runs its SQL inside the barrier (`BranchBarrier.call`), so repeated, late or out-of-order
calls from the coordinator change the balances exactly once; a refused transfer raises `Failure` (409)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg  # type: ignore[import-untyped]
from fastapi import Depends, FastAPI
from fastdtm_client import BranchBarrier, BranchInfo, Failure
from fastdtm_client.barrier import migration_sql
from fastdtm_client.barrier.postgres import AsyncpgStore
from fastdtm_client.starlette import SUCCESS_REPLY, branch_info, exception_handlers
from pydantic import BaseModel

ACCOUNTS_DDL = """
CREATE TABLE IF NOT EXISTS account (
  name TEXT PRIMARY KEY,
  balance BIGINT NOT NULL CHECK (balance >= 0),
  -- Money a TCC try has reserved and its confirm or cancel has not settled yet (negative: on its way out).
  reserved BIGINT NOT NULL DEFAULT 0
)
"""


class Transfer(BaseModel):
    """A branch's payload: move `amount` (positive: in, negative: out) on account `name`."""

    name: str
    amount: int


Business = Callable[[asyncpg.Connection], Awaitable[None]]
Branch = Annotated[BranchInfo, Depends(branch_info)]


async def setup_database(dsn: str, accounts: dict[str, int]) -> None:
    """The barrier migration, the account table and the opening balances."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(migration_sql("postgres"))
        await conn.execute(ACCOUNTS_DDL)
        for name, balance in accounts.items():
            await conn.execute("INSERT INTO account (name, balance) VALUES ($1, $2)", name, balance)
    finally:
        await conn.close()


async def adjust(conn: asyncpg.Connection, name: str, amount: int) -> None:
    done = await conn.execute(
        "UPDATE account SET balance = balance + $1 WHERE name = $2 AND balance + reserved + $1 >= 0", amount, name
    )
    if done.endswith(" 0"):
        raise Failure(f"{name}: unknown account or insufficient balance for {amount}")


async def reserve(conn: asyncpg.Connection, name: str, amount: int) -> None:
    done = await conn.execute(
        "UPDATE account SET reserved = reserved + $1 WHERE name = $2 AND balance + reserved + $1 >= 0", amount, name
    )
    if done.endswith(" 0"):
        raise Failure(f"{name}: unknown account or insufficient balance for {amount}")


class Bank:
    """The branch routes of one bank; each runs its SQL inside the barrier on a pooled connection."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=10)
        try:
            yield
        finally:
            await self.pool.close()

    async def in_barrier(self, branch: BranchInfo, business: Business) -> dict[str, str]:
        assert self.pool is not None, "the app's lifespan opens the pool"
        async with self.pool.acquire() as conn:
            await BranchBarrier.from_branch(branch).call(AsyncpgStore(conn), business)
        return dict(SUCCESS_REPLY)

    async def adjust(self, branch: Branch, transfer: Transfer) -> dict[str, str]:
        """Saga action and msg step: move the amount now."""
        return await self.in_barrier(branch, lambda conn: adjust(conn, transfer.name, transfer.amount))

    async def revert(self, branch: Branch, transfer: Transfer) -> dict[str, str]:
        """Saga compensation: move it back."""
        return await self.in_barrier(branch, lambda conn: adjust(conn, transfer.name, -transfer.amount))

    async def tcc_try(self, branch: Branch, transfer: Transfer) -> dict[str, str]:
        return await self.in_barrier(branch, lambda conn: reserve(conn, transfer.name, transfer.amount))

    async def tcc_confirm(self, branch: Branch, transfer: Transfer) -> dict[str, str]:
        sql = "UPDATE account SET balance = balance + $1, reserved = reserved - $1 WHERE name = $2"
        return await self.in_barrier(branch, lambda conn: _execute(conn, sql, transfer))

    async def tcc_cancel(self, branch: Branch, transfer: Transfer) -> dict[str, str]:
        sql = "UPDATE account SET reserved = reserved - $1 WHERE name = $2"
        return await self.in_barrier(branch, lambda conn: _execute(conn, sql, transfer))

    async def query_prepared(self, branch: Branch) -> dict[str, str]:
        """The msg check-back: did alice's debit (the msg's local step) commit?"""
        assert self.pool is not None, "the app's lifespan opens the pool"
        async with self.pool.acquire() as conn:
            await BranchBarrier.from_branch(branch).query_prepared(AsyncpgStore(conn))
        return dict(SUCCESS_REPLY)


async def _execute(conn: asyncpg.Connection, sql: str, transfer: Transfer) -> None:
    await conn.execute(sql, transfer.amount, transfer.name)


def create_app(dsn: str) -> FastAPI:
    bank = Bank(dsn)
    app = FastAPI(lifespan=bank.lifespan, exception_handlers=exception_handlers())
    for path, endpoint in (
        ("/saga/adjust", bank.adjust),
        ("/saga/adjust-revert", bank.revert),
        ("/tcc/try", bank.tcc_try),
        ("/tcc/confirm", bank.tcc_confirm),
        ("/tcc/cancel", bank.tcc_cancel),
        ("/msg/adjust", bank.adjust),
    ):
        app.add_api_route(path, endpoint, methods=["POST"])
    app.add_api_route("/msg/query-prepared", bank.query_prepared, methods=["GET"])
    return app


async def balances(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT name, balance FROM account ORDER BY name")
    finally:
        await conn.close()
    return {str(row["name"]): int(row["balance"]) for row in rows}
