"""An XA resource on MySQL / MariaDB through aiomysql (`XA START` ... `XA PREPARE`, `XA COMMIT`/`XA ROLLBACK`)."""

from __future__ import annotations

from typing import Any

import aiomysql  # type: ignore[import-untyped]
import pymysql

from .barrier.core import DEFAULT_TABLE, BarrierRow
from .barrier.sql import mysql_insert

# MySQL's "unknown XID" (XAER_NOTA): the branch was already committed or rolled back.
XAER_NOTA = 1397


class AiomysqlXa:
    """`xa_local_transaction`'s resource on one aiomysql connection with no transaction open."""

    def __init__(self, conn: aiomysql.Connection, *, table: str = DEFAULT_TABLE) -> None:
        self.connection = conn
        self._insert = mysql_insert(table)

    async def _execute(self, sql: str, args: tuple[str, ...] | None = None) -> int:
        async with self.connection.cursor() as cursor:
            affected: Any = await cursor.execute(sql, args)
        return int(affected)

    async def start(self, xid: str) -> None:
        await self._local_autocommit()
        await self._execute(f"XA START '{xid}'")

    async def insert_barrier(self, row: BarrierRow) -> int:
        return await self._execute(self._insert, row.values())

    async def prepare(self, xid: str) -> None:
        await self._execute(f"XA END '{xid}'")
        await self._execute(f"XA PREPARE '{xid}'")

    async def rollback_open(self, xid: str) -> None:
        await self._execute(f"XA END '{xid}'")
        await self._execute(f"XA ROLLBACK '{xid}'")

    async def finish(self, xid: str, commit: bool) -> bool:
        await self._local_autocommit()
        try:
            await self._execute(f"XA {'COMMIT' if commit else 'ROLLBACK'} '{xid}'")
        except pymysql.err.MySQLError as exc:
            if exc.args and exc.args[0] == XAER_NOTA:
                return False
            raise
        return True

    async def insert_barrier_now(self, row: BarrierRow) -> int:
        await self._local_autocommit()
        return await self._execute(self._insert, row.values())

    async def _local_autocommit(self) -> None:
        # With autocommit off (aiomysql's default) the server opens a local transaction at the first statement,
        # and XA statements then fail with XAER_OUTSIDE.
        await self.connection.autocommit(True)
