"""Every transaction type of the SDK end to end, against fastdtm on its three stores and against Go DTM: saga
(sequential, rollback, wait_result, concurrent with orders, branch headers, retry_limit), msg (submit, prepare
and abort, delay, do_and_submit through the PostgreSQL barrier with the check-back deciding), TCC (confirm,
cancel, nested, cancelled before its try with the barrier refusing the late try) and XA (MariaDB, and
PostgreSQL through asyncpg and psycopg)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg  # type: ignore[import-untyped]
import pytest
from fastdtm_client import BranchBarrier, DtmClient, DtmError, Failure, Msg, Saga, Tcc, TransOptions, Xa
from fastdtm_client.barrier.postgres import AsyncpgStore
from fastdtm_client.options import branch_query

from .harness import Coordinator, branch_statuses, query, wait_status
from .participant import Participant

AMOUNT = 30
DONE = {"succeed", "failed"}


def saga_of(dtm: DtmClient, gid: str, busi: Participant, payload: object, **kwargs: object) -> Saga:
    saga = Saga(dtm, gid, **kwargs)  # type: ignore[arg-type]
    for name in ("TransOut", "TransIn"):
        saga.add(busi.url(f"/busi/{name}"), busi.url(f"/busi/{name}Revert"), payload)
    return saga


async def test_new_gid(dtm: DtmClient) -> None:
    first, second = await dtm.new_gid(), await dtm.new_gid()
    assert first and second and first != second


async def test_saga_succeeds(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    await saga_of(dtm, gid, participant, {"amount": AMOUNT}).submit()
    reply = await wait_status(coordinator, gid, DONE)
    assert reply["transaction"]["status"] == "succeed"
    assert participant.calls_of(gid) == [("TransOut", "action", "01"), ("TransIn", "action", "02")]


async def test_saga_rolls_back(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    await saga_of(dtm, gid, participant, {"amount": AMOUNT, "fail": ["TransIn"]}).submit()
    reply = await wait_status(coordinator, gid, DONE)
    assert reply["transaction"]["status"] == "failed"
    assert participant.calls_of(gid) == [
        ("TransOut", "action", "01"),
        ("TransIn", "action", "02"),
        ("TransInRevert", "compensate", "02"),
        ("TransOutRevert", "compensate", "01"),
    ]


async def test_saga_wait_result(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    options = TransOptions(wait_result=True, request_timeout=5)
    await saga_of(dtm, gid, participant, {"amount": AMOUNT}, options=options).submit()
    assert (await query(coordinator, gid))["transaction"]["status"] == "succeed"
    failing = await dtm.new_gid()
    with pytest.raises(DtmError) as raised:
        await saga_of(dtm, failing, participant, {"fail": ["TransIn"]}, options=options).submit()
    assert raised.value.is_failure
    assert (await wait_status(coordinator, failing, DONE))["transaction"]["status"] == "failed"


async def test_concurrent_saga_keeps_orders(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    saga = Saga(dtm, gid, concurrent=True)
    for name in ("A", "B", "C"):
        saga.add(participant.url(f"/busi/{name}"), participant.url(f"/busi/{name}Revert"), {"amount": 1})
    saga.add_branch_order(2, [0, 1])
    await saga.submit()
    await wait_status(coordinator, gid, {"succeed"})
    names = [name for name, _op, _branch in participant.calls_of(gid)]
    assert sorted(names[:2]) == ["A", "B"] and names[2] == "C"


async def test_saga_branch_headers(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    options = TransOptions(branch_headers={"x-tenant": "t1"}, retry_interval=1)
    # TransOut answers ONGOING once: the header must come with the retry too.
    payload = {"amount": AMOUNT, "ongoing_once": ["TransOut"]}
    await saga_of(dtm, gid, participant, payload, options=options).submit()
    await wait_status(coordinator, gid, {"succeed"}, timeout=30)
    assert participant.headers[f"{gid}/TransOut"]["x-tenant"] == "t1"
    assert participant.calls_of(gid)[:2] == [("TransOut", "action", "01")] * 2


async def test_saga_retry_limit(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    saga = Saga(dtm, gid, options=TransOptions(retry_limit=1))
    saga.add(participant.url("/busi/Flaky"), participant.url("/busi/FlakyRevert"), {"ongoing_once": ["Flaky"]})
    await saga.submit()
    await wait_status(coordinator, gid, {"succeed"}, timeout=30)


async def test_msg_submit(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    msg = Msg(dtm, gid).add(participant.url("/busi/TransOut"), {"amount": AMOUNT})
    await msg.add(participant.url("/busi/TransIn"), {"amount": AMOUNT}).submit()
    await wait_status(coordinator, gid, {"succeed"})
    assert participant.calls_of(gid) == [("TransOut", "action", "01"), ("TransIn", "action", "02")]


async def test_msg_prepare_abort(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    msg = Msg(dtm, gid).add(participant.url("/busi/TransIn"), {"amount": AMOUNT})
    await msg.prepare(participant.url("/msg/query_prepared"))
    assert (await query(coordinator, gid))["transaction"]["status"] == "prepared"
    await msg.abort()
    assert (await query(coordinator, gid))["transaction"]["status"] == "failed"
    assert participant.calls_of(gid) == []


async def test_msg_delay(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    msg = Msg(dtm, gid, delay=2, concurrent=True).add(participant.url("/busi/Later"), {"amount": 1})
    started = time.monotonic()
    await msg.submit()
    await asyncio.sleep(1)
    assert participant.calls_of(gid) == []
    await wait_status(coordinator, gid, {"succeed"}, timeout=30)
    assert time.monotonic() - started >= 2


LocalStep = Callable[[BranchBarrier], Awaitable[None]]


def local_transfer(dsn: str, *, after_commit: Exception | None = None, fail: bool = False) -> LocalStep:
    """The msg's local step: debit user 1 in the barrier's transaction; optionally fail, or raise after commit."""

    async def local(barrier: BranchBarrier) -> None:
        conn = await asyncpg.connect(dsn)
        try:

            async def debit(tx: asyncpg.Connection) -> None:
                await tx.execute("UPDATE account SET balance = balance - $1 WHERE user_id = 1", AMOUNT)
                if fail:
                    raise Failure("insufficient balance")

            await barrier.call(AsyncpgStore(conn), debit)
        finally:
            await conn.close()
        if after_commit is not None:
            raise after_commit

    return local


async def balance(dsn: str, user: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT balance FROM account WHERE user_id = $1", user))
    finally:
        await conn.close()


async def test_msg_do_and_submit(
    coordinator: Coordinator, dtm: DtmClient, participant: Participant, pg_dsn: str
) -> None:
    qp = participant.url("/msg/query_prepared")
    ok = await dtm.new_gid()
    await Msg(dtm, ok).add(participant.url("/busi/TransIn"), {}).do_and_submit(qp, local_transfer(pg_dsn))
    await wait_status(coordinator, ok, {"succeed"})

    refused = await dtm.new_gid()
    with pytest.raises(Failure):
        await (
            Msg(dtm, refused)
            .add(participant.url("/busi/TransIn"), {})
            .do_and_submit(qp, local_transfer(pg_dsn, fail=True))
        )
    assert (await query(coordinator, refused))["transaction"]["status"] == "failed"

    # The local step committed but its caller saw an error: the SDK asks the check-back, which says it ran.
    lost = await dtm.new_gid()
    with pytest.raises(ConnectionError):
        await (
            Msg(dtm, lost)
            .add(participant.url("/busi/TransIn"), {})
            .do_and_submit(qp, local_transfer(pg_dsn, after_commit=ConnectionError("reply lost")))
        )
    await wait_status(coordinator, lost, {"succeed"})
    assert ("QueryPrepared", "msg", "00") in participant.calls_of(lost)
    assert await balance(pg_dsn, 1) == 1000 - 2 * AMOUNT


async def test_msg_check_back_rolls_back(
    coordinator: Coordinator, dtm: DtmClient, participant: Participant, pg_dsn: str
) -> None:
    """The initiator died after prepare: the coordinator's check-back closes the barrier and fails the msg,
    and the local step, arriving late, is refused as a duplicate."""
    gid = await dtm.new_gid()
    msg = Msg(dtm, gid, options=TransOptions(timeout_to_fail=1, retry_interval=1))
    msg.add(participant.url("/busi/TransIn"), {})
    await msg.prepare(participant.url("/msg/query_prepared"))
    await wait_status(coordinator, gid, {"failed"}, timeout=30)
    assert participant.calls_of(gid) == [("QueryPrepared", "msg", "00")]
    late = BranchBarrier("msg", gid, "00", "msg")
    with pytest.raises(Exception, match="already decided"):
        await local_transfer(pg_dsn)(late)
    assert await balance(pg_dsn, 1) == 1000


def tcc_urls(busi: Participant, name: str) -> tuple[str, str, str]:
    base = busi.url(f"/busi/{name}")
    return base + "Try", base + "Confirm", base + "Cancel"


async def test_tcc_confirms(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    async with Tcc(dtm, gid) as tcc:
        await tcc.call_branch({"amount": AMOUNT}, *tcc_urls(participant, "TransOut"))
        await tcc.call_branch({"amount": AMOUNT}, *tcc_urls(participant, "TransIn"))
    await wait_status(coordinator, gid, {"succeed"})
    assert participant.calls_of(gid) == [
        ("TransOutTry", "try", "01"),
        ("TransInTry", "try", "02"),
        ("TransInConfirm", "confirm", "02"),
        ("TransOutConfirm", "confirm", "01"),
    ]


async def test_tcc_cancels(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    with pytest.raises(Failure):
        async with Tcc(dtm, gid) as tcc:
            await tcc.call_branch({"amount": AMOUNT}, *tcc_urls(participant, "TransOut"))
            await tcc.call_branch({"amount": AMOUNT, "fail": ["TransInTry"]}, *tcc_urls(participant, "TransIn"))
    reply = await wait_status(coordinator, gid, DONE)
    assert reply["transaction"]["status"] == "failed"
    assert "TransInTry refused" in reply["transaction"].get("rollback_reason", "")
    assert participant.calls_of(gid)[2:] == [("TransInCancel", "cancel", "02"), ("TransOutCancel", "cancel", "01")]


async def test_tcc_nested(coordinator: Coordinator, dtm: DtmClient, participant: Participant) -> None:
    gid = await dtm.new_gid()
    async with Tcc(dtm, gid) as tcc:
        busi = participant.url("/busi/")
        await tcc.call_branch(
            {"amount": 1}, participant.url("/nested/try"), busi + "OuterConfirm", busi + "OuterCancel"
        )
    reply = await wait_status(coordinator, gid, {"succeed"})
    assert {branch_id for branch_id, _op, _status in branch_statuses(reply)} == {"01", "0101"}
    assert participant.calls_of(gid) == [
        ("NestedTry", "try", "01"),
        ("InnerTry", "try", "0101"),
        ("InnerConfirm", "confirm", "0101"),
        ("OuterConfirm", "confirm", "01"),
    ]


async def test_tcc_cancel_before_try(
    coordinator: Coordinator, dtm: DtmClient, participant: Participant, pg_dsn: str
) -> None:
    """The try is delayed past the transaction's timeout: the coordinator cancels a branch whose try never ran
    (null compensation), and the late try, delivered 4 times at once, is refused by the barrier (suspension)."""
    gid = await dtm.new_gid()
    bank = participant.url("/bank/")
    # Prepared and registered by hand: the initiator "dies" before calling the try, and never submits.
    tcc = Tcc(dtm, gid, options=TransOptions(timeout_to_fail=1, retry_interval=1))
    await dtm.call("prepare", tcc.body())
    branch_id = tcc.branch_ids.next()
    registration = {"gid": gid, "trans_type": "tcc", "branch_id": branch_id, "data": '{"amount":30}'}
    await dtm.call("registerBranch", {**registration, "confirm": bank + "confirm", "cancel": bank + "cancel"})
    await wait_status(coordinator, gid, {"failed"}, timeout=30)
    query = branch_query(dtm.server, gid, "tcc", branch_id, "try")
    late = [dtm.call_branch("POST", bank + "try", query=query, payload='{"amount":30}') for _ in range(4)]
    await asyncio.gather(*late)
    assert await balance(pg_dsn, 1) == 1000
    assert ("bank", "cancel", "01") in participant.calls_of(gid)


@pytest.mark.parametrize("db", ["postgres", "psycopg", "mysql"])
async def test_xa(coordinator: Coordinator, dtm: DtmClient, participant: Participant, db: str) -> None:
    async def balances() -> tuple[int, int]:
        if db in ("postgres", "psycopg"):
            return await balance(participant.pg_dsn, 1), await balance(participant.pg_dsn, 2)
        return await _mysql_balances(participant)

    before = await balances()
    gid = await dtm.new_gid()
    async with Xa(dtm, gid) as xa:
        await xa.call_branch({"amount": -AMOUNT, "user": 1}, participant.url(f"/xa/{db}"))
        await xa.call_branch({"amount": AMOUNT, "user": 2}, participant.url(f"/xa/{db}"))
    await wait_status(coordinator, gid, {"succeed"})
    assert await balances() == (before[0] - AMOUNT, before[1] + AMOUNT)

    failing = await dtm.new_gid()
    with pytest.raises(Failure):
        async with Xa(dtm, failing) as xa:
            await xa.call_branch({"amount": -AMOUNT, "user": 1}, participant.url(f"/xa/{db}"))
            await xa.call_branch({"amount": AMOUNT, "user": 2, "fail": True}, participant.url(f"/xa/{db}"))
    await wait_status(coordinator, failing, {"failed"})
    assert await balances() == (before[0] - AMOUNT, before[1] + AMOUNT)
    calls = participant.calls_of(failing)
    # Phase two may be delivered more than once (a retried call, or Go DTM's cron racing its abort round): it is
    # idempotent, so only "branch 01 rolled back, nothing committed" is asserted.
    assert [op for _name, op, _branch in calls[:2]] == ["action", "action"], (coordinator.name, calls)
    assert {(op, branch) for _name, op, branch in calls[2:]} == {("rollback", "01")}, (coordinator.name, calls)


async def _mysql_balances(participant: Participant) -> tuple[int, int]:
    import aiomysql  # type: ignore[import-untyped]

    params = participant.mysql
    conn = await aiomysql.connect(host=params.host, port=params.port, user="root", password="", db=params.db)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT balance FROM account ORDER BY user_id")
            rows = await cursor.fetchall()
        return int(rows[0][0]), int(rows[1][0])
    finally:
        conn.close()
