"""Contract of `/all`'s list_transactions: a cursor that walks every transaction exactly once, pages of at most
`limit` (a page that fills up carries a cursor, the last one ""; on Redis a filtered call also stops, with a
cursor, once it has read its budget), filters on status, type and an inclusive create time range that hold across
pages, and a clear refusal of a cursor the server never gave.
"""

from __future__ import annotations

import asyncio

import pytest

from fastdtm.errors import BadRequest
from fastdtm.states import TransStatus, TransType
from fastdtm.store.base import ListQuery
from fastdtm.store.redis import RedisStore
from tests.store.contract.support import Subject, listed, trans, wall_ms

STATUSES = (TransStatus.SUBMITTED, TransStatus.FAILED, TransStatus.PREPARED)


async def the_cursor_walks_everything_once(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        # Groups of three share a create time: the cursor must order and skip within a tie too.
        gids = [f"list-{i:02d}" for i in range(25)]
        for i, gid in enumerate(gids):
            await store.create(trans(gid, now + i // 3, STATUSES[i % 3]), [])

        pages: list[list[str]] = []
        position = ""
        while True:
            page = await store.list_transactions(ListQuery(limit=7, position=position))
            pages.append([t.gid for t in page.transactions])
            position = page.next_position
            if not position:
                break

        assert [len(p) for p in pages] == [7, 7, 7, 4]
        seen = [gid for p in pages for gid in p]
        assert sorted(seen) == gids


async def a_full_page_carries_a_cursor_then_the_walk_ends(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        for gid in ("a", "b", "c"):
            await store.create(trans(gid, now), [])

        full = await store.list_transactions(ListQuery(limit=3))
        assert len(full.transactions) == 3
        assert full.next_position != ""
        rest = await store.list_transactions(ListQuery(limit=3, position=full.next_position))
        assert (list(rest.transactions), rest.next_position) == ([], "")

        roomy = await store.list_transactions(ListQuery(limit=4))
        assert (len(roomy.transactions), roomy.next_position) == (3, "")


async def filters_hold_across_pages(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        for i in range(12):
            kind = TransType.MSG if i % 2 else TransType.SAGA
            await store.create(trans(f"f-{i:02d}", now + i, STATUSES[i % 3], kind), [])

        failed = await listed(store, ListQuery(limit=1, status="failed"))
        assert sorted(failed) == ["f-01", "f-04", "f-07", "f-10"]
        msgs = await listed(store, ListQuery(limit=2, trans_type="msg"))
        assert sorted(msgs) == [f"f-{i:02d}" for i in range(1, 12, 2)]
        # Both bounds are inclusive.
        window = await listed(store, ListQuery(limit=2, create_from_ms=now + 3, create_to_ms=now + 6))
        assert sorted(window) == ["f-03", "f-04", "f-05", "f-06"]
        both = await listed(store, ListQuery(limit=1, status="submitted", trans_type="saga", create_from_ms=now + 1))
        assert sorted(both) == ["f-06"]


async def a_filter_nothing_matches_is_read_in_bounded_calls(subject: Subject) -> None:
    """Redis cannot answer a status filter from its index: each call reads a bounded number of transactions and
    may return fewer than `limit` with a cursor (SQLite answers it in one query); the walk still ends, exactly."""
    now = wall_ms()
    async with subject.open() as store:
        count = 2_100  # past one call's read budget on Redis (2,000)
        await asyncio.gather(*(store.create(trans(f"n-{i:04d}", now + i), []) for i in range(count)))
        await store.create(trans("n-last", now + count, TransStatus.FAILED), [])
        calls, found, position = 0, [], ""
        while True:
            page = await store.list_transactions(ListQuery(limit=5, status="failed", position=position))
            calls += 1
            found += [t.gid for t in page.transactions]
            assert len(page.transactions) <= 5
            position = page.next_position
            if not position:
                break
        assert found == ["n-last"]
        if isinstance(store, RedisStore):
            assert calls == 2  # 2,000 read by the first call, the rest and the match by the second


async def listed_transactions_carry_their_schedule(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now, next_cron_ms=now + 42), [])

        page = await store.list_transactions(ListQuery())

        assert [(t.gid, t.next_cron_ms) for t in page.transactions] == [("g1", now + 42)]


async def a_cursor_the_server_never_gave_is_a_bad_request(subject: Subject) -> None:
    now = wall_ms()
    async with subject.open() as store:
        await store.create(trans("g1", now), [])
        for position in ("garbage", "-300:0:x", f"{store.shards}:0:g1", "0:-1:g1", "0:²:g1", "0:1:", "0:1:a b"):
            with pytest.raises(BadRequest, match="is not a cursor"):
                await store.list_transactions(ListQuery(position=position))


CHECKS = (
    the_cursor_walks_everything_once,
    a_filter_nothing_matches_is_read_in_bounded_calls,
    a_full_page_carries_a_cursor_then_the_walk_ends,
    filters_hold_across_pages,
    listed_transactions_carry_their_schedule,
    a_cursor_the_server_never_gave_is_a_bad_request,
)
