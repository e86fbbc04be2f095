"""Fixtures of the Python SDK's suite (clients/python): the coordinators it runs against (fastdtm on each of
its three stores, and Go DTM v1.19.0 built by scripts/install-go-dtm.sh), a private PostgreSQL, the MariaDB of
the suite, and the participant service the transaction tests call. Coordinators and the participant live for a
module; databases are reset per test. Without Go DTM, PostgreSQL or MariaDB a test skips locally and fails
under CI=true."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from fastdtm_client import DtmClient
from fastdtm_client.barrier import migration_sql

from tests.conftest import missing_toolchain, start_or_give_up
from tests.differential.conftest import ensure_go_dtm
from tests.differential.coordinators import GoDtm
from tests.support.mariadb import MariaDBServer
from tests.support.node import FastdtmNode
from tests.support.postgres import PostgresServer, PostgresUnavailable
from tests.support.redis_servers import HOST, RedisServer, RedisTarget

from .harness import Coordinator, serve
from .participant import ACCOUNT_SQL, MysqlParams, Participant

PG_DB = "sdk"
MYSQL_DB = "sdk_bank"
INITIAL_BALANCE = 1000
USERS = (1, 2)

COORDINATORS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
    pytest.param("go-dtm", id="go-dtm"),
]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private `postgres` for the whole session (barriers, XA, the msg check-back, the example)."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        missing_toolchain(str(exc))
    with server:
        yield server


def reset_postgres(server: PostgresServer, db: str = PG_DB) -> str:
    """`db` recreated with the barrier migration and users 1 and 2 at INITIAL_BALANCE; its DSN."""
    server.create_database(db)
    values = ", ".join(f"({user}, {INITIAL_BALANCE})" for user in USERS)
    server.execute(db, migration_sql("postgres") + f"; {ACCOUNT_SQL}; INSERT INTO account VALUES {values}")
    return server.dsn(db)


def reset_mariadb(server: MariaDBServer, db: str = MYSQL_DB) -> MysqlParams:
    """`db` and `dtm_barrier` recreated (the migration, users 1 and 2 at INITIAL_BALANCE)."""
    conn = server.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION lock_wait_timeout = 10")
            cursor.execute("DROP DATABASE IF EXISTS dtm_barrier")
            for statement in migration_sql("mysql").split(";"):
                if statement.strip():
                    cursor.execute(statement)
            cursor.execute(f"DROP DATABASE IF EXISTS {db}")
            cursor.execute(f"CREATE DATABASE {db}")
            cursor.execute(f"USE {db}")
            cursor.execute(ACCOUNT_SQL)
            cursor.executemany("INSERT INTO account VALUES (%s, %s)", [(u, INITIAL_BALANCE) for u in USERS])
            # A prepared XA branch left by a failed test would hold its locks into the next one.
            cursor.execute("XA RECOVER")
            for _format, _gtrid_len, _bqual_len, data in cursor.fetchall():
                cursor.execute(f"XA ROLLBACK '{data.decode() if isinstance(data, bytes) else data}'")
        conn.commit()
    finally:
        conn.close()
    return MysqlParams(HOST, server.port, db)


@pytest.fixture(scope="module", params=COORDINATORS)
def coordinator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    kind: str = request.param
    if kind == "go-dtm":
        yield from _go_dtm()
        return
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sdk-node') / 'fastdtm.db'}"
    else:
        backend: RedisTarget = request.getfixturevalue("redis_standalone" if kind == "redis" else "redis_cluster")
        backend.flush()
        url = backend.url
    node = FastdtmNode(url, workdir=tmp_path_factory.mktemp("sdk-node-dir"))
    try:
        yield Coordinator(kind, node.base)
    finally:
        node.stop()


@pytest.fixture(scope="module")
def go_dtm() -> Iterator[Coordinator]:
    """Go DTM alone, for a test that needs no fastdtm beside it."""
    yield from _go_dtm()


def _go_dtm() -> Iterator[Coordinator]:
    ensure_go_dtm()
    with start_or_give_up(RedisServer) as redis:
        server = GoDtm(redis.port)
        try:
            yield Coordinator("go-dtm", server.base)
        finally:
            server.stop()


@pytest.fixture(scope="module")
async def participant(postgres: PostgresServer, mariadb: MariaDBServer) -> AsyncIterator[Participant]:
    busi = Participant(pg_dsn=reset_postgres(postgres), mysql=reset_mariadb(mariadb))
    async with serve(busi.app()) as base:
        busi.base = base
        try:
            yield busi
        finally:
            await busi.aclose()


@pytest.fixture
async def dtm(coordinator: Coordinator) -> AsyncIterator[DtmClient]:
    async with DtmClient(coordinator.dtm) as client:
        yield client


@pytest.fixture
def mysql_params(mariadb: MariaDBServer) -> MysqlParams:
    return reset_mariadb(mariadb)


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> str:
    return reset_postgres(postgres)
