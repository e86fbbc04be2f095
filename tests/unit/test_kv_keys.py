"""The KV shard's key names: one slot for an entry and its index, a tag no transaction shard can have."""

from __future__ import annotations

from redis.crc import key_slot

from fastdtm.sharding import Keys, shard_tags


def test_kv_key_names() -> None:
    keys = Keys(prefix="p", shards=4)
    assert keys.kv("topics", "orders") == "p:{KV}:kv:topics:orders"
    assert keys.kv_index("topics") == "p:{KV}:kvidx:topics"
    assert keys.kv_tag() == "KV"


def test_every_kv_key_shares_one_slot() -> None:
    keys = Keys()
    names = [keys.kv("topics", "a"), keys.kv("other", "b:c{d}"), keys.kv_index("topics"), keys.kv_index("x")]
    assert {key_slot(n.encode()) for n in names} == {key_slot(keys.kv_tag().encode())}


def test_the_kv_tag_is_never_a_shard_tag() -> None:
    for shards in (1, 16, 256, 1024, 4096):
        assert Keys().kv_tag() not in shard_tags(shards)
