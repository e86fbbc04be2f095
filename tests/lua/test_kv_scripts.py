"""`kv_create.lua`, `kv_update.lua`, `kv_delete.lua`: the KV entry hash and its category index change together.

Pins KEYS (entry hash `kv:<cat>:<k>`, index `kvidx:<cat>`), ARGV (k, v, expected version, now_ms) and the tagged
replies: create {"CREATED"} | {"EXISTS", version}; update {"OK", new_version} | {"VERSION_MISMATCH", version} |
{"NOT_FOUND"}; delete {"OK"} | {"VERSION_MISMATCH", version} | {"NOT_FOUND"}. Every refusal writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tests.lua.support import KEYS, T0, hash_of, tagged, zset
from tests.support.redis_client import Client, LuaScript

KV_CREATE: Final = LuaScript("kv_create")
KV_UPDATE: Final = LuaScript("kv_update")
KV_DELETE: Final = LuaScript("kv_delete")

CAT: Final = "topics"


async def create(client: Client, k: str, v: str, now: int = T0, cat: str = CAT) -> Any:
    return await KV_CREATE(client, [KEYS.kv(cat, k), KEYS.kv_index(cat)], [k, v, now])


async def update(client: Client, k: str, expected: int | str, v: str, now: int) -> Any:
    return await KV_UPDATE(client, [KEYS.kv(CAT, k)], [expected, v, now])


async def delete(client: Client, k: str, expected: int | str = "") -> Any:
    return await KV_DELETE(client, [KEYS.kv(CAT, k), KEYS.kv_index(CAT)], [k, expected])


@dataclass(frozen=True, slots=True)
class KVState:
    entry: dict[str, str]
    index: dict[str, float]


async def kv_state(client: Client, k: str, cat: str = CAT) -> KVState:
    return KVState(await hash_of(client, KEYS.kv(cat, k)), await zset(client, KEYS.kv_index(cat)))


def entry(v: str, version: int, created: int = T0, updated: int = T0) -> dict[str, str]:
    return {"v": v, "version": str(version), "create_time": str(created), "update_time": str(updated)}


async def test_create_writes_version_1_and_indexes_the_key(client: Client) -> None:
    assert tagged(await create(client, "orders", '["a"]')) == ["CREATED"]

    assert await kv_state(client, "orders") == KVState(entry('["a"]', 1), {"orders": 0})


async def test_create_of_an_existing_entry_answers_its_version_and_writes_nothing(client: Client) -> None:
    await create(client, "orders", "first")
    await update(client, "orders", 1, "second", T0 + 1)
    before = await kv_state(client, "orders")

    assert tagged(await create(client, "orders", "third", T0 + 2)) == ["EXISTS", "2"]

    assert await kv_state(client, "orders") == before


async def test_create_keeps_categories_apart(client: Client) -> None:
    await create(client, "k", "in topics")

    assert tagged(await create(client, "k", "in other", cat="other")) == ["CREATED"]

    assert (await kv_state(client, "k")).entry["v"] == "in topics"
    assert await kv_state(client, "k", "other") == KVState(entry("in other", 1), {"k": 0})


async def test_index_orders_keys_bytewise(client: Client) -> None:
    for k in ("b", "a:1", "B", "a", "é"):
        await create(client, k, "v")

    index = KEYS.kv_index(CAT)
    assert await client.zrangebylex(index, "-", "+") == ["B", "a", "a:1", "b", "é"]
    assert await client.zrangebylex(index, "(a", "+") == ["a:1", "b", "é"]


async def test_update_at_the_expected_version(client: Client) -> None:
    await create(client, "orders", "first")

    assert tagged(await update(client, "orders", 1, "second", T0 + 5)) == ["OK", "2"]
    assert tagged(await update(client, "orders", 2, "third", T0 + 9)) == ["OK", "3"]

    # create_time stays; the index is untouched by an update.
    assert await kv_state(client, "orders") == KVState(entry("third", 3, T0, T0 + 9), {"orders": 0})


async def test_update_at_another_version_answers_the_stored_one_and_writes_nothing(client: Client) -> None:
    await create(client, "orders", "first")
    await update(client, "orders", 1, "second", T0 + 5)
    before = await kv_state(client, "orders")

    for stale in (1, 3, "", "2.0"):
        assert tagged(await update(client, "orders", stale, "lost", T0 + 9)) == ["VERSION_MISMATCH", "2"]

    assert await kv_state(client, "orders") == before


async def test_update_of_a_missing_entry_creates_nothing(client: Client) -> None:
    assert tagged(await update(client, "orders", 1, "v", T0)) == ["NOT_FOUND"]

    assert await kv_state(client, "orders") == KVState({}, {})


async def test_delete_removes_the_entry_and_only_its_index_member(client: Client) -> None:
    await create(client, "a", "1")
    await create(client, "b", "2")

    assert tagged(await delete(client, "a")) == ["OK"]

    assert await kv_state(client, "a") == KVState({}, {"b": 0})
    assert (await kv_state(client, "b")).entry == entry("2", 1)


async def test_delete_at_the_expected_version(client: Client) -> None:
    await create(client, "a", "1")
    await update(client, "a", 1, "2", T0 + 1)

    assert tagged(await delete(client, "a", 2)) == ["OK"]

    assert await kv_state(client, "a") == KVState({}, {})


async def test_delete_at_another_version_writes_nothing(client: Client) -> None:
    await create(client, "a", "1")
    before = await kv_state(client, "a")

    assert tagged(await delete(client, "a", 7)) == ["VERSION_MISMATCH", "1"]

    assert await kv_state(client, "a") == before


async def test_delete_of_a_missing_entry(client: Client) -> None:
    await create(client, "b", "2")

    assert tagged(await delete(client, "a")) == ["NOT_FOUND"]
    assert tagged(await delete(client, "a", 1)) == ["NOT_FOUND"]

    assert await kv_state(client, "a") == KVState({}, {"b": 0})


async def test_a_deleted_entry_can_be_created_again_at_version_1(client: Client) -> None:
    await create(client, "a", "1")
    await update(client, "a", 1, "2", T0 + 1)
    await delete(client, "a")

    assert tagged(await create(client, "a", "new", T0 + 7)) == ["CREATED"]

    assert await kv_state(client, "a") == KVState(entry("new", 1, T0 + 7, T0 + 7), {"a": 0})
