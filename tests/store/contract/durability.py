"""Contract of durability: what one store wrote, the next store opened on the same backing state reads back
(transactions with branch progress and schedule, leases, KV entries)."""

from __future__ import annotations

from fastdtm.states import BranchStatus, TransStatus
from fastdtm.store.base import Change
from tests.store.contract.support import LEASE, Subject, listed, saga_branches, snapshot, trans, wall_ms


async def everything_survives_a_reopen(subject: Subject) -> None:
    now = wall_ms()
    branches = saga_branches(now, 2)
    async with subject.open() as store:
        await store.create(trans("g1", now), branches)
        done = branches[1].with_status(BranchStatus.SUCCEED, now + 1)
        await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.SUBMITTED, now + 1, {1: done}))
        await store.create(trans("g2", now, TransStatus.SUCCEED), [])
        assert await store.acquire_lease(0, LEASE, 60_000)
        assert await subject.kv(store).create("topics", "t", "[]", now)
        before = await snapshot(store, "g1", "g2")

    async with subject.open() as store:
        assert await snapshot(store, "g1", "g2") == before
        assert sorted(await listed(store)) == ["g1", "g2"]
        assert await store.lease_holder(0) == LEASE
        entry = await subject.kv(store).get("topics", "t")
        assert entry is not None
        assert (entry.v, entry.version) == ("[]", 1)


CHECKS = (everything_survives_a_reopen,)
