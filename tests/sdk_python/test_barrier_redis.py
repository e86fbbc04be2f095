"""The Redis barrier (`RedisBarrier.adjust_amount`, one Lua script) under concurrent delivery: a debit repeated
at once applies once, a compensation with nothing to undo is recorded and applies nothing, a try arriving after
its cancel is refused, a debit that would overdraw is FAILURE, and the msg check-back closes an undecided
local step for good."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from fastdtm_client import BranchBarrier, Duplicated, Failure
from fastdtm_client.barrier.redis import RedisBarrier
from redis.asyncio import Redis

from tests.support.redis_servers import RedisTarget

CONCURRENCY = 8
AMOUNT = 30
INITIAL = 1000


@pytest.fixture
async def redis_barrier(redis_standalone: RedisTarget) -> AsyncIterator[RedisBarrier]:
    client = Redis.from_url(redis_standalone.url)
    try:
        yield RedisBarrier(client, expire=600)
    finally:
        await client.aclose()


@pytest.fixture
async def account(redis_barrier: RedisBarrier) -> str:
    key = f"sdk-account-{uuid.uuid4().hex}"
    await redis_barrier.redis.set(key, INITIAL)
    return key


async def balance(rb: RedisBarrier, key: str) -> int:
    return int(await rb.redis.get(key) or 0)


async def deliver_many(rb: RedisBarrier, key: str, gid: str, op: str, amount: int, trans_type: str) -> list[bool]:
    calls = (rb.adjust_amount(BranchBarrier(trans_type, gid, "01", op), key, amount) for _ in range(CONCURRENCY))
    return list(await asyncio.gather(*calls))


async def test_duplicates_apply_once(redis_barrier: RedisBarrier, account: str) -> None:
    gid = uuid.uuid4().hex
    applied = await deliver_many(redis_barrier, account, gid, "action", -AMOUNT, "saga")
    assert applied.count(True) == 1
    assert await balance(redis_barrier, account) == INITIAL - AMOUNT
    await deliver_many(redis_barrier, account, gid, "compensate", AMOUNT, "saga")
    assert await balance(redis_barrier, account) == INITIAL


async def test_null_compensation_and_suspension(redis_barrier: RedisBarrier, account: str) -> None:
    gid = uuid.uuid4().hex
    assert not any(await deliver_many(redis_barrier, account, gid, "cancel", AMOUNT, "tcc"))
    assert await redis_barrier.redis.get(f"{gid}-01-try-01") == b"rollback"
    assert not any(await deliver_many(redis_barrier, account, gid, "try", -AMOUNT, "tcc"))
    assert await balance(redis_barrier, account) == INITIAL


async def test_try_racing_cancel_conserves(redis_barrier: RedisBarrier, account: str) -> None:
    gid = uuid.uuid4().hex
    await asyncio.gather(
        deliver_many(redis_barrier, account, gid, "try", -AMOUNT, "tcc"),
        deliver_many(redis_barrier, account, gid, "cancel", AMOUNT, "tcc"),
    )
    assert await balance(redis_barrier, account) == INITIAL


async def test_repeat_of_an_emptying_debit_still_succeeds(redis_barrier: RedisBarrier, account: str) -> None:
    gid = uuid.uuid4().hex
    assert await redis_barrier.adjust_amount(BranchBarrier("saga", gid, "01", "action"), account, -INITIAL)
    # The repeat finds its barrier before it looks at the (now empty) balance.
    assert not await redis_barrier.adjust_amount(BranchBarrier("saga", gid, "01", "action"), account, -INITIAL)
    with pytest.raises(Failure):
        await redis_barrier.adjust_amount(BranchBarrier("saga", uuid.uuid4().hex, "01", "action"), account, -1)
    with pytest.raises(Failure):
        await redis_barrier.adjust_amount(BranchBarrier("saga", gid, "02", "action"), "sdk-missing-key", 1)


async def test_msg_local_step_and_check_back(redis_barrier: RedisBarrier, account: str) -> None:
    gid = uuid.uuid4().hex
    outcomes = await asyncio.gather(
        *(redis_barrier.adjust_amount(BranchBarrier("msg", gid, "00", "msg"), account, -AMOUNT) for _ in range(4)),
        return_exceptions=True,
    )
    assert outcomes.count(True) == 1 and sum(isinstance(o, Duplicated) for o in outcomes) == 3
    await redis_barrier.query_prepared(BranchBarrier("msg", gid, "00", "msg"))

    closed = uuid.uuid4().hex
    with pytest.raises(Failure):
        await redis_barrier.query_prepared(BranchBarrier("msg", closed, "00", "msg"))
    with pytest.raises(Duplicated):
        await redis_barrier.adjust_amount(BranchBarrier("msg", closed, "00", "msg"), account, -AMOUNT)
    assert await balance(redis_barrier, account) == INITIAL - AMOUNT
