"""XA resources on PostgreSQL, through asyncpg (`AsyncpgXa`) or psycopg 3 (`PsycopgXa`): a branch is a prepared
transaction (`PREPARE TRANSACTION`), which needs the server's `max_prepared_transactions` above 0."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg

from .barrier.core import DEFAULT_TABLE, BarrierRow
from .barrier.sql import postgres_insert


class AsyncpgXa:
    """`xa_local_transaction`'s resource on one asyncpg connection (not inside a transaction)."""

    def __init__(self, conn: asyncpg.Connection, *, table: str = DEFAULT_TABLE) -> None:
        self.connection = conn
        self._insert = postgres_insert(table)

    async def start(self, xid: str) -> None:
        await self.connection.execute("BEGIN")

    async def insert_barrier(self, row: BarrierRow) -> int:
        status: str = await self.connection.execute(self._insert, *row.values())
        return int(status.rsplit(" ", 1)[-1])

    async def prepare(self, xid: str) -> None:
        await self.connection.execute(f"PREPARE TRANSACTION '{xid}'")

    async def rollback_open(self, xid: str) -> None:
        await self.connection.execute("ROLLBACK")

    async def finish(self, xid: str, commit: bool) -> bool:
        verb = "COMMIT" if commit else "ROLLBACK"
        try:
            await self.connection.execute(f"{verb} PREPARED '{xid}'")
        except asyncpg.UndefinedObjectError:
            return False
        return True

    async def insert_barrier_now(self, row: BarrierRow) -> int:
        return await self.insert_barrier(row)


class PsycopgXa:
    """`xa_local_transaction`'s resource on one psycopg 3 `AsyncConnection` with no transaction open: psycopg's
    own two-phase API (`tpc_begin` ... `tpc_prepare`), which issues `PREPARE TRANSACTION` with the xid. Close
    the connection with `close()`, not by leaving its `async with` block, which would try to commit."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], *, table: str = DEFAULT_TABLE) -> None:
        self.connection = conn
        self._insert = postgres_insert(table, "%s")

    async def start(self, xid: str) -> None:
        await self.connection.tpc_begin(xid)

    async def insert_barrier(self, row: BarrierRow) -> int:
        async with self.connection.cursor() as cursor:
            await cursor.execute(self._insert, row.values())
            return cursor.rowcount

    async def prepare(self, xid: str) -> None:
        await self.connection.tpc_prepare()

    async def rollback_open(self, xid: str) -> None:
        await self.connection.tpc_rollback()

    async def finish(self, xid: str, commit: bool) -> bool:
        try:
            if commit:
                await self.connection.tpc_commit(xid)
            else:
                await self.connection.tpc_rollback(xid)
        except psycopg.errors.UndefinedObject:
            return False
        return True

    async def insert_barrier_now(self, row: BarrierRow) -> int:
        async with self.connection.transaction():
            return await self.insert_barrier(row)
