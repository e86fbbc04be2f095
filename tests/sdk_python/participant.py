"""The branch service the SDK's transaction tests drive: a Starlette app built with the SDK's own glue
(`branch_endpoint`), recording every call it gets and answering as the payload scripts it. Payloads are
``{"amount": n, "fail": [names], "ongoing_once": [names]}``: a listed branch raises `Failure` (409), or
`Ongoing` (425) on its first call only. It also serves a nested TCC try, the msg check-back (PostgreSQL
barrier) and XA resource managers on PostgreSQL (asyncpg, psycopg) and MariaDB."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiomysql  # type: ignore[import-untyped]
import asyncpg  # type: ignore[import-untyped]
import psycopg
from fastdtm_client import BranchBarrier, BranchInfo, DtmClient, Failure, Ongoing, Tcc, xa_local_transaction
from fastdtm_client.barrier.postgres import AsyncpgStore
from fastdtm_client.starlette import branch_endpoint
from fastdtm_client.xa_mysql import AiomysqlXa
from fastdtm_client.xa_postgres import AsyncpgXa, PsycopgXa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

#: (gid, route name, op, branch_id)
Call = tuple[str, str, str, str]
ACCOUNT_SQL = "CREATE TABLE account (user_id INT PRIMARY KEY, balance INT NOT NULL)"


@dataclass
class MysqlParams:
    host: str
    port: int
    db: str


@dataclass
class Participant:
    pg_dsn: str
    mysql: MysqlParams
    calls: list[Call] = field(default_factory=list)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    base: str = ""
    _seen: set[tuple[str, str, str]] = field(default_factory=set)
    _clients: dict[str, DtmClient] = field(default_factory=dict)

    def calls_of(self, gid: str) -> list[tuple[str, str, str]]:
        return [(name, op, branch_id) for g, name, op, branch_id in self.calls if g == gid]

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def client(self, dtm: str) -> DtmClient:
        """One pooled client per coordinator URL a call names (nested TCC and XA call back the coordinator)."""
        if dtm not in self._clients:
            self._clients[dtm] = DtmClient(dtm)
        return self._clients[dtm]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    def app(self) -> Starlette:
        routes = [
            Route("/busi/{name}", branch_endpoint(self._busi), methods=["GET", "POST"]),
            Route("/nested/try", branch_endpoint(self._nested_try), methods=["POST"]),
            Route("/msg/query_prepared", branch_endpoint(self._query_prepared), methods=["GET"]),
            Route("/xa/{db}", branch_endpoint(self._xa), methods=["POST"]),
            Route("/bank/{op}", branch_endpoint(self._bank), methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def _record(self, branch: BranchInfo, name: str, request: Request) -> None:
        self.calls.append((branch.gid, name, branch.op, branch.branch_id))
        self.headers[f"{branch.gid}/{name}"] = dict(request.headers)

    async def _script(self, branch: BranchInfo, name: str, request: Request) -> dict[str, Any]:
        body = await request.body()
        payload: dict[str, Any] = json.loads(body) if body else {}
        key = (branch.gid, name, branch.op)
        if name in payload.get("ongoing_once", []) and key not in self._seen:
            self._seen.add(key)
            raise Ongoing(f"{name} not yet")
        if name in payload.get("fail", []):
            raise Failure(f"{name} refused")
        return payload

    async def _busi(self, branch: BranchInfo, request: Request) -> None:
        name = request.path_params["name"]
        self._record(branch, name, request)
        await self._script(branch, name, request)

    async def _nested_try(self, branch: BranchInfo, request: Request) -> None:
        self._record(branch, "NestedTry", request)
        payload = await self._script(branch, "NestedTry", request)
        tcc = Tcc.from_branch(self.client(branch.dtm), branch)
        busi = self.url("/busi/")
        await tcc.call_branch(payload, busi + "InnerTry", busi + "InnerConfirm", busi + "InnerCancel")

    async def _query_prepared(self, branch: BranchInfo, request: Request) -> None:
        self._record(branch, "QueryPrepared", request)
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            await BranchBarrier.from_branch(branch).query_prepared(AsyncpgStore(conn))
        finally:
            await conn.close()

    async def _bank(self, branch: BranchInfo, request: Request) -> None:
        """A TCC on user 1's balance behind the PostgreSQL barrier: try debits, cancel refunds, confirm keeps."""
        self._record(branch, "bank", request)
        amount = int((await request.json())["amount"])
        delta = {"try": -amount, "cancel": amount}.get(branch.op, 0)
        conn = await asyncpg.connect(self.pg_dsn)
        try:

            async def business(tx: asyncpg.Connection) -> None:
                await tx.execute("UPDATE account SET balance = balance + $1 WHERE user_id = 1", delta)

            await BranchBarrier.from_branch(branch).call(AsyncpgStore(conn), business)
        finally:
            await conn.close()

    async def _xa(self, branch: BranchInfo, request: Request) -> None:
        db = request.path_params["db"]
        self._record(branch, f"xa-{db}", request)
        body = await request.body()
        payload: dict[str, Any] = json.loads(body) if body else {}
        client = self.client(branch.dtm) if branch.dtm else None
        if db == "postgres":
            await self._xa_postgres(branch, payload, client)
        elif db == "psycopg":
            await self._xa_psycopg(branch, payload, client)
        else:
            await self._xa_mysql(branch, payload, client)

    async def _xa_postgres(self, branch: BranchInfo, payload: dict[str, Any], client: DtmClient | None) -> None:
        conn = await asyncpg.connect(self.pg_dsn)
        try:

            async def business(tx: asyncpg.Connection) -> None:
                await tx.execute("UPDATE account SET balance = balance + $1 WHERE user_id = $2", *_move(payload))
                if payload.get("fail"):
                    raise Failure("xa business refused")

            await xa_local_transaction(branch, AsyncpgXa(conn), business, client=client)
        finally:
            await conn.close()

    async def _xa_psycopg(self, branch: BranchInfo, payload: dict[str, Any], client: DtmClient | None) -> None:
        # Not `async with` the connection: its exit would try to commit the prepared branch.
        conn = await psycopg.AsyncConnection.connect(self.pg_dsn)
        try:

            async def business(tx: psycopg.AsyncConnection[Any]) -> None:
                await tx.execute("UPDATE account SET balance = balance + %s WHERE user_id = %s", _move(payload))
                if payload.get("fail"):
                    raise Failure("xa business refused")

            await xa_local_transaction(branch, PsycopgXa(conn), business, client=client)
        finally:
            await conn.close()

    async def _xa_mysql(self, branch: BranchInfo, payload: dict[str, Any], client: DtmClient | None) -> None:
        async with _mysql_connection(self.mysql) as conn:

            async def business(tx: aiomysql.Connection) -> None:
                async with tx.cursor() as cursor:
                    await cursor.execute("UPDATE account SET balance = balance + %s WHERE user_id = %s", _move(payload))
                if payload.get("fail"):
                    raise Failure("xa business refused")

            await xa_local_transaction(branch, AiomysqlXa(conn), business, client=client)


def _move(payload: dict[str, Any]) -> tuple[int, int]:
    return int(payload["amount"]), int(payload["user"])


@asynccontextmanager
async def _mysql_connection(params: MysqlParams) -> AsyncIterator[aiomysql.Connection]:
    conn = await aiomysql.connect(host=params.host, port=params.port, user="root", password="", db=params.db)
    try:
        yield conn
    finally:
        conn.close()
