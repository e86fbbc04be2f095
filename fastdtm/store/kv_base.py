"""The KV protocol: what `Topics` and the KV routes need from a KV store, whichever store holds it.

`store.kv.RedisKV` and `store.embedded_kv.EmbeddedKV` both satisfy it: entries `(cat, k)` with a version
that starts at 1 and grows by one per update (the compare-and-set guard), scans in key order with a
position, and refused writes answered with False (a lost race is an ordinary answer, not an error).
"""

from __future__ import annotations

from typing import Protocol

from fastdtm.store.kv import KVEntry


class KV(Protocol):
    async def get(self, cat: str, k: str) -> KVEntry | None: ...

    async def create(self, cat: str, k: str, v: str, now_ms: int) -> bool:
        """Adds the entry at version 1; False if it exists already."""
        ...

    async def update(self, cat: str, k: str, v: str, expected_version: int, now_ms: int) -> bool:
        """Sets a new value if the stored version is still `expected_version`; False if not, or if it is gone."""
        ...

    async def delete(self, cat: str, k: str, expected_version: int | None = None) -> bool:
        """Deletes the entry (only at `expected_version`, if given); False if absent or at another version."""
        ...

    async def scan(self, cat: str, position: str, limit: int) -> tuple[list[KVEntry], str]:
        """Up to `limit` entries after key `position`, in key order, and the position to go on from ("" at the end)."""
        ...

    async def entries(self, cat: str) -> list[KVEntry]:
        """Every entry of a category, in key order."""
        ...
