"""The cron looks at a shard only when it needs to (fastdtm/cron.py, `Settings.shard_look`): when what the shard's
last claim said comes due, when a write woke it, and at least every `shard_look`; and the wake rule of the Redis
store that makes that safe (`Store.wake_counts`). On standalone Redis and a Redis Cluster; the embedded store
says "now" to every claim, so it is looked at every tick.

The cron's clocks are fakes moved by the test, and each poll is called by the test as its ticker would: which
shards a poll claims from is exact, not a matter of timing. Redis itself is real.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from fastdtm.config import Settings
from fastdtm.cron import Cron
from fastdtm.engine import Engine
from fastdtm.errors import StoreUnavailable
from fastdtm.metrics import Metrics
from fastdtm.sharding import Keys
from fastdtm.states import TransStatus
from fastdtm.store.base import Change, Claimed, Store
from fastdtm.store.embedded import EmbeddedStore
from fastdtm.store.redis import RedisStore
from fastdtm.store.redis_client import connect
from tests.store.contract.support import eventually, trans, wall_ms
from tests.support.redis_servers import RedisTarget
from tests.unit.test_metrics import value

pytestmark = pytest.mark.asyncio

SHARDS = 16
#: Writes scheduling sooner than this wake their shard; with the skew below a shard is looked at every 1.5 s.
WITHIN_MS = 2_000
SETTINGS = Settings(retry_interval=WITHIN_MS / 1000, max_clock_skew=0.5, cron_interval=0.1, lease_ttl=60)
TICK = SETTINGS.cron_interval


class Clocks:
    """The cron's wall clock and monotonic clock, moved together by the test."""

    def __init__(self) -> None:
        self.wall = wall_ms()
        self.mono = 1_000.0

    def now_ms(self) -> int:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += round(seconds * 1000)
        self.mono += seconds


class Looking:
    """The store, recording which shards each claim covered (delegates everything else)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.looked: list[list[int]] = []
        self.counts_unknown = False

    async def claim_due_many(
        self, shards: Sequence[int], lease: str, now_ms: int, limit: int, until_ms: int
    ) -> dict[int, Claimed | None]:
        self.looked.append(list(shards))
        return await self.store.claim_due_many(shards, lease, now_ms, limit, until_ms)

    async def wake_counts(self, shards: Sequence[int]) -> list[int]:
        if self.counts_unknown:
            raise StoreUnavailable("redis: the wake counts' master is away")
        return await self.store.wake_counts(shards)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def last(self) -> list[int]:
        return self.looked[-1] if self.looked else []


class Advanced:
    """The engine, as far as the cron sees it: the gids it was handed."""

    def __init__(self) -> None:
        self.gids: list[str] = []

    async def advance(self, gid: str) -> None:
        self.gids.append(gid)


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    backend: RedisTarget = request.getfixturevalue("redis_standalone" if request.param == "redis" else "redis_cluster")
    backend.flush()
    opened = RedisStore(connect(backend.url), Keys(shards=SHARDS), 60_000, wake_within_ms=WITHIN_MS)
    try:
        yield opened
    finally:
        await opened.close()


class Rig:
    def __init__(self, store: Store, clocks: Clocks) -> None:
        self.clocks = clocks
        self.looking = Looking(store)
        self.engine = Advanced()
        self.cron = Cron(
            cast(Store, self.looking), cast(Engine, self.engine), SETTINGS, clocks, Metrics(), clocks.monotonic
        )

    async def own_every_shard(self) -> None:
        for shard in range(SHARDS):
            assert await self.looking.store.acquire_lease(shard, self.cron.lease, 60_000)
        self.cron.owned = set(range(SHARDS))

    async def tick(self, seconds: float = TICK) -> list[int]:
        """Move the clocks on, poll as the ticker would, and let the rounds it started run: the shards it claimed."""
        self.clocks.advance(seconds)
        before = len(self.looking.looked)
        await self.cron.poll()
        await asyncio.sleep(0)
        return self.looking.last() if len(self.looking.looked) > before else []

    async def woken(self, shard: int, count: int) -> None:
        """Wait until the store's wake for `shard` reached Redis (it is sent after the write, without waiting)."""

        async def reached() -> bool:
            return (await self.looking.store.wake_counts([shard])) == [count]

        await eventually(reached)


