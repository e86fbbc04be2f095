"""The stores the contract runs on: how to open each over its backing state, which shard a gid is in, and the
KV that lives next to it. The embedded store gets a file in the test's temporary directory; Redis a server the
suite started (flushed before the test by the fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastdtm.sharding import Keys
from fastdtm.store.base import Store
from fastdtm.store.embedded import EmbeddedStore
from fastdtm.store.embedded_kv import EmbeddedKV
from fastdtm.store.kv import RedisKV
from fastdtm.store.kv_base import KV
from fastdtm.store.redis import RedisStore
from fastdtm.store.redis_client import connect
from tests.store.contract.support import FINISHED_TTL_MS


@dataclass(frozen=True)
class EmbeddedSubject:
    path: Path

    @asynccontextmanager
    async def open(self, finished_ttl_ms: int = FINISHED_TTL_MS) -> AsyncIterator[Store]:
        store = await EmbeddedStore.open(str(self.path), finished_ttl_ms)
        try:
            yield store
        finally:
            await store.close()

    def shard_of(self, gid: str) -> int:
        return 0

    def kv(self, store: Store) -> KV:
        assert isinstance(store, EmbeddedStore)
        return EmbeddedKV(store)


@dataclass(frozen=True)
class RedisSubject:
    url: str
    keys: Keys = field(default_factory=Keys)

    @asynccontextmanager
    async def open(self, finished_ttl_ms: int = FINISHED_TTL_MS) -> AsyncIterator[Store]:
        store = RedisStore(connect(self.url), self.keys, finished_ttl_ms)
        try:
            yield store
        finally:
            await store.close()

    def shard_of(self, gid: str) -> int:
        return self.keys.shard_of(gid)

    def kv(self, store: Store) -> KV:
        assert isinstance(store, RedisStore)
        return RedisKV(store.client, store.keys)
