"""The engine's side of a round's hold, on a real store (the embedded SQLite file) and real branch calls:
a call the branch client refused to send because the fence passed is made again after one write proves the
hold, and counts once; a round whose store answers later than its hold is long stops instead of looping.
The scenarios with two nodes and a paused one are in tests/e2e/test_fencing.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from fastdtm.branch_http import HttpClient
from fastdtm.clock import SystemClock
from fastdtm.engine import HOLD_PROOF_ATTEMPTS, Engine
from fastdtm.errors import Ongoing, StoreError
from fastdtm.invoker import CallResult, Invoker
from fastdtm.kinds.base import Call, Policy
from fastdtm.metrics import Metrics
from fastdtm.models import Transaction, TransRequest
from fastdtm.service import Service
from fastdtm.store.base import Change, Store
from fastdtm.store.embedded import EmbeddedStore
from tests.support.bank import transfer
from tests.support.busi import BusiServer, Reply

POLICY = Policy(retry_interval_ms=500, timeout_to_fail_ms=35_000)
SKEW_MS = 100


class NoTopics:
    async def subscribers(self, topic: str) -> Sequence[str]:
        return []


class LateFirstSend(Invoker):
    """The real invoker and branch client, but the first call is held until its send deadline has passed
    (a slow connect, a busy loop): the branch client must refuse to send it."""

    def __init__(self, http: HttpClient) -> None:
        super().__init__(http, 3.0)
        self.refused: list[str] = []

    async def call(self, trans: Transaction, call: Call, send_by: float | None = None) -> CallResult:
        if not self.refused and send_by is not None:
            await asyncio.sleep(max(0.0, send_by - time.monotonic()) + 0.01)
            self.refused.append(call.url)
        return await super().call(trans, call, send_by)


class SlowTransitions(EmbeddedStore):
    """The embedded store, whose transitions are applied at once but answer `delay` seconds late."""

    delay = 0.0
    transitions = 0

    async def transition(self, change: Change) -> None:
        self.transitions += 1
        await super().transition(change)
        await asyncio.sleep(self.delay)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def store(tmp_path: Path, metrics: Metrics) -> AsyncIterator[EmbeddedStore]:
    opened = await EmbeddedStore.open(str(tmp_path / "fastdtm.db"), 60_000, metrics=metrics)
    yield opened
    await opened.close()


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.close()


def saga(busi: BusiServer, gid: str) -> TransRequest:
    return TransRequest.parse(transfer(busi, gid, wait_result=True))


def service_on(store: Store, invoker: Invoker, metrics: Metrics) -> Service:
    clock = SystemClock()
    engine = Engine(store, invoker, POLICY, clock, metrics, max_clock_skew_ms=SKEW_MS)
    return Service(store, engine, clock, POLICY, NoTopics())


def store_calls(metrics: Metrics) -> dict[str, float]:
    return {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.render()[0].decode().splitlines()
        if line.startswith("fastdtm_store_calls_total{")
    }


async def test_a_call_not_sent_in_time_is_made_after_the_hold_is_proved_and_counts_once(
    store: EmbeddedStore, metrics: Metrics, http: HttpClient, busi: BusiServer
) -> None:
    invoker = LateFirstSend(http)

    await service_on(store, invoker, metrics).submit(saga(busi, "late-1"))

    assert invoker.refused == [busi.url("/TransOut")]
    assert [call.path for call in busi.calls()] == ["/TransOut", "/TransIn"]
    # create, the write that proved the hold before TransOut went out, and the final one.
    assert store_calls(metrics) == {"create": 1, "transition": 2}
    loaded = await store.load("late-1")
    assert loaded is not None and loaded[0].status == "succeed"


async def test_a_round_whose_store_answers_later_than_its_hold_stops_instead_of_calling(
    tmp_path: Path, http: HttpClient, busi: BusiServer
) -> None:
    slow = await SlowTransitions.open(str(tmp_path / "slow.db"), 60_000)
    window = (POLICY.retry_interval_ms - SKEW_MS) / 1000
    slow.delay = window + 0.05
    busi.script("/TransOut", [Reply(200, delay=window + 0.05)])  # TransIn's turn comes past the fence
    try:
        with pytest.raises(StoreError, match="too late to prove the hold"):
            await service_on(slow, Invoker(http, 3.0), Metrics()).submit(saga(busi, "slow-1"))

        assert slow.transitions == HOLD_PROOF_ATTEMPTS
        assert [call.path for call in busi.calls()] == ["/TransOut"]
        loaded = await slow.load("slow-1")
        assert loaded is not None and loaded[0].status == "submitted"
        # The proving writes carried TransOut's result.
        assert [b.status for b in loaded[1]] == ["prepared", "succeed", "prepared", "prepared"]
    finally:
        await slow.close()


async def test_a_repeated_submit_while_another_node_holds_the_saga_reports_ongoing(
    store: EmbeddedStore, http: HttpClient, busi: BusiServer
) -> None:
    busi.script("/TransOut", [Reply(200, delay=1.0)])
    first, second = service_on(store, Invoker(http, 3.0), Metrics()), service_on(store, Invoker(http, 3.0), Metrics())
    running = asyncio.ensure_future(first.submit(saga(busi, "twice-1")))
    await asyncio.sleep(0.3)  # the first node's round holds it, TransOut in flight

    # Another node: no second round beside the first, and no verdict before there is one.
    with pytest.raises(Ongoing, match="being processed by another round"):
        await second.submit(saga(busi, "twice-1"))

    await running
    assert [call.path for call in busi.calls()] == ["/TransOut", "/TransIn"]
