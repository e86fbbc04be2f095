"""Contract of the console's store operations (lua/admin_*.lua and transition's attention): a round ending in an
error counts (`retries`, `failing_since`, the branch's last error) and enters the attention index, one without
clears it, finishing leaves it; `pause` parks the schedule, fences the round that held it and refuses what is
not retrying; `resume` makes it due; `mark_branch` records a result with the operator's mark, refusing what
does not match; the attention pages list each entry once, oldest first. The twins of
tests/lua/test_admin_scripts.py, so the embedded store behaves as Redis does.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from fastdtm.errors import BranchDecided, Fenced, Held, NoSuchBranch, NotPaused, Paused, Stale, TransNotFound
from fastdtm.models import PAUSED_MS
from fastdtm.notes import error_field, mark_value
from fastdtm.states import BranchStatus, Outcome, TransStatus
from fastdtm.store.base import BranchMarking, Change, Store
from tests.store.contract.support import Subject, saga_branches, schedule_of, snapshot, trans, wall_ms


def failed_round(gid: str, now: int, holder: str, attention: str) -> Change:
    """A round's last write: released, rescheduled, with the last error of branch 1 and the attention given."""
    name, value = error_field(1, now, Outcome.ERROR, "HTTP 500", "locked")
    return Change(
        gid,
        TransStatus.SUBMITTED,
        TransStatus.SUBMITTED,
        now,
        fields={name: value},
        next_cron_ms=now + 1_000,
        interval_ms=1_000,
        holder=holder,
        attention=attention,
    )


async def taken(store: Store, gid: str, now: int) -> str:
    holder = f"round-{now}"
    assert await store.take(gid, now, now + 5_000, holder) is not None
    return holder