@pytest.fixture
async def rig(store: RedisStore) -> Rig:
    rig = Rig(store, Clocks())
    await rig.own_every_shard()
    return rig


def in_shard(store: RedisStore, shard: int, n: int = 1, stem: str = "g") -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < n:
        gid = f"{stem}-{i}"
        if store.keys.shard_of(gid) == shard:
            found.append(gid)
        i += 1
    return found


async def test_an_idle_shard_is_looked_at_once_per_shard_look(rig: Rig) -> None:
    assert await rig.tick(0) == list(range(SHARDS))  # first poll: all of them
    for _ in range(13):  # 1.3 s: nothing is scheduled, nothing woke them
        assert await rig.tick() == []
    assert await rig.tick(0.2) == list(range(SHARDS))  # 1.5 s: SETTINGS.shard_look
    assert await rig.tick() == []
    assert SETTINGS.shard_look == 1.5


async def test_a_write_due_soon_wakes_its_shard_and_is_claimed_when_due(rig: Rig, store: RedisStore) -> None:
    await rig.tick(0)
    (gid,) = in_shard(store, 3)
    await store.create(trans(gid, rig.clocks.wall, next_cron_ms=rig.clocks.wall + 500), [])
    await rig.woken(3, 1)

    assert await rig.tick() == [3]  # woken: looked at, nothing due yet; its claim tells +500 ms
    assert rig.engine.gids == []
    assert await rig.tick() == []
    assert await rig.tick(0.3) == [3]  # +0.5 s
    assert rig.engine.gids == [gid]


async def test_a_write_due_later_is_seen_by_the_next_look_before_it_is_due(rig: Rig, store: RedisStore) -> None:
    await rig.tick(0)
    (gid,) = in_shard(store, 7)
    # Written 0.1 s after the shard's look, due exactly `within` later: no wake.
    rig.clocks.advance(0.1)
    await store.create(trans(gid, rig.clocks.wall, next_cron_ms=rig.clocks.wall + WITHIN_MS), [])
    assert await store.wake_counts([7]) == [0]

    looks = [await rig.tick() for _ in range(19)]  # ticks at 0.2 ... 2.0 s; it is due at 2.1 s
    assert looks[13] == list(range(SHARDS))  # the look at 1.5 s, before it was due: told 2.1 s
    assert [i for i, looked in enumerate(looks) if looked and i != 13] == []
    assert rig.engine.gids == []
    assert await rig.tick() == [7]  # 2.1 s
    assert rig.engine.gids == [gid]


async def test_what_the_claim_leaves_due_is_claimed_on_the_next_tick(rig: Rig, store: RedisStore) -> None:
    gids = in_shard(store, 2, SETTINGS.claim_batch + 5)
    for gid in gids:
        await store.create(trans(gid, rig.clocks.wall, next_cron_ms=rig.clocks.wall - 10), [])
    assert await rig.tick(0) == list(range(SHARDS))
    assert len(rig.engine.gids) == SETTINGS.claim_batch
    assert await rig.tick() == [2]
    assert sorted(rig.engine.gids) == sorted(gids)


async def test_each_writer_of_a_soon_schedule_wakes_the_shard(rig: Rig, store: RedisStore) -> None:
    """Every store write that can leave a transaction due sooner than `wake_within_ms`; and those that cannot."""
    now = rig.clocks.wall
    a, b, c = in_shard(store, 5, 3)
    counts: list[int] = []

    async def count() -> int:
        await asyncio.sleep(0)
        (got,) = await store.wake_counts([5])
        counts.append(got)
        return got

    await store.create(trans(a, now, next_cron_ms=now + WITHIN_MS), [])  # not soon: no wake
    await store.create(trans(b, now, status=TransStatus.SUCCEED), [])  # finished: nothing scheduled
    assert await count() == 0
    await store.create(trans(c, now, next_cron_ms=now + WITHIN_MS - 1), [])
    await rig.woken(5, 1)
    await store.touch(a, now + 10, now)  # resetNextCronTime, the console's "retry now"
    await rig.woken(5, 2)
    assert await store.reset_cron(now + 60_000, now, 100) == (0, False)  # moved nothing: no wake
    assert await count() == 2
    await store.transition(
        Change(a, TransStatus.SUBMITTED, TransStatus.SUBMITTED, now, next_cron_ms=now + 100, interval_ms=100)
    )
    await rig.woken(5, 3)
    await store.transition(Change(a, TransStatus.SUBMITTED, TransStatus.SUCCEED, now))  # finished
    assert await count() == 3
    await store.touch(c, now + 3 * WITHIN_MS, now)
    assert await store.reset_cron(now + WITHIN_MS, now, 100) == (1, False)  # brings c forward to now
    await rig.woken(5, 4)
    taken = await store.take(c, now, now + 300, "round-1")  # a hold shorter than `within`
    assert taken is not None
    await rig.woken(5, 5)
    assert await store.pause(c, now + 400, "operator")  # after the hold; paused is far away: no wake
    assert await count() == 5
    await store.resume(c, now + 400)  # due at once
    await rig.woken(5, 6)


