"""One Redis Cluster master down (frozen with SIGSTOP: it accepts connections and answers nothing) while the
others serve their slots, on a private cluster so the suite's shared one is left alone (issue 13, items 9, 10):
lease renewals go on on the healthy masters and say "unknown" for the frozen one instead of failing the tick,
the cron keeps those shards, and the failing claims and renewals are logged by their changes, not per shard
per tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Final, TypeVar, cast

import pytest
import redis

from fastdtm.clock import SystemClock
from fastdtm.config import Settings
from fastdtm.cron import Cron
from fastdtm.engine import Engine
from fastdtm.metrics import Metrics
from fastdtm.sharding import Keys, slot_of
from fastdtm.store.redis import RedisStore
from fastdtm.store.redis_client import connect
from fastdtm.store.resp import Timeouts
from tests.conftest import missing_toolchain
from tests.store.contract.support import FINISHED_TTL_MS, LEASE, THEIRS
from tests.support.redis_servers import Address, RedisCluster, RedisUnavailable

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

KEYS: Final = Keys()
SHARDS: Final = list(range(KEYS.shards))
TTL_MS: Final = 60_000  # nothing expires during a test
#: How long a command to the frozen master waits before its connection is declared dead: each tick waits it.
REPLY_TIMEOUT: Final = 0.2
TICKS: Final = 20
T = TypeVar("T")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    try:
        started = RedisCluster()
    except RedisUnavailable as exc:
        missing_toolchain(str(exc))
    with started:
        for host, port in started.startup_nodes:
            with redis.Redis(host=host, port=port) as client:
                # By default every master answers CLUSTERDOWN once the others mark one failed (node-timeout,
                # 2 s): the faults here are those of a cluster whose healthy masters go on serving.
                client.config_set("cluster-require-full-coverage", "no")
        yield started


@pytest.fixture
async def store(cluster: RedisCluster) -> AsyncIterator[RedisStore]:
    cluster.flush()
    store = RedisStore(connect(cluster.url, Timeouts(reply=REPLY_TIMEOUT)), KEYS, FINISHED_TTL_MS)
    try:
        yield store
    finally:
        await store.close()


def masters_of(cluster: RedisCluster) -> dict[int, Address]:
    """Shard -> the master serving its keys."""
    host, port = cluster.startup_nodes[0]
    with redis.Redis(host=host, port=port, decode_responses=True) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    owners = [(int(first), int(last), (str(master[0]), int(master[1]))) for first, last, master, *_ in ranges]
    return {s: next(a for f, la, a in owners if f <= slot_of(KEYS.lease(s)) <= la) for s in SHARDS}


@contextlib.contextmanager
def frozen(master: Address) -> Iterator[None]:
    """SIGSTOP the master's process for the block, and SIGCONT it whatever happens."""
    with redis.Redis(host=master[0], port=master[1], decode_responses=True) as client:
        pid = int(client.info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def eventually(attempt: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Repeats `attempt` until `done` says so: the thawed master takes a moment to answer on a new connection."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await attempt()
        if done(result) or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.1)


async def test_renewals_go_on_on_the_healthy_masters_and_are_unknown_on_the_frozen_one(
    cluster: RedisCluster, store: RedisStore
) -> None:
    masters = masters_of(cluster)
    down = cluster.startup_nodes[-1]  # not the first seed: the slot map is re-read from a live node first
    assert set(masters.values()) == set(cluster.startup_nodes), "the shards must span every master"
    assert all(await asyncio.gather(*(store.acquire_lease(s, LEASE, TTL_MS) for s in SHARDS)))
    # On a healthy master, one lease now belongs to another node: that one is known lost.
    taken = next(s for s in SHARDS if masters[s] != down)
    assert await store.release_lease(taken, LEASE)
    assert await store.acquire_lease(taken, THEIRS, TTL_MS)

    with frozen(down):
        renewed = await store.renew_leases(SHARDS, LEASE, TTL_MS)  # does not raise

    expected = [None if masters[s] == down else s != taken for s in SHARDS]
    assert renewed == expected
    assert None in renewed and True in renewed
    after = await eventually(lambda: store.renew_leases(SHARDS, LEASE, TTL_MS), lambda r: None not in r)
    assert after == [s != taken for s in SHARDS]


async def test_the_cron_keeps_its_shards_and_logs_a_dead_master_by_its_changes(
    cluster: RedisCluster, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # No transactions are due, so the cron never hands the engine anything.
    cron = Cron(store, cast(Engine, None), Settings(lease_ttl=TTL_MS / 1000), SystemClock(), Metrics())
    assert all(await asyncio.gather(*(store.acquire_lease(s, cron.lease, TTL_MS) for s in SHARDS)))
    cron.owned = set(SHARDS)
    down = cluster.startup_nodes[-1]
    on_down = sum(m == down for m in masters_of(cluster).values())

    caplog.clear()
    with frozen(down):
        for _ in range(TICKS):  # as the renew and poll tickers would, but back to back
            await asyncio.gather(cron.renew(), cron.poll())
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("fastdtm") and r.levelno >= logging.WARNING]

    # Unreachable is not lost: nothing dropped (the claims are fenced by the lease token all the same).
    assert cron.owned == set(SHARDS)
    assert len(warned) <= 3, warned
    assert any(m.startswith(f"claims failing on {on_down} shards: ") for m in warned), warned
    assert any(m.startswith(f"lease renewals failing on {on_down} shards: ") for m in warned), warned

    def recovered() -> list[str]:
        return [r.getMessage() for r in caplog.records if " recovered on " in r.getMessage()]

    async def tick() -> list[str]:
        await asyncio.gather(cron.renew(), cron.poll())
        return recovered()

    await eventually(tick, lambda lines: len(lines) == 2)
    assert sorted(line.split(" after ")[0] for line in recovered()) == [
        f"claims recovered on {on_down} shards",
        f"lease renewals recovered on {on_down} shards",
    ]
    assert cron.owned == set(SHARDS)


async def test_a_frozen_master_keeps_no_node_from_the_shards_of_the_healthy_ones(
    cluster: RedisCluster, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Membership moves every lease at once and each on its own: acquiring a shard on the frozen master used
    to stop the tick, so the shards after it in order (on healthy masters) were never taken."""
    caplog.set_level(logging.INFO)
    settings = Settings(lease_ttl=TTL_MS / 1000, node_heartbeat=0.3)
    cron = Cron(store, cast(Engine, None), settings, SystemClock(), Metrics())
    masters = masters_of(cluster)
    down = cluster.startup_nodes[0]
    healthy = {s for s in SHARDS if masters[s] != down}

    with frozen(down):
        await cron.membership()

    # The node list lives on one master: when it is the frozen one, the heartbeat itself fails first.
    assert cron.owned == healthy
    warned = [r.getMessage() for r in caplog.records if r.name == "fastdtm.cron" and r.levelno >= logging.WARNING]
    assert warned == [f"lease moves failing on {len(SHARDS) - len(healthy)} shards: {warned[0].split(': ', 1)[1]}"]

    await eventually(cron.membership, lambda _: cron.owned == set(SHARDS))
    assert cron.owned == set(SHARDS)
