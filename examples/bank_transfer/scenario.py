"""The transfers the example makes, and the two bank services it serves in-process (uvicorn) while making them.
Alice banks at A, bob at B; every transfer moves money from alice to bob, and one of each kind is refused."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg  # type: ignore[import-untyped]
import uvicorn
from fastdtm_client import BranchBarrier, DtmClient, Failure, Msg, Saga, Tcc
from fastdtm_client.barrier.postgres import AsyncpgStore

from .bank import adjust, balances, create_app, setup_database

OPENING = {"alice": 1000, "bob": 1000}
TOTAL = sum(OPENING.values())
FINISHED = {"succeed", "failed"}


@dataclass
class Banks:
    a_url: str
    b_url: str
    a_dsn: str
    b_dsn: str

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, a_dsn: str, b_dsn: str) -> AsyncIterator[Banks]:
        await setup_database(a_dsn, {"alice": OPENING["alice"]})
        await setup_database(b_dsn, {"bob": OPENING["bob"]})
        async with _serve(a_dsn) as a_url, _serve(b_dsn) as b_url:
            print(f"bank A (alice) at {a_url}, bank B (bob) at {b_url}")
            yield cls(a_url, b_url, a_dsn, b_dsn)

    async def balances(self) -> dict[str, int]:
        return {**await balances(self.a_dsn), **await balances(self.b_dsn)}


@contextlib.asynccontextmanager
async def _serve(dsn: str) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(dsn), host="127.0.0.1", port=port, log_level="warning", ws="none")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def wait_finished(dtm: DtmClient, gid: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        transaction = (await dtm.query(gid)).get("transaction") or {}
        if transaction.get("status") in FINISHED:
            return str(transaction["status"])
        await asyncio.sleep(0.1)
    return "unfinished"


async def saga(dtm: DtmClient, banks: Banks, amount: int, to: str) -> str:
    gid = await dtm.new_gid()
    s = Saga(dtm, gid)
    s.add(f"{banks.a_url}/saga/adjust", f"{banks.a_url}/saga/adjust-revert", {"name": "alice", "amount": -amount})
    s.add(f"{banks.b_url}/saga/adjust", f"{banks.b_url}/saga/adjust-revert", {"name": to, "amount": amount})
    await s.submit()
    return await wait_finished(dtm, gid)


async def tcc(dtm: DtmClient, banks: Banks, amount: int, to: str) -> str:
    gid = await dtm.new_gid()
    with contextlib.suppress(Failure):
        async with Tcc(dtm, gid) as t:
            for url, name, delta in ((banks.a_url, "alice", -amount), (banks.b_url, to, amount)):
                await t.call_branch(
                    {"name": name, "amount": delta}, *(f"{url}/tcc/{op}" for op in ("try", "confirm", "cancel"))
                )
    return await wait_finished(dtm, gid)


async def msg(dtm: DtmClient, banks: Banks, amount: int, to: str) -> str:
    """Debit alice in bank A's own transaction (inside the msg barrier), then the coordinator credits bob."""
    gid = await dtm.new_gid()
    m = Msg(dtm, gid).add(f"{banks.b_url}/msg/adjust", {"name": to, "amount": amount})

    async def debit_alice(barrier: BranchBarrier) -> None:
        conn = await asyncpg.connect(banks.a_dsn)
        try:
            await barrier.call(AsyncpgStore(conn), lambda tx: adjust(tx, "alice", -amount))
        finally:
            await conn.close()

    with contextlib.suppress(Failure):
        await m.do_and_submit(f"{banks.a_url}/msg/query-prepared", debit_alice)
    return await wait_finished(dtm, gid)


Transfer = Callable[[DtmClient, Banks, int, str], Awaitable[str]]
#: (label, transfer, amount, recipient, expected status, alice's expected balance afterwards)
PLAN: list[tuple[str, Transfer, int, str, str, int]] = [
    ("saga 30 to bob", saga, 30, "bob", "succeed", 970),
    ("saga 50 to carol (no such account: compensated)", saga, 50, "carol", "failed", 970),
    ("tcc 20 to bob", tcc, 20, "bob", "succeed", 950),
    ("tcc 5000 to bob (insufficient: cancelled)", tcc, 5000, "bob", "failed", 950),
    ("msg 10 to bob", msg, 10, "bob", "succeed", 940),
    ("msg 5000 to bob (insufficient: aborted)", msg, 5000, "bob", "failed", 940),
]


async def run_transfers(dtm: DtmClient, banks: Banks) -> bool:
    consistent = True
    print(f"{'opening balances':<52} {_line(await banks.balances())}")
    for label, transfer, amount, to, expected, alice in PLAN:
        status = await transfer(dtm, banks, amount, to)
        now = await banks.balances()
        ok = status == expected and now == {"alice": alice, "bob": TOTAL - alice}
        consistent = consistent and ok
        print(f"{label:<52} {status:<8} {_line(now)} {'ok' if ok else 'WRONG'}")
    return consistent


def _line(balances: dict[str, int]) -> str:
    return f"alice={balances.get('alice')} bob={balances.get('bob')} sum={sum(balances.values())}"
