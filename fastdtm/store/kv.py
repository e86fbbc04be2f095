"""The KV store on Redis (DTM's `kv` table, which holds the msg topics): entries, version compare-and-set,
and scans in key order.

An entry `(cat, k)` is a hash (`v`, `version`, `create_time`, `update_time`) and each category has a
sorted set of its keys, all in the one KV shard (see `sharding`). Every write is one script that changes
the entry and the index together (`lua/kv_*.lua`); reads are plain commands. Redis errors become
`StoreUnavailable` here, through `store.redis.mapped`; a refused write is a `False`, not an exception,
because for a compare-and-set caller a lost race is an ordinary answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from mypy_extensions import mypyc_attr

from fastdtm.errors import Invalid
from fastdtm.sharding import Keys
from fastdtm.store.redis import Script, mapped
from fastdtm.store.redis_client import Commands
from fastdtm.store.resp import Arg

#: DTM's SQL schema bounds `cat` at 45 and `k` at 128 characters; so do we, on every store.
MAX_CAT: Final = 45
MAX_KEY: Final = 128
#: The KV's Lua scripts (fastdtm/lua/kv_*.lua).
KV_SCRIPTS: Final = ("kv_create", "kv_update", "kv_delete")
#: `entries` reads a category in pages of this size: bounded replies, few round trips.
PAGE: Final = 500


@dataclass(frozen=True, slots=True)
class KVEntry:
    cat: str
    k: str
    v: str
    #: 1 when created, + 1 on every update: the compare-and-set guard.
    version: int
    create_ms: int
    update_ms: int


def check_cat(cat: str) -> str:
    """A category is part of a key name: 1-45 printable characters and no `:` (which would make names ambiguous)."""
    if not cat:
        raise Invalid("cat is required.")
    if len(cat) > MAX_CAT or ":" in cat or not cat.isprintable():
        raise Invalid(f"cat {cat[:60]!r} is invalid: 1-{MAX_CAT} printable characters, no ':'.")
    return cat


def check_key(k: str, what: str = "key") -> str:
    if not k:
        raise Invalid(f"{what} is required.")
    if len(k) > MAX_KEY or not k.isprintable():
        raise Invalid(f"{what} {k[:140]!r} is invalid: 1-{MAX_KEY} printable characters.")
    return k


# Compiled (docs/compiled.md), yet a test subclasses it to race two writers.
@mypyc_attr(allow_interpreted_subclasses=True)
class RedisKV:
    """KV entries on a Redis client it does not own (the process's one client; the store closes it)."""

    def __init__(self, client: Commands, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._create = Script("kv_create", durable=True)
        self._update = Script("kv_update", durable=True)
        self._delete = Script("kv_delete", durable=True)

    async def get(self, cat: str, k: str) -> KVEntry | None:
        key = self.keys.kv(check_cat(cat), check_key(k))
        async with mapped():
            fields = await self.client.execute(key, "HGETALL", key)
        return _entry(cat, k, fields)

    async def create(self, cat: str, k: str, v: str, now_ms: int) -> bool:
        """Adds the entry at version 1; False if it exists already."""
        keys = [self.keys.kv(check_cat(cat), check_key(k)), self.keys.kv_index(cat)]
        reply = await self._run(self._create, keys, [k, v, now_ms])
        return bool(reply[0] == "CREATED")

    async def update(self, cat: str, k: str, v: str, expected_version: int, now_ms: int) -> bool:
        """Sets a new value if the stored version is still `expected_version`; False if not, or if it is gone."""
        keys = [self.keys.kv(check_cat(cat), check_key(k))]
        reply = await self._run(self._update, keys, [expected_version, v, now_ms])
        return bool(reply[0] == "OK")

    async def delete(self, cat: str, k: str, expected_version: int | None = None) -> bool:
        """Deletes the entry (only at `expected_version`, if given); False if it is absent or at another version."""
        keys = [self.keys.kv(check_cat(cat), check_key(k)), self.keys.kv_index(cat)]
        version: str | int = "" if expected_version is None else expected_version
        reply = await self._run(self._delete, keys, [k, version])
        return bool(reply[0] == "OK")

    async def scan(self, cat: str, position: str, limit: int) -> tuple[list[KVEntry], str]:
        """Up to `limit` entries after key `position` ("" = from the start), in key order, and the position to
        continue from ("" once nothing is left)."""
        if limit < 1:
            raise Invalid(f"limit must be at least 1, got {limit}.")
        low = f"({position}" if position else "-"
        index = self.keys.kv_index(check_cat(cat))
        async with mapped():
            found: list[str] = await self.client.execute(index, "ZRANGEBYLEX", index, low, "+", "LIMIT", 0, limit + 1)
            page = found[:limit]
            entries = await self._read(cat, page)
        # One key more than asked for tells whether another page exists, so the last page ends with "".
        return entries, page[-1] if len(found) > limit else ""

    async def entries(self, cat: str) -> list[KVEntry]:
        """Every entry of a category, in key order."""
        out: list[KVEntry] = []
        position = ""
        while True:
            page, position = await self.scan(cat, position, PAGE)
            out += page
            if not position:
                return out

    async def _read(self, cat: str, ks: Sequence[str]) -> list[KVEntry]:
        """The entries of keys taken from the index, in one round trip; one deleted meanwhile is left out."""
        if not ks:
            return []
        keys = [self.keys.kv(cat, k) for k in ks]
        # Issued together, so the client sends them as one pipeline.
        replies = await asyncio.gather(*(self.client.execute(key, "HGETALL", key) for key in keys))
        return [entry for k, fields in zip(ks, replies, strict=True) if (entry := _entry(cat, k, fields))]

    async def _run(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        async with mapped():
            return await script.run(self.client, keys, args)


def _entry(cat: str, k: str, flat: Sequence[str]) -> KVEntry | None:
    """An entry from HGETALL's flat reply (field, value, field, value, ...); None for a missing hash."""
    if not flat:
        return None
    fields: Mapping[str, str] = dict(zip(flat[::2], flat[1::2], strict=True))
    return KVEntry(
        cat=cat,
        k=k,
        v=fields["v"],
        version=int(fields["version"]),
        create_ms=int(fields["create_time"]),
        update_ms=int(fields["update_time"]),
    )
