"""The barrier on MySQL / MariaDB through aiomysql (`AiomysqlStore`). It takes one connection, which the
business callback receives inside the local transaction; give concurrent branch calls their own connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomysql  # type: ignore[import-untyped]
import pymysql

from .core import DEFAULT_TABLE, BarrierRow
from .sql import MYSQL_DUPLICATE_ENTRY, mysql_insert, mysql_reason


class AiomysqlStore:
    """The barrier table on an `aiomysql.Connection`; the business callback gets that connection."""

    def __init__(self, conn: aiomysql.Connection, *, table: str = DEFAULT_TABLE) -> None:
        self.conn = conn
        self._insert = mysql_insert(table)
        self._reason = mysql_reason(table)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiomysql.Connection]:
        await self.conn.begin()
        try:
            yield self.conn
        except BaseException:
            await self.conn.rollback()
            raise
        await self.conn.commit()

    async def insert_ignore(self, tx: aiomysql.Connection, row: BarrierRow) -> int:
        async with tx.cursor() as cursor:
            try:
                inserted: Any = await cursor.execute(self._insert, row.values())
            except pymysql.err.IntegrityError as exc:
                if exc.args and exc.args[0] == MYSQL_DUPLICATE_ENTRY:
                    return 0
                raise
        return int(inserted)

    async def reason(self, tx: aiomysql.Connection, row: BarrierRow) -> str | None:
        async with tx.cursor() as cursor:
            await cursor.execute(self._reason, (row.gid, row.branch_id, row.op, row.barrier_id))
            found: Any = await cursor.fetchone()
        return None if found is None else str(found[0])
