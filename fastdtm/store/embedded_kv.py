"""The KV store on the embedded store's SQLite file (DTM's `kv` table, which holds the msg topics).

The twin of `store.kv.RedisKV`: the same `KVEntry`, the same name checks (`check_cat`, `check_key`), the
same version compare-and-set, the same scans in key order (SQLite's BINARY collation compares UTF-8 bytes,
as ZRANGEBYLEX does), and a refused write answered with False. It runs on the store's `Database`: the
same file, the same thread, so a KV write is one SQL transaction queued with the store's own.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from fastdtm.errors import Invalid
from fastdtm.store.embedded import EmbeddedStore
from fastdtm.store.kv import KVEntry, check_cat, check_key

_COLUMNS: Final = "cat, k, v, version, create_time, update_time"


class EmbeddedKV:
    """KV entries in an `EmbeddedStore`'s file; the store owns the file and closes it."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.db = store.db

    async def get(self, cat: str, k: str) -> KVEntry | None:
        return await self.db.read(_get, check_cat(cat), check_key(k))

    async def create(self, cat: str, k: str, v: str, now_ms: int) -> bool:
        """Adds the entry at version 1; False if it exists already."""
        return await self.db.write(_create, check_cat(cat), check_key(k), v, now_ms)

    async def update(self, cat: str, k: str, v: str, expected_version: int, now_ms: int) -> bool:
        """Sets a new value if the stored version is still `expected_version`; False if not, or if it is gone."""
        return await self.db.write(_update, check_cat(cat), check_key(k), v, expected_version, now_ms)

    async def delete(self, cat: str, k: str, expected_version: int | None = None) -> bool:
        """Deletes the entry (only at `expected_version`, if given); False if it is absent or at another version."""
        return await self.db.write(_delete, check_cat(cat), check_key(k), expected_version)

    async def scan(self, cat: str, position: str, limit: int) -> tuple[list[KVEntry], str]:
        """Up to `limit` entries after key `position` ("" = from the start), in key order, and the position to
        continue from ("" once nothing is left)."""
        if limit < 1:
            raise Invalid(f"limit must be at least 1, got {limit}.")
        found = await self.db.read(_scan, check_cat(cat), position, limit + 1)
        # One key more than asked for tells whether another page exists, so the last page ends with "".
        page = found[:limit]
        return page, page[-1].k if len(found) > limit else ""

    async def entries(self, cat: str) -> list[KVEntry]:
        """Every entry of a category, in key order (one read: no page boundaries to race with)."""
        return await self.db.read(_scan, check_cat(cat), "", -1)


def _get(conn: sqlite3.Connection, cat: str, k: str) -> KVEntry | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM kv WHERE cat = ? AND k = ?", (cat, k)).fetchone()
    return None if row is None else KVEntry(*row)


def _create(conn: sqlite3.Connection, cat: str, k: str, v: str, now_ms: int) -> bool:
    """kv_create.lua: version 1, only if absent."""
    cursor = conn.execute(
        f"INSERT INTO kv ({_COLUMNS}) VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (cat, k) DO NOTHING",
        (cat, k, v, now_ms, now_ms),
    )
    return cursor.rowcount == 1


def _update(conn: sqlite3.Connection, cat: str, k: str, v: str, expected_version: int, now_ms: int) -> bool:
    """kv_update.lua: compare-and-set on the version."""
    cursor = conn.execute(
        "UPDATE kv SET v = ?, version = version + 1, update_time = ? WHERE cat = ? AND k = ? AND version = ?",
        (v, now_ms, cat, k, expected_version),
    )
    return cursor.rowcount == 1


def _delete(conn: sqlite3.Connection, cat: str, k: str, expected_version: int | None) -> bool:
    """kv_delete.lua: delete, optionally only at a version."""
    if expected_version is None:
        cursor = conn.execute("DELETE FROM kv WHERE cat = ? AND k = ?", (cat, k))
    else:
        cursor = conn.execute("DELETE FROM kv WHERE cat = ? AND k = ? AND version = ?", (cat, k, expected_version))
    return cursor.rowcount == 1


def _scan(conn: sqlite3.Connection, cat: str, position: str, limit: int) -> list[KVEntry]:
    """Entries of `cat` with a key after `position`, in key order; a negative limit reads them all."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM kv WHERE cat = ? AND k > ? ORDER BY k LIMIT ?", (cat, position, limit)
    ).fetchall()
    return [KVEntry(*row) for row in rows]
