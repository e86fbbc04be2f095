"""Shard tags spread the shards evenly over the cluster slots, and key names carry them."""

from __future__ import annotations

import collections

from redis.crc import key_slot

from fastdtm.cron import rendezvous_owner
from fastdtm.sharding import SLOTS, Keys, shard_tags, slot_of


def test_each_shard_tag_falls_in_its_own_slot_range() -> None:
    for shards in (1, 16, 256, 1024):
        tags = shard_tags(shards)
        assert len(tags) == shards == len(set(tags))
        for shard, tag in enumerate(tags):
            slot = key_slot(tag.encode())
            assert shard * SLOTS // shards <= slot < (shard + 1) * SLOTS // shards


def test_all_keys_of_a_transaction_share_one_slot() -> None:
    keys = Keys()
    gid = "some-gid-42"
    shard = keys.shard_of(gid)
    slots = {key_slot(k.encode()) for k in (*keys.of_trans(gid), keys.lease(shard))}
    assert len(slots) == 1


def test_gids_spread_over_shards() -> None:
    keys = Keys()
    counts = collections.Counter(keys.shard_of(f"gid-{i}") for i in range(25_600))
    assert len(counts) == 256
    assert max(counts.values()) < 3 * 100


def test_key_names() -> None:
    keys = Keys(prefix="p", shards=4)
    tag = keys.tags[keys.shard_of("g1")]
    assert keys.trans("g1") == f"p:{{{tag}}}:g:g1"
    assert keys.nodes() == "p:nodes"


def test_rendezvous_assignment_is_balanced_and_moves_little() -> None:
    nodes = ["a", "b", "c"]
    before = {s: rendezvous_owner(s, nodes) for s in range(256)}
    assert min(collections.Counter(before.values()).values()) > 256 // 6
    after = {s: rendezvous_owner(s, [*nodes, "d"]) for s in range(256)}
    moved = [s for s in range(256) if before[s] != after[s]]
    # Only shards won by the newcomer move.
    assert all(after[s] == "d" for s in moved)
    assert 256 // 8 < len(moved) < 256 // 2


def test_slot_of_agrees_with_redis_py_on_every_hash_tag_rule() -> None:
    cases = [
        "",
        "plain",
        "{a}x",
        "x{a}y",
        "{}x",
        "x{}",
        "{",
        "}{a}",
        "{a",
        "a}",
        "{{a}}",
        "{a}{b}",
        "é{ü}",
        "{gid-1}:g",
    ]
    for key in cases + [f"k{i}" for i in range(2000)]:
        assert slot_of(key) == key_slot(key.encode()), key
