"""Contract of what the cron uses: the fenced claim of due transactions, token-owned shard leases that expire
by time, node heartbeats, and resetCronTime's reset_cron. The twins of tests/lua/test_{claim_due,lease_renew,
lease_release,reset_cron}.py.
"""

from __future__ import annotations

import pytest

from fastdtm.errors import LeaseLost
from fastdtm.store.base import Claimed, Store
from tests.store.contract.support import (
    LEASE,
    THEIRS,
    Subject,
    eventually,
    gids_in_shard,
    schedule_of,
    snapshot,
    trans,
    wall_ms,
)


async def scheduled(store: Store, schedule: dict[str, int], now: int) -> None:
    for gid, at in schedule.items():
        await store.create(trans(gid, now, next_cron_ms=at), [])


async def claim_takes_what_is_due_by_schedule(subject: Subject) -> None:
    now = wall_ms()
    until = now + 10_000
    a, b, c, d = gids_in_shard(subject, 0, 4)
    async with subject.open() as store:
        # Created out of order: the claim follows the schedule. `c` is due exactly now (inclusive).
        await scheduled(store, {a: now - 10, b: now + 1, c: now, d: now - 500}, now)
        assert await store.acquire_lease(0, LEASE, 60_000)

        assert (await store.claim_due(0, LEASE, now, 100, until)).gids == [d, a, c]

        assert [await schedule_of(store, gid) for gid in (a, b, c, d)] == [until, now + 1, until, until]
        # Pushed to `until`: a second claim at the same now gets nothing.
        assert (await store.claim_due(0, LEASE, now, 100, until)).gids == []


async def claim_takes_at_most_limit_earliest_first(subject: Subject) -> None:
    now = wall_ms()
    gids = gids_in_shard(subject, 0, 5)
    async with subject.open() as store:
        await scheduled(store, {gid: now - 100 + i for i, gid in enumerate(gids)}, now)
        assert await store.acquire_lease(0, LEASE, 60_000)

        assert (await store.claim_due(0, LEASE, now, 3, now + 1)).gids == gids[:3]

        # The ones left over keep their schedule: the next claim takes them first.
        assert [await schedule_of(store, gid) for gid in gids[3:]] == [now - 97, now - 96]
        assert (await store.claim_due(0, LEASE, now, 3, now + 1)).gids == gids[3:]


async def claim_without_the_lease_is_lease_lost_and_writes_nothing(subject: Subject) -> None:
    now = wall_ms()
    gids = gids_in_shard(subject, 0, 2)
    async with subject.open() as store:
        await scheduled(store, dict.fromkeys(gids, now - 1), now)
        before = await snapshot(store, *gids)

        with pytest.raises(LeaseLost):  # nobody holds it
            await store.claim_due(0, LEASE, now, 100, now + 1_000)
        assert await store.acquire_lease(0, THEIRS, 60_000)
        with pytest.raises(LeaseLost):  # another node holds it
            await store.claim_due(0, LEASE, now, 100, now + 1_000)
        with pytest.raises(LeaseLost):  # the same node id with an old token is another holder
            await store.claim_due(0, "node-b 0000000000000000", now, 100, now + 1_000)

        assert await snapshot(store, *gids) == before
        assert await store.lease_holder(0) == THEIRS


async def claim_with_an_expired_lease_is_lease_lost(subject: Subject) -> None:
    now = wall_ms()
    gids = gids_in_shard(subject, 0, 1)
    async with subject.open() as store:
        await scheduled(store, dict.fromkeys(gids, now - 1), now)
        assert await store.acquire_lease(0, LEASE, 50)

        async def expired() -> bool:
            return await store.lease_holder(0) is None

        await eventually(expired)
        with pytest.raises(LeaseLost):
            await store.claim_due(0, LEASE, wall_ms(), 100, wall_ms() + 1_000)
        assert await schedule_of(store, gids[0]) == now - 1


async def leases_are_owned_by_their_token(subject: Subject) -> None:
    async with subject.open() as store:
        assert await store.lease_holder(0) is None
        assert await store.acquire_lease(0, LEASE, 30_000)
        assert not await store.acquire_lease(0, THEIRS, 30_000)
        # Its holder's acquire succeeds (an earlier acquire that timed out may have run after all), and renews it.
        assert await store.acquire_lease(0, LEASE, 30_000)
        assert await store.lease_holder(0) == LEASE

        # A node that lost the lease must neither keep the new owner's alive nor delete it.
        assert await store.renew_leases([0], THEIRS, 60_000) == [False]
        assert not await store.release_lease(0, THEIRS)
        assert await store.lease_holder(0) == LEASE

        assert await store.release_lease(0, LEASE)
        assert not await store.release_lease(0, LEASE)
        assert await store.acquire_lease(0, THEIRS, 30_000)
        assert await store.lease_holder(0) == THEIRS


async def leases_expire_by_time_unless_renewed(subject: Subject) -> None:
    async with subject.open() as store:
        assert await store.acquire_lease(0, LEASE, 150)
        assert await store.acquire_lease(1, LEASE, 150)
        assert await store.renew_leases([0, 2], LEASE, 60_000) == [True, False]

        async def shard_1_expired() -> bool:
            return await store.lease_holder(1) is None

        await eventually(shard_1_expired)
        assert await store.lease_holder(0) == LEASE  # renewed: still held
        assert await store.renew_leases([1], LEASE, 60_000) == [False]  # an expired lease is not brought back
        assert not await store.release_lease(1, LEASE)
        assert await store.acquire_lease(1, THEIRS, 60_000)


