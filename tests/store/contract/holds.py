"""Contract of a round's hold on a transaction (lua/take.lua): `take` makes a new round the holder until a given
time and reads the transaction, refusing while another round's hold lasts; `take_over` (a prepared transaction's
submit or abort) does the same whatever the hold, by changing the status; a round's `create` holds it; a write
that names another holder than the stored one is `Fenced` and writes nothing; a released hold (a round's last
write) can be taken at once; `touch` never moves the schedule before a hold ends. The twins of
tests/lua/test_{take,take_over}.py and of the holder cases in tests/lua/test_transition.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from fastdtm.errors import Fenced, Held, Stale, TransNotFound
from fastdtm.states import BranchStatus, TransStatus, TransType
from fastdtm.store.base import Change, Store, Taken
from tests.store.contract.support import (
    LEASE,
    Subject,
    as_loaded,
    saga_branches,
    schedule_of,
    snapshot,
    trans,
    wall_ms,
)


def round_write(gid: str, now: int, holder: str, held_until: int, **changes: object) -> Change:
    """A round's write that changes nothing but its hold (as before a branch call once the fence has passed)."""
    change = Change(
        gid,
        TransStatus.SUBMITTED,
        TransStatus.SUBMITTED,
        now,
        next_cron_ms=held_until or now + 1_000,
        interval_ms=1_000,
        holder=holder,
        held_until_ms=held_until,
    )
    return replace(change, **changes)  # type: ignore[arg-type]


async def taken(store: Store, gid: str, now: int, until: int, holder: str) -> Taken:
    claim = await store.take(gid, now, until, holder)
    assert claim is not None, gid
    return claim


async def take_holds_reads_and_schedules(subject: Subject) -> None:
    now = wall_ms()
    branches = saga_branches(now, 2)
    async with subject.open() as store:
        await store.create(trans("g1", now), branches)

        claim = await taken(store, "g1", now, now + 5_000, "r1")

        assert claim.held_until_ms == now + 5_000
        assert (claim.trans, claim.branches) == await store.load("g1")
        assert claim.branches == [as_loaded(b) for b in branches]
        # The hold's end is the schedule too: a round that dies is resumed when its hold ends.
        assert claim.trans.next_cron_ms == now + 5_000 == await schedule_of(store, "g1")
        await store.transition(round_write("g1", now + 1, "r1", now + 6_000))