def marking(gid: str, now: int, **changes: object) -> BranchMarking:
    base = BranchMarking(
        gid,
        1,
        "01",
        "action",
        TransStatus.SUBMITTED,
        BranchStatus.SUCCEED,
        mark_value("skip", "by hand", now),
        now,
        "operator-1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def failed_rounds_count_and_enter_the_attention_index(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 2))
        holder = await taken(store, "g1", now)
        await store.transition(failed_round("g1", now + 1, holder, str(now + 1)))
        await store.transition(failed_round("g1", now + 2, holder, str(now + 2)))
        loaded = await store.load_notes("g1")
        assert loaded is not None
        notes = loaded[2]
        assert (notes.retries, notes.failing_since_ms) == (2, now + 1)
        assert notes.errors[1].code == "HTTP 500" and notes.errors[1].detail == "locked"
        assert (await store.attention("", 10)).gids == [("g1", now + 1)]

        await store.transition(failed_round("g1", now + 3, holder, "-"))
        loaded = await store.load_notes("g1")
        assert loaded is not None and (loaded[2].retries, loaded[2].failing_since_ms) == (0, 0)
        assert loaded[2].errors[1].at_ms == now + 3  # the last error stays on its branch
        assert (await store.attention("", 10)).gids == []

        await store.transition(failed_round("g1", now + 4, holder, str(now + 4)))
        finish = Change("g1", TransStatus.SUBMITTED, TransStatus.FAILED, now + 5)
        await store.transition(finish)
        assert (await store.attention("", 10)).gids == []


async def pause_parks_fences_and_refuses(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        holder = await taken(store, "g1", now)
        with pytest.raises(Held):
            await store.pause("g1", now + 1, "operator-1")
        await store.transition(failed_round("g1", now + 2, holder, str(now + 2)))

        assert await store.pause("g1", now + 3, "operator-1") is True
        assert await schedule_of(store, "g1") == PAUSED_MS
        assert await store.pause("g1", now + 4, "operator-2") is False
        with pytest.raises(Fenced):
            await store.transition(failed_round("g1", now + 5, holder, ""))
        with pytest.raises(Paused):
            await store.take("g1", now + 6, now + 9_000, "round-2")
        with pytest.raises(Paused):
            await store.touch("g1", now + 6, now + 6)
        assert await store.reset_cron(now, now + 6, 100) == (0, False)
        assert await schedule_of(store, "g1") == PAUSED_MS
        assert (await store.attention("", 10)).gids == [("g1", now + 2)]

        await store.resume("g1", now + 7)
        assert await schedule_of(store, "g1") == now + 7
        assert (await store.attention("", 10)).gids == [("g1", now + 2)]  # its rounds were failing
        with pytest.raises(NotPaused):
            await store.resume("g1", now + 8)


async def pause_refuses_what_is_not_retrying_and_writes_nothing(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("p", now, TransStatus.PREPARED), [])
        await store.create(trans("s", now, TransStatus.SUCCEED), [])
        before = await snapshot(store, "p", "s")
        for gid, current in (("p", "prepared"), ("s", "succeed")):
            with pytest.raises(Stale) as caught:
                await store.pause(gid, now + 1, "operator-1")
            assert caught.value.current == current
        with pytest.raises(TransNotFound):
            await store.pause("absent", now + 1, "operator-1")
        with pytest.raises(TransNotFound):
            await store.resume("absent", now + 1)
        assert await snapshot(store, "p", "s") == before
        assert (await store.attention("", 10)).gids == []


async def a_healthy_resumed_transaction_leaves_the_index(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        await store.pause("g1", now, "operator-1")
        assert (await store.attention("", 10)).gids == [("g1", now)]
        await store.resume("g1", now + 1)
        assert (await store.attention("", 10)).gids == []


async def mark_records_the_result_and_the_reason(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 2))
        holder = await taken(store, "g1", now)
        with pytest.raises(Held):
            await store.mark_branch(marking("g1", now + 1))
        await store.transition(failed_round("g1", now + 2, holder, str(now + 2)))

        await store.mark_branch(marking("g1", now + 3))
        loaded = await store.load_notes("g1")
        assert loaded is not None
        trans_, branches, notes = loaded
        assert branches[1].status is BranchStatus.SUCCEED and branches[1].finish_ms == now + 3
        assert (notes.marks[1].action, notes.marks[1].reason) == ("skip", "by hand")
        assert trans_.next_cron_ms == now + 3  # due at once
        with pytest.raises(Fenced):
            await store.transition(failed_round("g1", now + 4, holder, ""))
        with pytest.raises(BranchDecided):
            await store.mark_branch(marking("g1", now + 5))


async def mark_refusals_write_nothing(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 2))
        before = await snapshot(store, "g1")
        with pytest.raises(Stale):
            await store.mark_branch(marking("g1", now, expected=TransStatus.ABORTING))
        for wrong in ({"index": 9}, {"branch_id": "02"}, {"op": "compensate"}):
            with pytest.raises(NoSuchBranch):
                await store.mark_branch(marking("g1", now, **wrong))
        with pytest.raises(TransNotFound):
            await store.mark_branch(marking("absent", now))
        assert await snapshot(store, "g1") == before


async def a_paused_transaction_stays_paused_when_marked(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), saga_branches(now, 1))
        await store.pause("g1", now, "operator-1")
        await store.mark_branch(marking("g1", now + 1, status=BranchStatus.FAILED))
        assert await schedule_of(store, "g1") == PAUSED_MS


async def attention_pages_list_each_once_oldest_first(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        gids = [f"att-{i}" for i in range(9)]
        for i, gid in enumerate(gids):
            await store.create(trans(gid, now), saga_branches(now, 1))
            # Three share each time: the cursor must pass ties in order.
            await store.pause(gid, now + i // 3, "operator")
        seen: list[tuple[str, int]] = []
        position = ""
        while True:
            page = await store.attention(position, 2)
            seen += page.gids
            position = page.next_position
            if not position:
                break
        assert sorted(seen, key=lambda e: (e[1], e[0])) == seen
        assert sorted(g for g, _ in seen) == sorted(gids)
        assert await store.unfinished_count() == len(gids)


CHECKS = (
    failed_rounds_count_and_enter_the_attention_index,
    pause_parks_fences_and_refuses,
    pause_refuses_what_is_not_retrying_and_writes_nothing,
    a_healthy_resumed_transaction_leaves_the_index,
    mark_records_the_result_and_the_reason,
    mark_refusals_write_nothing,
    a_paused_transaction_stays_paused_when_marked,
    attention_pages_list_each_once_oldest_first,
)
