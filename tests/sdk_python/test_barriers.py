"""The sub-transaction barrier on every SQL backend (asyncpg, psycopg 3, aiomysql on MariaDB, SQLAlchemy's
AsyncSession on both), with each branch call delivered several times at once, as a coordinator's retries and
a slow network can: the business effect happens exactly once (duplicates), a compensation with nothing to undo
changes nothing (null compensation), a forward call that arrives after its compensation is refused
(suspension), a failed business leaves no barrier row, and a msg's local step is decided exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastdtm_client import BranchBarrier, Duplicated, Failure

from .barrier_backends import (
    AiomysqlBackend,
    AsyncpgBackend,
    Backend,
    BusinessRefused,
    PsycopgBackend,
    SqlAlchemyBackend,
)
from .conftest import INITIAL_BALANCE

CONCURRENCY = 8
AMOUNT = 30
DEADLOCK_MARKERS = ("deadlock", "Deadlock")


@pytest.fixture(params=["asyncpg", "psycopg", "aiomysql", "sqlalchemy-postgres", "sqlalchemy-mysql"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    kind: str = request.param
    chosen: Backend
    if kind in ("asyncpg", "psycopg", "sqlalchemy-postgres"):
        dsn: str = request.getfixturevalue("pg_dsn")
        if kind == "asyncpg":
            chosen = AsyncpgBackend(dsn)
        elif kind == "psycopg":
            chosen = PsycopgBackend(dsn)
        else:
            chosen = SqlAlchemyBackend(kind, dsn.replace("postgresql://", "postgresql+asyncpg://"))
    else:
        params = request.getfixturevalue("mysql_params")
        if kind == "aiomysql":
            chosen = AiomysqlBackend(params)
        else:
            chosen = SqlAlchemyBackend(kind, f"mysql+aiomysql://root:@{params.host}:{params.port}/{params.db}")
    try:
        yield chosen
    finally:
        await chosen.aclose()


async def deliver(backend: Backend, gid: str, op: str, delta: int, trans_type: str = "saga") -> None:
    """One delivery of a branch call, as DTM makes it: retried while the database reports a deadlock (the
    coordinator would retry a 500 too)."""
    while True:
        try:
            await backend.deliver(BranchBarrier(trans_type, gid, "01", op), delta)
            return
        except Exception as exc:
            if not any(marker in str(exc) for marker in DEADLOCK_MARKERS):
                raise
        await asyncio.sleep(0.01)


async def deliver_many(backend: Backend, gid: str, op: str, delta: int, trans_type: str = "saga") -> None:
    await asyncio.gather(*(deliver(backend, gid, op, delta, trans_type) for _ in range(CONCURRENCY)))


async def test_duplicates_apply_once(backend: Backend) -> None:
    await deliver_many(backend, "g-dup", "action", -AMOUNT)
    assert await backend.balance() == INITIAL_BALANCE - AMOUNT
    await deliver_many(backend, "g-dup", "compensate", AMOUNT)
    assert await backend.balance() == INITIAL_BALANCE
    assert await backend.rows("g-dup") == [("01", "action", "01", "action"), ("01", "compensate", "01", "compensate")]


async def test_null_compensation_then_suspended_try(backend: Backend) -> None:
    await deliver_many(backend, "g-null", "cancel", AMOUNT, "tcc")
    assert await backend.balance() == INITIAL_BALANCE
    assert await backend.rows("g-null") == [("01", "try", "01", "cancel"), ("01", "cancel", "01", "cancel")]
    await deliver_many(backend, "g-null", "try", -AMOUNT, "tcc")
    assert await backend.balance() == INITIAL_BALANCE


async def test_try_racing_cancel_conserves(backend: Backend) -> None:
    tries = [deliver(backend, "g-race", "try", -AMOUNT, "tcc") for _ in range(CONCURRENCY)]
    cancels = [deliver(backend, "g-race", "cancel", AMOUNT, "tcc") for _ in range(CONCURRENCY)]
    await asyncio.gather(*(call for pair in zip(tries, cancels, strict=True) for call in pair))
    assert await backend.balance() == INITIAL_BALANCE
    assert {op for _branch, op, _bid, _reason in await backend.rows("g-race")} == {"try", "cancel"}


async def test_failed_business_leaves_no_row(backend: Backend) -> None:
    with pytest.raises(BusinessRefused):
        await backend.deliver(BranchBarrier("saga", "g-fail", "01", "action"), -AMOUNT, fail=True)
    assert await backend.rows("g-fail") == []
    # The saga now compensates an action that left nothing: a null compensation.
    await deliver_many(backend, "g-fail", "compensate", AMOUNT)
    assert await backend.balance() == INITIAL_BALANCE


async def test_msg_local_step_decided_once(backend: Backend) -> None:
    outcomes = await asyncio.gather(
        *(backend.deliver(BranchBarrier("msg", "g-msg", "00", "msg"), -AMOUNT) for _ in range(CONCURRENCY)),
        return_exceptions=True,
    )
    assert sum(outcome is None for outcome in outcomes) == 1
    assert all(isinstance(o, Duplicated) for o in outcomes if o is not None)
    assert await backend.balance() == INITIAL_BALANCE - AMOUNT
    await backend.query_prepared(BranchBarrier("msg", "g-msg", "00", "msg"))

    with pytest.raises(Failure):
        await backend.query_prepared(BranchBarrier("msg", "g-closed", "00", "msg"))
    with pytest.raises(Duplicated):
        await backend.deliver(BranchBarrier("msg", "g-closed", "00", "msg"), -AMOUNT)
    assert await backend.balance() == INITIAL_BALANCE - AMOUNT
