"""Contract of one transaction's life: create (insert if absent), load, transition (status compare-and-set with
branch progress and schedule, nothing written on refusal), touch, forget, and the expiry of finished data
(after which the gid is absent and may come back). The twins of tests/lua/test_{create,load,transition,touch}.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from fastdtm.errors import Stale, TransNotFound
from fastdtm.models import Branch, Options, Transaction
from fastdtm.states import BranchStatus, TransStatus, TransType
from fastdtm.store.base import Change
from tests.store.contract.support import (
    LEASE,
    Subject,
    as_loaded,
    eventually,
    listed,
    saga_branches,
    schedule_of,
    snapshot,
    trans,
    wall_ms,
)


async def create_then_exists_keeps_the_first(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        first = trans("g1", now)
        assert await store.create(first, saga_branches(now, 2)) is None
        before = await snapshot(store, "g1")

        # A repeated prepare or submit must not overwrite anything: it learns the stored status.
        again = replace(first, status=TransStatus.PREPARED, custom_data="x", next_cron_ms=now + 99)
        assert await store.create(again, saga_branches(now + 5, 4)) is TransStatus.SUBMITTED

        assert await snapshot(store, "g1") == before


async def load_round_trips_every_field(subject: Subject) -> None:
    now = wall_ms()
    options = Options(timeout_to_fail=3, retry_interval=7, branch_headers={"h": "v"}, concurrent=True, retry_limit=2)
    stored = Transaction(
        "g1",
        TransType.MSG,
        TransStatus.PREPARED,
        options,
        create_ms=now,
        update_ms=now + 1,
        custom_data='{"delay": 3}',
        query_prepared="http://busi/query",
        result="cmVzdWx0",
        next_cron_interval_ms=5_000,
        next_cron_ms=now + 10,
    )
    done = Branch("02", "action", "http://busi/a", "payload", now).with_status(BranchStatus.SUCCEED, now + 2)
    branches = [Branch("01", "action", "http://busi/b", '{"amount": 30}', now), done]
    async with subject.open() as store:
        await store.create(stored, branches)

        assert await store.load("g1") == (stored, [as_loaded(branches[0]), done])
        assert await store.load("absent") is None


async def created_finished_has_no_schedule(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        # A workflow or a msg can be finished by the request that creates it: it is never due.
        finished = replace(trans("g1", now, TransStatus.SUCCEED), next_cron_ms=now + 5)
        assert await store.create(finished, saga_branches(now, 1)) is None

        assert await schedule_of(store, "g1") == 0
        assert await store.touch("g1", now + 7, now + 1) is TransStatus.SUCCEED
        assert await schedule_of(store, "g1") == 0


async def transition_sets_status_fields_and_schedule(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.PREPARED), saga_branches(now, 1))

        await store.transition(
            Change(
                "g1",
                TransStatus.PREPARED,
                TransStatus.SUBMITTED,
                now + 3,
                fields={"custom_data": "x"},
                next_cron_ms=now + 50,
                interval_ms=40,
            )
        )

        loaded = await store.load("g1")
        assert loaded is not None
        expected = replace(
            trans("g1", now),
            update_ms=now + 3,
            custom_data="x",
            next_cron_ms=now + 50,
            next_cron_interval_ms=40,
        )
        assert loaded == (expected, [as_loaded(b) for b in saga_branches(now, 1)])


async def stale_names_the_current_status_and_writes_nothing(subject: Subject) -> None:
    now = wall_ms()
    branches = saga_branches(now, 1)
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.ABORTING), branches)
        before = await snapshot(store, "g1")

        # Everything a finishing transition can write is asked for: none of it may happen.
        change = Change(
            "g1",
            TransStatus.SUBMITTED,
            TransStatus.SUCCEED,
            now + 1,
            {1: branches[1].with_status(BranchStatus.SUCCEED, now + 1)},
            rollback_reason="r",
            fields={"result": "x"},
            next_cron_ms=now + 2,
        )
        with pytest.raises(Stale) as caught:
            await store.transition(change)

        assert caught.value.current == "aborting"
        assert await snapshot(store, "g1") == before


async def stale_even_when_the_new_status_is_the_current_one(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        before = await snapshot(store, "g1")

        # A writer that saw "prepared" loses even if someone else already moved it where it wanted to go.
        with pytest.raises(Stale) as caught:
            await store.transition(Change("g1", TransStatus.PREPARED, TransStatus.SUBMITTED, now, next_cron_ms=now))

        assert caught.value.current == "submitted"
        assert await snapshot(store, "g1") == before


async def transition_of_a_missing_gid_is_not_found(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        with pytest.raises(TransNotFound):
            await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.SUCCEED, now))

        assert await snapshot(store, "g1") == ([None], [])


async def same_status_records_branch_progress(subject: Subject) -> None:
    now = wall_ms()
    branches = saga_branches(now, 2)
    async with subject.open() as store:
        await store.create(trans("g1", now, next_cron_ms=now + 100), branches)
        done = branches[1].with_status(BranchStatus.SUCCEED, now + 9)

        await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.SUBMITTED, now + 9, {1: done}))

        loaded = await store.load("g1")
        assert loaded is not None
        assert loaded[1] == [as_loaded(branches[0]), done, *map(as_loaded, branches[2:])]
        # No new schedule asked for: the old one stays.
        assert (loaded[0].status, loaded[0].update_ms, loaded[0].next_cron_ms) == ("submitted", now + 9, now + 100)

        await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.SUBMITTED, now + 10, next_cron_ms=now))
        assert await schedule_of(store, "g1") == now


async def finishing_drops_the_schedule(subject: Subject) -> None:
    now = wall_ms()
    branches = saga_branches(now, 1)
    async with subject.open() as store:
        await store.create(trans("g1", now, next_cron_ms=now - 1), branches)
        shard = subject.shard_of("g1")
        assert await store.acquire_lease(shard, LEASE, 60_000)

        done = branches[1].with_status(BranchStatus.SUCCEED, now + 1)
        await store.transition(
            Change("g1", TransStatus.SUBMITTED, TransStatus.SUCCEED, now + 1, {1: done}, next_cron_ms=now)
        )

        loaded = await store.load("g1")
        assert loaded is not None
        assert (loaded[0].status, loaded[0].finish_ms, loaded[0].next_cron_ms) == ("succeed", now + 1, 0)
        # Finished: never due again, and touch has nothing to move.
        assert (await store.claim_due(shard, LEASE, now + 10**9, 100, now + 2 * 10**9)).gids == []
        assert await store.touch("g1", now + 5, now + 5) is TransStatus.SUCCEED
        assert await store.load("g1") == loaded


async def failing_records_the_rollback(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.ABORTING), [])

        await store.transition(Change("g1", TransStatus.ABORTING, TransStatus.FAILED, now + 4, rollback_reason="no"))

        loaded = await store.load("g1")
        assert loaded is not None
        assert (loaded[0].status, loaded[0].rollback_ms, loaded[0].rollback_reason) == ("failed", now + 4, "no")
        assert loaded[0].finish_ms == 0


async def touch_moves_an_unfinished_schedule(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.ABORTING), saga_branches(now, 1))

        assert await store.touch("g1", now + 5, now + 4) is TransStatus.ABORTING

        loaded = await store.load("g1")
        assert loaded is not None
        assert (loaded[0].next_cron_ms, loaded[0].update_ms) == (now + 5, now + 4)
        with pytest.raises(TransNotFound):
            await store.touch("absent", now + 5, now + 4)
        assert await store.load("absent") is None


async def forget_unschedules(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, next_cron_ms=now - 1), [])
        shard = subject.shard_of("g1")
        assert await store.acquire_lease(shard, LEASE, 60_000)

        await store.forget("g1")
        await store.forget("absent")  # nothing to forget is not an error

        assert await schedule_of(store, "g1") == 0
        assert (await store.claim_due(shard, LEASE, now, 100, now + 1_000)).gids == []
        # Not scheduled any more, so touch has nothing to move, as for a finished transaction.
        assert await store.touch("g1", now + 5, now) is TransStatus.SUBMITTED
        assert await schedule_of(store, "g1") == 0


async def finished_data_expires_and_the_gid_can_come_back(subject: Subject) -> None:
    async with subject.open(finished_ttl_ms=300) as store:
        now = wall_ms()
        await store.create(trans("g1", now), saga_branches(now, 2))
        await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.FAILED, now))
        assert await store.load("g1") is not None

        async def gone() -> bool:
            return await store.load("g1") is None

        await eventually(gone)
        assert await listed(store) == []
        with pytest.raises(TransNotFound):
            await store.touch("g1", now, now)
        # The gid is free again, before any claim retired the old data: nothing of it may come back.
        again = trans("g1", wall_ms(), TransStatus.PREPARED)
        assert await store.create(again, saga_branches(again.create_ms, 1)) is None
        # The cron's claim retires what expired, and must not take the new transaction for the old one.
        shard = subject.shard_of("g1")
        assert await store.acquire_lease(shard, LEASE, 60_000)
        assert (await store.claim_due(shard, LEASE, wall_ms(), 100, wall_ms() + 1_000)).gids == []

        assert await store.load("g1") == (again, [as_loaded(b) for b in saga_branches(again.create_ms, 1)])
        assert await listed(store) == ["g1"]


CHECKS = (
    create_then_exists_keeps_the_first,
    load_round_trips_every_field,
    created_finished_has_no_schedule,
    transition_sets_status_fields_and_schedule,
    stale_names_the_current_status_and_writes_nothing,
    stale_even_when_the_new_status_is_the_current_one,
    transition_of_a_missing_gid_is_not_found,
    same_status_records_branch_progress,
    finishing_drops_the_schedule,
    failing_records_the_rollback,
    touch_moves_an_unfinished_schedule,
    forget_unschedules,
    finished_data_expires_and_the_gid_can_come_back,
)
