"""Contract of register_branches (tcc, xa and workflow registerBranch): records appended in order while the
transaction is prepared and of the caller's type, a result registered with a branch stamped with `now_ms`, and
each refusal (NOT_FOUND, WRONG_TYPE, NOT_PREPARED, DUPLICATE) raised as the same exception in the same order of
checks, writing nothing. The twin of tests/lua/test_register_branch.py.
"""

from __future__ import annotations

import pytest

from fastdtm.errors import Refused, Stale, TransNotFound
from fastdtm.models import Branch
from fastdtm.states import BranchStatus, Op, TransStatus, TransType
from fastdtm.store.base import Change, Store
from tests.store.contract.support import Subject, as_loaded, snapshot, trans, wall_ms


def tcc_pair(branch_id: str, now: int) -> list[Branch]:
    return [
        Branch(branch_id, Op.CANCEL, "http://busi/cancel", '{"amount": 30}', now),
        Branch(branch_id, Op.CONFIRM, "http://busi/confirm", '{"amount": 30}', now),
    ]


async def prepared_tcc(store: Store, gid: str, now: int) -> None:
    await store.create(trans(gid, now, TransStatus.PREPARED, TransType.TCC), [])


async def appends_in_order_and_loads_back(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await prepared_tcc(store, "g1", now)

        await store.register_branches("g1", "tcc", tcc_pair("01", now), now + 1)
        await store.register_branches("g1", "tcc", tcc_pair("02", now), now + 2)
        # The same branch_id with another op is another branch.
        await store.register_branches("g1", "tcc", [Branch("01", Op.TRY, "", "", now)], now + 3)

        loaded = await store.load("g1")
        assert loaded is not None
        expected = [*tcc_pair("01", now), *tcc_pair("02", now), Branch("01", Op.TRY, "", "", now)]
        assert loaded[1] == [as_loaded(b) for b in expected]
        assert (loaded[0].status, loaded[0].update_ms) == ("prepared", now + 3)


async def a_registered_result_has_no_finish_time(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.PREPARED, TransType.WORKFLOW), [])
        done = Branch("01", "transfer", "", "in", now).with_status(BranchStatus.SUCCEED, now)
        failed = Branch("02", "refund", "", "in", now).with_status(BranchStatus.FAILED, now - 100)

        await store.register_branches("g1", "workflow", [done], now)
        await store.register_branches("g1", "workflow", [Branch("03", "x", "", "", now), failed], now + 7)

        loaded = await store.load("g1")
        assert loaded is not None
        # As DTM: the client reports a result, the coordinator finished nothing: no finish time, whatever the
        # branch carried (and no update time but its creation's).
        assert loaded[1] == [
            done.with_status(BranchStatus.SUCCEED, 0),
            as_loaded(Branch("03", "x", "", "", now)),
            failed.with_status(BranchStatus.FAILED, 0),
        ]


async def a_missing_transaction_is_not_found(subject: Subject) -> None:
    async with subject.open() as store:
        with pytest.raises(TransNotFound):
            await store.register_branches("g1", "tcc", tcc_pair("01", wall_ms()), wall_ms())

        assert await snapshot(store, "g1") == ([None], [])


async def another_type_is_refused_before_the_status(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await prepared_tcc(store, "g1", now)
        await store.create(trans("g2", now), [])  # a submitted saga: the type is checked first
        before = await snapshot(store, "g1", "g2")

        with pytest.raises(Refused, match="transaction 'g1' is a tcc, not a xa"):
            await store.register_branches("g1", "xa", tcc_pair("01", now), now)
        with pytest.raises(Refused, match="transaction 'g2' is a saga, not a tcc"):
            await store.register_branches("g2", "tcc", tcc_pair("01", now), now)

        assert await snapshot(store, "g1", "g2") == before


async def not_prepared_is_stale_with_the_status(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        for gid, status in (("g1", TransStatus.SUBMITTED), ("g2", TransStatus.ABORTING), ("g3", TransStatus.FAILED)):
            await store.create(trans(gid, now, status, TransType.TCC), [])
        before = await snapshot(store, "g1", "g2", "g3")

        for gid, current in (("g1", "submitted"), ("g2", "aborting"), ("g3", "failed")):
            with pytest.raises(Stale) as caught:
                await store.register_branches(gid, "tcc", tcc_pair("01", now), now + 1)
            assert caught.value.current == current

        assert await snapshot(store, "g1", "g2", "g3") == before


async def a_duplicate_is_refused_naming_the_branch(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await prepared_tcc(store, "g1", now)
        await store.register_branches("g1", "tcc", tcc_pair("01", now), now)
        before = await snapshot(store, "g1")

        # The new pair comes first: it must not be appended before the duplicate behind it is seen.
        with pytest.raises(Refused, match="branch 01:cancel of 'g1' is already registered"):
            await store.register_branches("g1", "tcc", [*tcc_pair("02", now), *tcc_pair("01", now)], now + 1)
        # A repeat inside one call is a duplicate too.
        with pytest.raises(Refused, match="branch 03:confirm of 'g1' is already registered"):
            await store.register_branches("g1", "tcc", [*tcc_pair("03", now), tcc_pair("03", now)[1]], now + 1)

        assert await snapshot(store, "g1") == before


async def the_status_is_checked_before_duplicates(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await prepared_tcc(store, "g1", now)
        await store.register_branches("g1", "tcc", tcc_pair("01", now), now)
        await store.transition(Change("g1", TransStatus.PREPARED, TransStatus.SUBMITTED, now, next_cron_ms=now))

        with pytest.raises(Stale) as caught:
            await store.register_branches("g1", "tcc", tcc_pair("01", now), now)

        assert caught.value.current == "submitted"


CHECKS = (
    appends_in_order_and_loads_back,
    a_registered_result_has_no_finish_time,
    a_missing_transaction_is_not_found,
    another_type_is_refused_before_the_status,
    not_prepared_is_stale_with_the_status,
    a_duplicate_is_refused_naming_the_branch,
    the_status_is_checked_before_duplicates,
)