async def test_wake_counts_not_known_mean_a_look_at_every_shard(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "fastdtm.cron")
    await rig.tick(0)
    rig.looking.counts_unknown = True
    assert await rig.tick() == list(range(SHARDS))
    assert await rig.tick() == list(range(SHARDS))
    rig.looking.counts_unknown = False
    assert await rig.tick() == []
    # Said when it began and when it ended, not per tick.
    said = [r.getMessage() for r in caplog.records if r.name == "fastdtm.cron"]
    opened, closed = "wake count reads failing", "wake count reads recovered"
    assert [m.split(":")[0].split(" after ")[0] for m in said] == [opened, closed]


async def test_a_wake_read_that_never_answers_holds_up_no_claim(rig: Rig) -> None:
    await rig.tick(0)

    async def never(shards: Sequence[int]) -> list[int]:
        await asyncio.Event().wait()
        return []

    rig.looking.wake_counts = never  # type: ignore[method-assign]
    # Bounded by one cron interval (real time): then every shard, as if all were woken.
    assert await rig.tick() == list(range(SHARDS))


async def test_a_shard_that_comes_back_is_looked_at_at_once(rig: Rig) -> None:
    await rig.tick(0)
    rig.cron.owned.discard(4)
    assert await rig.tick() == []
    rig.cron.owned.add(4)
    assert await rig.tick() == [4]


async def test_a_lost_lease_drops_the_shard(rig: Rig, store: RedisStore) -> None:
    await rig.tick(0)
    assert await store.release_lease(6, rig.cron.lease)
    assert await store.acquire_lease(6, "node-b other", 60_000)
    looks = [await rig.tick() for _ in range(15)]
    assert looks[-1] == list(range(SHARDS))
    assert 6 not in rig.cron.owned


async def test_the_embedded_store_is_looked_at_every_tick(tmp_path: Path) -> None:
    embedded = await EmbeddedStore.open(str(tmp_path / "fastdtm.db"), 60_000)
    try:
        rig = Rig(embedded, Clocks())
        assert await embedded.acquire_lease(0, rig.cron.lease, 60_000)
        rig.cron.owned = {0}
        assert [await rig.tick() for _ in range(3)] == [[0], [0], [0]]
        assert await embedded.claim_due(0, rig.cron.lease, rig.clocks.wall, 10, rig.clocks.wall + 1) == Claimed(
            [], rig.clocks.wall
        )
    finally:
        await embedded.close()


async def test_the_store_counts_each_claim_and_renewal_it_sends(store: RedisStore) -> None:
    """What an idle node costs Redis shows in its own metrics: a claim_due and a lease_renew per shard."""
    metrics = Metrics()
    counted = RedisStore(store.client, store.keys, 60_000, metrics, wake_within_ms=WITHIN_MS)
    lease = "node-a t"
    for shard in (1, 2, 3):
        assert await counted.acquire_lease(shard, lease, 60_000)
    assert await counted.renew_leases([1, 2, 3], lease, 60_000) == [True, True, True]
    await counted.claim_due_many([1, 2], lease, wall_ms(), 10, wall_ms() + 1_000)

    assert value(metrics, "fastdtm_store_calls_total", script="lease_renew") == 3
    assert value(metrics, "fastdtm_store_calls_total", script="claim_due") == 2