async def renew_reports_each_shard(subject: Subject) -> None:
    async with subject.open() as store:
        assert await store.acquire_lease(0, LEASE, 1_000)
        assert await store.acquire_lease(1, THEIRS, 1_000)
        assert await store.acquire_lease(3, LEASE, 1_000)

        assert await store.renew_leases([0, 1, 2, 3], LEASE, 60_000) == [True, False, False, True]
        assert await store.renew_leases([], LEASE, 60_000) == []


async def heartbeat_lists_the_live_nodes(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        assert await store.heartbeat("node-a", now, 1_000) == ["node-a"]
        assert await store.heartbeat("node-b", now, 2_000) == ["node-a", "node-b"]
        # node-a's beat ran out at now + 1000: gone. Live nodes come by expiry.
        assert await store.heartbeat("node-c", now + 1_500, 1_000) == ["node-b", "node-c"]
        assert await store.heartbeat("node-b", now + 1_500, 2_000) == ["node-c", "node-b"]
        # A ttl of 0 is how a stopping node leaves.
        assert await store.heartbeat("node-b", now + 1_600, 0) == ["node-c"]


async def reset_cron_moves_only_what_is_after_the_threshold(subject: Subject) -> None:
    now = wall_ms()
    threshold = now + 60_000
    async with subject.open() as store:
        before, at, after, far = ("before", "at", "after", "far")
        await scheduled(
            store, {before: threshold - 1, at: threshold, after: threshold + 1, far: threshold + 10**9}, now
        )

        assert await store.reset_cron(threshold, now, 100) == (2, False)

        assert [await schedule_of(store, g) for g in (before, at, after, far)] == [threshold - 1, threshold, now, now]
        assert await store.reset_cron(threshold, now, 100) == (0, False)


async def reset_cron_reports_the_limit_hit(subject: Subject) -> None:
    now = wall_ms()
    threshold = now + 60_000
    gids = [f"far-{i}" for i in range(5)]
    async with subject.open() as store:
        await scheduled(store, {gid: threshold + 1 + i for i, gid in enumerate(gids)}, now)

        # DTM's has_remaining: the limit was reached, call again (even when nothing would be left).
        assert await store.reset_cron(threshold, now, 2) == (2, True)
        assert await store.reset_cron(threshold, now, 2) == (2, True)
        assert await store.reset_cron(threshold, now, 2) == (1, False)
        assert await store.reset_cron(threshold, now, 0) == (0, False)

        assert {await schedule_of(store, gid) for gid in gids} == {now}


async def claim_many_claims_every_held_shard_in_one_go(subject: Subject) -> None:
    # The cron's call: one round trip per tick on standalone Redis. Same answers as claim_due per
    # shard, and a shard whose lease is gone answers None without touching the others.
    now = wall_ms()
    async with subject.open() as store:
        shards = [0, store.shards - 1] if store.shards > 1 else [0]
        due = {shard: gids_in_shard(subject, shard, 2) for shard in shards}
        for gids in due.values():
            await scheduled(store, {gids[0]: now - 5, gids[1]: now + 60_000}, now)
        for shard in shards:
            assert await store.acquire_lease(shard, LEASE, 60_000)

        claims = await store.claim_due_many(shards, LEASE, now, 100, now + 1_000)

        assert gids_of(claims) == {shard: [gids[0]] for shard, gids in due.items()}
        assert gids_of(await store.claim_due_many(shards, LEASE, now, 100, now + 1_000)) == {s: [] for s in shards}
        assert await store.release_lease(shards[-1], LEASE)
        lost = await store.claim_due_many(shards, LEASE, now + 2_000, 100, now + 3_000)
        assert lost[shards[-1]] is None
        if len(shards) > 1:
            assert gids_of(lost)[shards[0]] == [due[shards[0]][0]]


def gids_of(claims: dict[int, Claimed | None]) -> dict[int, list[str] | None]:
    return {shard: None if claim is None else claim.gids for shard, claim in claims.items()}


async def claim_tells_no_later_than_the_next_schedule(subject: Subject) -> None:
    """`next_ms` is when the cron must look at the shard again: never after anything left in it is due (a store
    may say sooner: the embedded one says "now"), and after a claim the claimed ones count at `until`."""
    now = wall_ms()
    a, b = gids_in_shard(subject, 0, 2)
    async with subject.open() as store:
        assert await store.acquire_lease(0, LEASE, 60_000)
        empty = await store.claim_due(0, LEASE, now, 100, now + 1_000)
        assert empty.gids == [] and (empty.next_ms is None or empty.next_ms <= now)

        await scheduled(store, {a: now - 5, b: now + 30_000}, now)
        claimed = await store.claim_due(0, LEASE, now, 100, now + 20_000)
        assert claimed.gids == [a]
        assert claimed.next_ms is not None and claimed.next_ms <= now + 20_000

        later = await store.claim_due(0, LEASE, now + 25_000, 100, now + 40_000)
        assert later.gids == [a]
        assert later.next_ms is not None and later.next_ms <= now + 30_000


CHECKS = (
    claim_many_claims_every_held_shard_in_one_go,
    claim_tells_no_later_than_the_next_schedule,
    claim_takes_what_is_due_by_schedule,
    claim_takes_at_most_limit_earliest_first,
    claim_without_the_lease_is_lease_lost_and_writes_nothing,
    claim_with_an_expired_lease_is_lease_lost,
    leases_are_owned_by_their_token,
    leases_expire_by_time_unless_renewed,
    renew_reports_each_shard,
    heartbeat_lists_the_live_nodes,
    reset_cron_moves_only_what_is_after_the_threshold,
    reset_cron_reports_the_limit_hit,
)