async def a_hold_refuses_another_take_until_it_ends(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        await taken(store, "g1", now, now + 5_000, "r1")
        before = await snapshot(store, "g1")

        with pytest.raises(Held) as caught:
            await store.take("g1", now + 4_999, now + 9_000, "r2")

        assert caught.value.until_ms == now + 5_000
        assert await snapshot(store, "g1") == before
        # Once it ended (the round paused or died), the next round takes it; only its writes count now.
        await taken(store, "g1", now + 5_000, now + 9_000, "r2")
        with pytest.raises(Fenced):
            await store.transition(round_write("g1", now + 5_001, "r1", now + 9_000))
        await store.transition(round_write("g1", now + 5_001, "r2", now + 9_000))


async def a_round_taken_over_is_fenced_and_writes_nothing(subject: Subject) -> None:
    now = wall_ms()
    branches = saga_branches(now, 1)
    async with subject.open() as store:
        await store.create(trans("g1", now), branches)
        await taken(store, "g1", now, now + 100, "r1")
        await taken(store, "g1", now + 200, now + 5_000, "r2")
        before = await snapshot(store, "g1")

        # The first round, late: the status is still the one it expects, but the transaction is not its own.
        result = {1: branches[1].with_status(BranchStatus.SUCCEED, now + 300)}
        late = round_write("g1", now + 300, "r1", now + 9_000, branches=result)
        with pytest.raises(Fenced) as caught:
            await store.transition(late)

        assert caught.value.current == "r2"
        assert await snapshot(store, "g1") == before
        await store.transition(replace(late, holder="r2"))  # the round that holds it writes
        loaded = await store.load("g1")
        assert loaded is not None and loaded[1][1].status is BranchStatus.SUCCEED


async def a_write_that_is_not_a_rounds_is_never_fenced(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        await taken(store, "g1", now, now + 5_000, "r1")

        # forceStop while a round holds it: the status change is what stops that round.
        await store.transition(Change("g1", TransStatus.SUBMITTED, TransStatus.FAILED, now + 1))

        with pytest.raises(Stale):
            await store.transition(round_write("g1", now + 2, "r1", now + 9_000))


async def a_rounds_create_holds(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        held = trans("g1", now, next_cron_ms=now + 5_000)
        assert await store.create(held, saga_branches(now, 1), holder="r1") is None
        assert await store.create(trans("g2", now, next_cron_ms=now + 5_000), saga_branches(now, 1)) is None

        with pytest.raises(Held):
            await store.take("g1", now + 1, now + 9_000, "r2")
        with pytest.raises(Fenced):
            await store.transition(round_write("g1", now + 1, "r2", now + 9_000))
        await store.transition(round_write("g1", now + 1, "r1", now + 9_000))
        # Created without a hold (a prepare): no round writes as its holder before a take.
        with pytest.raises(Fenced):
            await store.transition(round_write("g2", now + 1, "r1", now + 9_000))
        await taken(store, "g2", now + 1, now + 9_000, "r1")
        await store.transition(round_write("g2", now + 2, "r1", now + 9_000))


async def a_released_hold_is_taken_at_once(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        await taken(store, "g1", now, now + 5_000, "r1")

        # The round's last write: the hold released, the retry scheduled.
        await store.transition(round_write("g1", now + 10, "r1", 0, next_cron_ms=now + 20_000))

        assert await schedule_of(store, "g1") == now + 20_000
        assert (await taken(store, "g1", now + 11, now + 5_000, "r2")).held_until_ms == now + 5_000


async def take_of_a_finished_or_absent_one_is_none_and_unschedules_it(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.SUCCEED), saga_branches(now, 1))
        before = await snapshot(store, "g1")

        assert await store.take("g1", now, now + 5_000, "r1") is None
        assert await store.take("absent", now, now + 5_000, "r1") is None

        assert await snapshot(store, "g1") == before
        shard = subject.shard_of("absent")
        assert await store.acquire_lease(shard, LEASE, 60_000)
        assert "absent" not in (await store.claim_due(shard, LEASE, now + 10_000, 100, now + 20_000)).gids


async def touch_never_moves_the_schedule_before_a_hold_ends(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        await taken(store, "g1", now, now + 5_000, "r1")

        # resetNextCronTime while a round acts on it: looked at again when that round is done, not before.
        assert await store.touch("g1", now + 1, now + 1) is TransStatus.SUBMITTED
        assert await schedule_of(store, "g1") == now + 5_000
        await store.transition(round_write("g1", now + 2, "r1", 0, next_cron_ms=now + 30_000))
        assert await store.touch("g1", now + 3, now + 3) is TransStatus.SUBMITTED
        assert await schedule_of(store, "g1") == now + 3


async def take_over_submits_and_reads_back_whatever_the_hold(subject: Subject) -> None:
    now = wall_ms()
    branches = saga_branches(now, 2)
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.PREPARED, TransType.MSG, next_cron_ms=now + 100), branches)
        await taken(store, "g1", now, now + 5_000, "r1")  # the cron's round on the prepared msg (a check-back)
        change = Change(
            "g1",
            TransStatus.PREPARED,
            TransStatus.SUBMITTED,
            now + 5,
            fields={"custom_data": '{"delay":1}'},
            next_cron_ms=now + 500,
            interval_ms=400,
            trans_type=TransType.MSG,
        )

        claim = await store.take_over(change, "r2")

        assert claim.held_until_ms == now + 500
        assert (claim.trans, claim.branches) == await store.load("g1")
        stored = claim.trans
        assert (stored.status, stored.update_ms, stored.next_cron_ms) == ("submitted", now + 5, now + 500)
        assert (stored.custom_data, stored.next_cron_interval_ms) == ('{"delay":1}', 400)
        assert claim.branches == [as_loaded(b) for b in branches]
        with pytest.raises(Held):
            await store.take("g1", now + 499, now + 9_000, "r3")
        with pytest.raises(Stale):  # the check-back's round: its status is gone
            await store.transition(round_write("g1", now + 6, "r1", now + 9_000, expected=TransStatus.PREPARED))
        await store.transition(round_write("g1", now + 6, "r2", now + 9_000))


async def take_over_aborts_a_prepared_one(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.PREPARED, TransType.TCC), [])
        change = Change(
            "g1",
            TransStatus.PREPARED,
            TransStatus.ABORTING,
            now + 5,
            rollback_reason="no stock",
            next_cron_ms=now + 50,
            trans_type=TransType.TCC,
        )

        claim = await store.take_over(change, "r1")

        assert (claim.trans.status, claim.trans.rollback_reason) == ("aborting", "no stock")
        aborting = {"expected": TransStatus.ABORTING, "status": TransStatus.ABORTING}
        await store.transition(round_write("g1", now + 6, "r1", now + 90, **aborting))


async def take_over_refuses_anything_else_and_writes_nothing(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        before = await snapshot(store, "g1", "g2")
        change = Change(
            "g1",
            TransStatus.PREPARED,
            TransStatus.SUBMITTED,
            now + 5,
            next_cron_ms=now,
            interval_ms=1,
            trans_type="saga",
        )

        with pytest.raises(Stale) as caught:
            await store.take_over(change, "r1")
        with pytest.raises(TransNotFound):
            await store.take_over(replace(change, gid="g2"), "r1")
        with pytest.raises(ValueError):
            await store.take_over(replace(change, expected=TransStatus.SUBMITTED, status=TransStatus.SUCCEED), "r1")

        assert caught.value.current == "submitted"
        assert await snapshot(store, "g1", "g2") == before


CHECKS = (
    take_holds_reads_and_schedules,
    a_hold_refuses_another_take_until_it_ends,
    a_round_taken_over_is_fenced_and_writes_nothing,
    a_write_that_is_not_a_rounds_is_never_fenced,
    a_rounds_create_holds,
    a_released_hold_is_taken_at_once,
    take_of_a_finished_or_absent_one_is_none_and_unschedules_it,
    touch_never_moves_the_schedule_before_a_hold_ends,
    take_over_submits_and_reads_back_whatever_the_hold,
    take_over_aborts_a_prepared_one,
    take_over_refuses_anything_else_and_writes_nothing,
)
