"""The barrier on PostgreSQL, through asyncpg (`AsyncpgStore`) or psycopg 3 (`PsycopgStore`). Both take one
connection, which the business callback receives inside the local transaction; for concurrent branch calls
give each call its own connection (from your pool)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import psycopg

from .core import DEFAULT_TABLE, BarrierRow
from .sql import postgres_insert, postgres_reason


class AsyncpgStore:
    """The barrier table on an `asyncpg.Connection`; the business callback gets that connection."""

    def __init__(self, conn: asyncpg.Connection, *, table: str = DEFAULT_TABLE) -> None:
        self.conn = conn
        self._insert = postgres_insert(table)
        self._reason = postgres_reason(table)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.conn.transaction():
            yield self.conn

    async def insert_ignore(self, tx: asyncpg.Connection, row: BarrierRow) -> int:
        status: str = await tx.execute(self._insert, *row.values())
        # asyncpg reports "INSERT <oid> <rows>".
        return int(status.rsplit(" ", 1)[-1])

    async def reason(self, tx: asyncpg.Connection, row: BarrierRow) -> str | None:
        value: Any = await tx.fetchval(self._reason, row.gid, row.branch_id, row.op, row.barrier_id)
        return None if value is None else str(value)


class PsycopgStore:
    """The barrier table on a `psycopg.AsyncConnection`; the business callback gets that connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], *, table: str = DEFAULT_TABLE) -> None:
        self.conn = conn
        self._insert = postgres_insert(table, "%s")
        self._reason = postgres_reason(table, "%s")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self.conn.transaction():
            yield self.conn

    async def insert_ignore(self, tx: psycopg.AsyncConnection[Any], row: BarrierRow) -> int:
        async with tx.cursor() as cursor:
            await cursor.execute(self._insert, row.values())
            return cursor.rowcount

    async def reason(self, tx: psycopg.AsyncConnection[Any], row: BarrierRow) -> str | None:
        async with tx.cursor() as cursor:
            await cursor.execute(self._reason, (row.gid, row.branch_id, row.op, row.barrier_id))
            found = await cursor.fetchone()
        return None if found is None else str(found[0])
