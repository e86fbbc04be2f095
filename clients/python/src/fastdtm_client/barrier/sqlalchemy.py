"""The barrier through SQLAlchemy's `AsyncSession` (`SqlAlchemyStore`), on PostgreSQL or MySQL/MariaDB: the
dialect of the session's engine picks the statements. The business callback gets the session, inside
`session.begin()`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import CursorResult, Result, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .core import DEFAULT_TABLE, BarrierRow, checked_table
from .sql import MYSQL_DUPLICATE_ENTRY, NAMES, mysql_insert, postgres_insert


class SqlAlchemyStore:
    """The barrier table through an `AsyncSession` that has no transaction open yet."""

    def __init__(self, session: AsyncSession, *, table: str = DEFAULT_TABLE) -> None:
        self.session = session
        self._table = checked_table(table)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self.session.begin():
            yield self.session

    async def insert_ignore(self, tx: AsyncSession, row: BarrierRow) -> int:
        params = dict(zip(NAMES, row.values(), strict=True))
        if self._dialect(tx) == "postgresql":
            sql = postgres_insert(self._table, ":")
            return _rowcount(await tx.execute(text(sql), params))
        try:
            # No savepoint needed: InnoDB undoes only the failed statement, and a deadlock must surface as one.
            return _rowcount(await tx.execute(text(mysql_insert(self._table, ":")), params))
        except IntegrityError as exc:
            if getattr(exc.orig, "args", (None,))[0] == MYSQL_DUPLICATE_ENTRY:
                return 0
            raise

    async def reason(self, tx: AsyncSession, row: BarrierRow) -> str | None:
        where = "gid = :gid AND branch_id = :branch_id AND op = :op AND barrier_id = :barrier_id"
        sql = f"SELECT reason FROM {self._table} WHERE {where}"
        params = {"gid": row.gid, "branch_id": row.branch_id, "op": row.op, "barrier_id": row.barrier_id}
        value = (await tx.execute(text(sql), params)).scalar_one_or_none()
        return None if value is None else str(value)

    @staticmethod
    def _dialect(session: AsyncSession) -> str:
        return session.get_bind().dialect.name


def _rowcount(result: Result[Any]) -> int:
    # Statements without RETURNING give a CursorResult, which has the DB-API rowcount.
    return result.rowcount if isinstance(result, CursorResult) else 0
