"""One harness per barrier backend of the SDK, so the barrier tests run the same scenarios on each: a branch
delivery (`deliver`: a fresh connection or session, `BranchBarrier.call`, a business update of user 1's
balance), the balance, and the barrier rows of a gid. Every backend works on the `account` table and
`dtm_barrier.barrier` the conftest creates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiomysql  # type: ignore[import-untyped]
import asyncpg  # type: ignore[import-untyped]
import psycopg
from fastdtm_client import BranchBarrier
from fastdtm_client.barrier.mysql import AiomysqlStore
from fastdtm_client.barrier.postgres import AsyncpgStore, PsycopgStore
from fastdtm_client.barrier.sqlalchemy import SqlAlchemyStore
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from .participant import MysqlParams

#: (branch_id, op, barrier_id, reason)
Row = tuple[str, str, str, str]
ROWS_SQL = "SELECT branch_id, op, barrier_id, reason FROM dtm_barrier.barrier WHERE gid = {mark} ORDER BY id"
# How long the business holds its transaction open: concurrent deliveries really overlap.
HOLD = 0.02


class Backend(Protocol):
    name: str

    async def deliver(self, barrier: BranchBarrier, delta: int, fail: bool = False) -> None: ...
    async def balance(self) -> int: ...
    async def rows(self, gid: str) -> list[Row]: ...
    async def query_prepared(self, barrier: BranchBarrier) -> None: ...
    async def aclose(self) -> None: ...


class BusinessRefused(Exception):
    pass


class AsyncpgBackend:
    name = "asyncpg"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def deliver(self, barrier: BranchBarrier, delta: int, fail: bool = False) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:

            async def business(tx: asyncpg.Connection) -> None:
                await tx.execute("UPDATE account SET balance = balance + $1 WHERE user_id = 1", delta)
                await asyncio.sleep(HOLD)
                if fail:
                    raise BusinessRefused

            await barrier.call(AsyncpgStore(conn), business)
        finally:
            await conn.close()

    async def query_prepared(self, barrier: BranchBarrier) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await barrier.query_prepared(AsyncpgStore(conn))
        finally:
            await conn.close()

    async def balance(self) -> int:
        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval("SELECT balance FROM account WHERE user_id = 1"))
        finally:
            await conn.close()

    async def rows(self, gid: str) -> list[Row]:
        conn = await asyncpg.connect(self.dsn)
        try:
            found = await conn.fetch(ROWS_SQL.format(mark="$1"), gid)
        finally:
            await conn.close()
        return [(r[0], r[1], r[2], r[3]) for r in found]

    async def aclose(self) -> None:
        return None


class PsycopgBackend(AsyncpgBackend):
    name = "psycopg"

    async def deliver(self, barrier: BranchBarrier, delta: int, fail: bool = False) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:

            async def business(tx: psycopg.AsyncConnection[Any]) -> None:
                await tx.execute("UPDATE account SET balance = balance + %s WHERE user_id = 1", (delta,))
                await asyncio.sleep(HOLD)
                if fail:
                    raise BusinessRefused

            await barrier.call(PsycopgStore(conn), business)

    async def query_prepared(self, barrier: BranchBarrier) -> None:
        async with await psycopg.AsyncConnection.connect(self.dsn) as conn:
            await barrier.query_prepared(PsycopgStore(conn))


class AiomysqlBackend:
    name = "aiomysql"

    def __init__(self, params: MysqlParams) -> None:
        self.params = params

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiomysql.Connection]:
        p = self.params
        conn = await aiomysql.connect(host=p.host, port=p.port, user="root", password="", db=p.db)
        try:
            yield conn
        finally:
            conn.close()

    async def deliver(self, barrier: BranchBarrier, delta: int, fail: bool = False) -> None:
        async with self._connection() as conn:

            async def business(tx: aiomysql.Connection) -> None:
                async with tx.cursor() as cursor:
                    await cursor.execute("UPDATE account SET balance = balance + %s WHERE user_id = 1", (delta,))
                await asyncio.sleep(HOLD)
                if fail:
                    raise BusinessRefused

            await barrier.call(AiomysqlStore(conn), business)

    async def query_prepared(self, barrier: BranchBarrier) -> None:
        async with self._connection() as conn:
            await barrier.query_prepared(AiomysqlStore(conn))

    async def balance(self) -> int:
        async with self._connection() as conn, conn.cursor() as cursor:
            await cursor.execute("SELECT balance FROM account WHERE user_id = 1")
            return int((await cursor.fetchone())[0])

    async def rows(self, gid: str) -> list[Row]:
        async with self._connection() as conn, conn.cursor() as cursor:
            await cursor.execute(ROWS_SQL.format(mark="%s"), (gid,))
            return [(r[0], r[1], r[2], r[3]) for r in await cursor.fetchall()]

    async def aclose(self) -> None:
        return None


class SqlAlchemyBackend:
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.engine: AsyncEngine = create_async_engine(url, pool_size=20, max_overflow=20)

    async def deliver(self, barrier: BranchBarrier, delta: int, fail: bool = False) -> None:
        async with AsyncSession(self.engine) as session:

            async def business(tx: AsyncSession) -> None:
                await tx.execute(text("UPDATE account SET balance = balance + :d WHERE user_id = 1"), {"d": delta})
                await asyncio.sleep(HOLD)
                if fail:
                    raise BusinessRefused

            await barrier.call(SqlAlchemyStore(session), business)

    async def query_prepared(self, barrier: BranchBarrier) -> None:
        async with AsyncSession(self.engine) as session:
            await barrier.query_prepared(SqlAlchemyStore(session))

    async def balance(self) -> int:
        async with AsyncSession(self.engine) as session:
            return int((await session.execute(text("SELECT balance FROM account WHERE user_id = 1"))).scalar_one())

    async def rows(self, gid: str) -> list[Row]:
        async with AsyncSession(self.engine) as session:
            found = await session.execute(text(ROWS_SQL.format(mark=":gid")), {"gid": gid})
            return [(r[0], r[1], r[2], r[3]) for r in found.all()]

    async def aclose(self) -> None:
        await self.engine.dispose()
