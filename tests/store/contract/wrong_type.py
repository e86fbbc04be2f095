"""Contract of the type check every write a request makes carries: a gid is one transaction of one type, and a
prepare, submit, abort or workflow verdict of another type is refused (`Refused`) by `create`, `transition` (when the
change names a type) and `take_over`, writing nothing; and the bound on a transaction's branch records, which
`register_branches` keeps whatever registers them (models.MAX_BRANCHES). Issue 12's item 1: a workflow `submit`
must not finish a tcc without its second phase.
"""

from __future__ import annotations

import pytest

from fastdtm.errors import Refused
from fastdtm.models import MAX_BRANCHES, Branch
from fastdtm.states import Op, TransStatus, TransType
from fastdtm.store.base import Change
from tests.store.contract.support import Subject, saga_branches, snapshot, trans, wall_ms


async def a_create_of_another_type_is_refused(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.PREPARED, TransType.TCC), [])
        before = await snapshot(store, "g1")

        with pytest.raises(Refused, match="is a tcc, not a saga"):
            await store.create(trans("g1", now + 1), saga_branches(now, 1))
        with pytest.raises(Refused, match="is a tcc, not a msg"):
            await store.create(trans("g1", now + 1, TransStatus.PREPARED, TransType.MSG), [], holder="r1")

        assert await snapshot(store, "g1") == before
        assert await store.create(trans("g1", now + 2, TransStatus.PREPARED, TransType.TCC), []) == "prepared"


async def a_transition_naming_another_type_is_refused(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.PREPARED, TransType.TCC), [])
        before = await snapshot(store, "g1")
        verdict = Change("g1", TransStatus.PREPARED, TransStatus.SUCCEED, now + 1, trans_type=TransType.WORKFLOW)

        with pytest.raises(Refused, match="is a tcc, not a workflow"):
            await store.transition(verdict)

        assert await snapshot(store, "g1") == before
        await store.transition(Change("g1", TransStatus.PREPARED, TransStatus.FAILED, now + 2, trans_type="tcc"))


async def a_take_over_of_another_type_is_refused(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.PREPARED, TransType.TCC), [])
        before = await snapshot(store, "g1")
        submit = Change(
            "g1", TransStatus.PREPARED, TransStatus.SUBMITTED, now + 1, next_cron_ms=now + 90, trans_type="xa"
        )

        with pytest.raises(Refused, match="is a tcc, not a xa"):
            await store.take_over(submit, "r1")

        assert await snapshot(store, "g1") == before


async def a_transaction_has_at_most_max_branches(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, TransStatus.PREPARED, TransType.TCC), [])
        pairs = [
            Branch(f"{i:04d}", op, "http://busi/x", "{}", now)
            for i in range(MAX_BRANCHES // 2)
            for op in (Op.CANCEL, Op.CONFIRM)
        ]
        await store.register_branches("g1", "tcc", pairs, now + 1)
        before = await snapshot(store, "g1")

        with pytest.raises(Refused, match=f"at most {MAX_BRANCHES}"):
            await store.register_branches("g1", "tcc", [Branch("9999", Op.CANCEL, "http://busi/x", "", now)], now + 2)

        assert await snapshot(store, "g1") == before


CHECKS = (
    a_create_of_another_type_is_refused,
    a_transition_naming_another_type_is_refused,
    a_take_over_of_another_type_is_refused,
    a_transaction_has_at_most_max_branches,
)
