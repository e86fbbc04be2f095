"""Contract of the KV store next to a transaction store (DTM's `kv` table): version compare-and-set, scans in
key order with a position, categories apart, name checks, and `Topics` working on it unchanged. The twin of
tests/lua/test_kv_store.py, plus topics end to end.
"""

from __future__ import annotations

from typing import cast

import pytest

from fastdtm.clock import SystemClock
from fastdtm.errors import Conflict, Invalid, NotFound
from fastdtm.store.kv import PAGE, KVEntry, RedisKV
from fastdtm.topics import Topics
from tests.store.contract.support import Subject

T0 = 1_700_000_000_000


async def get_create_update_delete(subject: Subject) -> None:
    async with subject.open() as store:
        kv = subject.kv(store)
        assert await kv.get("c", "k") is None
        assert await kv.create("c", "k", "v1", T0) is True
        assert await kv.get("c", "k") == KVEntry("c", "k", "v1", 1, T0, T0)

        assert await kv.create("c", "k", "again", T0 + 1) is False
        assert await kv.update("c", "k", "v2", 1, T0 + 2) is True
        assert await kv.update("c", "k", "lost", 1, T0 + 3) is False
        assert await kv.get("c", "k") == KVEntry("c", "k", "v2", 2, T0, T0 + 2)

        assert await kv.delete("c", "k", expected_version=1) is False
        assert await kv.delete("c", "k", expected_version=2) is True
        assert await kv.delete("c", "k") is False
        assert await kv.update("c", "k", "v3", 2, T0 + 4) is False
        assert await kv.get("c", "k") is None


async def scans_page_in_key_order(subject: Subject) -> None:
    async with subject.open() as store:
        kv = subject.kv(store)
        for k in ("e", "b", "d", "a", "c"):
            await kv.create("c", k, f"v-{k}", T0)

        pages = []
        position = ""
        while True:
            entries, position = await kv.scan("c", position, 2)
            pages.append([e.k for e in entries])
            if not position:
                break

        assert pages == [["a", "b"], ["c", "d"], ["e"]]
        assert [e.v for e in (await kv.scan("c", "", 10))[0]] == ["v-a", "v-b", "v-c", "v-d", "v-e"]
        # A full last page ends the scan: the scan looked one key ahead.
        last, end = await kv.scan("c", "c", 2)
        assert ([e.k for e in last], end) == (["d", "e"], "")
        # A position need not be a key.
        assert [e.k for e in (await kv.scan("c", "bb", 10))[0]] == ["c", "d", "e"]


async def categories_stay_apart(subject: Subject) -> None:
    async with subject.open() as store:
        kv = subject.kv(store)
        await kv.create("one", "k", "in one", T0)
        await kv.create("two", "k", "in two", T0)

        assert await kv.scan("none", "", 10) == ([], "")
        assert [e.v for e in await kv.entries("one")] == ["in one"]
        assert [(e.cat, e.v) for e in await kv.entries("two")] == [("two", "in two")]


async def entries_read_past_one_page_in_byte_order(subject: Subject) -> None:
    async with subject.open() as store:
        kv = subject.kv(store)
        ks = [f"k{i:05d}" for i in range(PAGE + 1)]
        for k in ks:
            await kv.create("c", k, "v", T0)
        for k in ("a:b", "a", "订单", "Z"):
            await kv.create("u", k, k, T0)

        assert [e.k for e in await kv.entries("c")] == ks
        assert [e.k for e in await kv.entries("u")] == ["Z", "a", "a:b", "订单"]


async def bad_names_and_limits_are_refused(subject: Subject) -> None:
    async with subject.open() as store:
        kv = subject.kv(store)
        for cat, k in (("", "k"), ("a:b", "k"), ("c" * 46, "k"), ("c\n", "k"), ("c", ""), ("c", "k" * 129)):
            with pytest.raises(Invalid):
                await kv.create(cat, k, "v", T0)
            with pytest.raises(Invalid):
                await kv.get(cat, k)
        with pytest.raises(Invalid):
            await kv.scan("c", "", 0)
        assert await kv.scan("c", "", 10) == ([], "")


async def topics_work_on_it(subject: Subject) -> None:
    async with subject.open() as store:
        # cast: Topics is typed against RedisKV until it takes the `KV` protocol (fastdtm.store.kv_base).
        topics = Topics(cast(RedisKV, subject.kv(store)), SystemClock())
        await topics.subscribe("orders", "http://a/x", "first")
        await topics.subscribe("orders", "http://b/y")
        with pytest.raises(Conflict):
            await topics.subscribe("orders", "http://a/x")
        assert await topics.subscribers("orders") == ["http://a/x", "http://b/y"]

        await topics.unsubscribe("orders", "http://a/x")
        assert await topics.subscribers("orders") == ["http://b/y"]
        entry = await subject.kv(store).get("topics", "orders")
        assert entry is not None
        assert (entry.v, entry.version) == ('[{"url":"http://b/y","remark":""}]', 3)

        await topics.delete("orders")
        assert await topics.subscribers("orders") == []
        with pytest.raises(NotFound):
            await topics.delete("orders")


CHECKS = (
    get_create_update_delete,
    scans_page_in_key_order,
    categories_stay_apart,
    entries_read_past_one_page_in_byte_order,
    bad_names_and_limits_are_refused,
    topics_work_on_it,
)
