"""`RedisKV`: how the kv scripts' replies become values (entries, True/False), scans in key order with a
position, categories kept apart, key names refused when they would be ambiguous, Redis errors mapped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from fastdtm.errors import Invalid, StoreUnavailable
from fastdtm.store import redis_client
from fastdtm.store.kv import PAGE, KVEntry, RedisKV
from tests.lua.support import KEYS, T0
from tests.support.redis_client import Client


@pytest.fixture
async def kv(redis_url: str) -> AsyncIterator[RedisKV]:
    client = redis_client.connect(redis_url)
    try:
        yield RedisKV(client, KEYS)
    finally:
        await client.aclose()


async def test_get_create_update_delete(kv: RedisKV) -> None:
    assert await kv.get("c", "k") is None
    assert await kv.create("c", "k", "v1", T0) is True
    assert await kv.get("c", "k") == KVEntry("c", "k", "v1", 1, T0, T0)

    assert await kv.create("c", "k", "again", T0 + 1) is False
    assert await kv.update("c", "k", "v2", 1, T0 + 2) is True
    assert await kv.update("c", "k", "lost", 1, T0 + 3) is False
    assert await kv.get("c", "k") == KVEntry("c", "k", "v2", 2, T0, T0 + 2)

    assert await kv.delete("c", "k", expected_version=1) is False
    assert await kv.delete("c", "k") is True
    assert await kv.delete("c", "k") is False
    assert await kv.update("c", "k", "v3", 2, T0 + 4) is False
    assert await kv.get("c", "k") is None


async def test_scan_pages_in_key_order(kv: RedisKV) -> None:
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


async def test_a_full_last_page_ends_the_scan(kv: RedisKV) -> None:
    for k in ("a", "b", "c", "d"):
        await kv.create("c", k, "v", T0)

    first, position = await kv.scan("c", "", 2)
    last, end = await kv.scan("c", position, 2)

    assert ([e.k for e in first], position) == (["a", "b"], "b")
    # No empty extra page: the scan looked one key ahead.
    assert ([e.k for e in last], end) == (["c", "d"], "")


async def test_scan_from_a_position_that_is_not_a_key(kv: RedisKV) -> None:
    for k in ("apple", "banana", "cherry"):
        await kv.create("c", k, "v", T0)

    entries, position = await kv.scan("c", "b", 10)

    assert [e.k for e in entries] == ["banana", "cherry"]
    assert position == ""


async def test_scan_of_an_empty_category_and_categories_apart(kv: RedisKV) -> None:
    await kv.create("one", "k", "in one", T0)
    await kv.create("two", "k", "in two", T0)

    assert await kv.scan("none", "", 10) == ([], "")
    assert [e.v for e in await kv.entries("one")] == ["in one"]
    assert [(e.cat, e.v) for e in await kv.entries("two")] == [("two", "in two")]


async def test_scan_skips_an_index_member_whose_entry_is_gone(kv: RedisKV, client: Client) -> None:
    # What a scan sees when a delete lands between its index read and its entry reads.
    await kv.create("c", "a", "v", T0)
    await kv.create("c", "c", "v", T0)
    await client.zadd(KEYS.kv_index("c"), {"b": 0})

    entries, position = await kv.scan("c", "", 2)

    assert [e.k for e in entries] == ["a"]
    assert position == "b"
    assert [e.k for e in await kv.entries("c")] == ["a", "c"]


async def test_entries_reads_past_one_page(kv: RedisKV) -> None:
    ks = [f"k{i:05d}" for i in range(PAGE * 2 + 1)]
    await asyncio.gather(*(kv.create("c", k, "v", T0) for k in ks))

    assert [e.k for e in await kv.entries("c")] == ks


async def test_keys_with_colons_and_unicode(kv: RedisKV) -> None:
    for k in ("a:b", "a", "订单"):
        await kv.create("c", k, k, T0)

    assert [(e.k, e.v) for e in await kv.entries("c")] == [("a", "a"), ("a:b", "a:b"), ("订单", "订单")]


@pytest.mark.parametrize(
    ("cat", "k"),
    [("", "k"), ("a:b", "k"), ("c" * 46, "k"), ("c\n", "k"), ("c", ""), ("c", "k" * 129), ("c", "k\x00")],
)
async def test_ambiguous_or_oversize_names_are_refused(kv: RedisKV, cat: str, k: str) -> None:
    with pytest.raises(Invalid):
        await kv.create(cat, k, "v", T0)
    with pytest.raises(Invalid):
        await kv.get(cat, k)


async def test_scan_limit_must_be_positive(kv: RedisKV) -> None:
    with pytest.raises(Invalid):
        await kv.scan("c", "", 0)


async def test_redis_errors_become_store_unavailable() -> None:
    # Nothing listens on port 1: every call fails to connect.
    client = redis_client.connect("redis://127.0.0.1:1/0")
    kv = RedisKV(client, KEYS)
    try:
        with pytest.raises(StoreUnavailable):
            await kv.get("c", "k")
        with pytest.raises(StoreUnavailable):
            await kv.create("c", "k", "v", T0)
        with pytest.raises(StoreUnavailable):
            await kv.scan("c", "", 10)
    finally:
        await client.aclose()
