"""The embedded store's cron tables: shard leases, node heartbeats, and the fenced claim of due transactions.

The SQL twins of `lease_renew.lua`, `lease_release.lua`, `claim_due.lua` and of the plain Redis commands
around them (`SET NX PX`, `GET`, the node sorted set). A lease is a row that counts only until its
`expire_at`, measured on the store's clock (`wall_ms`), as a Redis `PX` key expires on the server's clock:
an expired lease reads as absent, is never renewed or released, and the next `acquire` replaces it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from fastdtm.store.sqlite_trans import Reply

#: At most this many expired transactions are deleted per claim, as claim_due.lua retires at most 256 entries.
RETIRE_BATCH: Final = 256


def acquire_lease(conn: sqlite3.Connection, shard: int, lease: str, ttl_ms: int, wall_ms: int) -> bool:
    """Take the lease if nobody holds it (an expired holder holds nothing), or renew it for its holder."""
    cursor = conn.execute(
        "INSERT INTO lease (shard, holder, expire_at) VALUES (?, ?, ?) "
        "ON CONFLICT (shard) DO UPDATE SET holder = excluded.holder, expire_at = excluded.expire_at "
        "WHERE lease.expire_at <= ? OR lease.holder = excluded.holder",
        (shard, lease, wall_ms + ttl_ms, wall_ms),
    )
    return cursor.rowcount == 1


def renew_leases(conn: sqlite3.Connection, shards: Sequence[int], lease: str, ttl_ms: int, wall_ms: int) -> list[bool]:
    """lease_renew.lua per shard: extend only a live lease with the matching token."""
    query = "UPDATE lease SET expire_at = ? WHERE shard = ? AND holder = ? AND expire_at > ?"
    return [conn.execute(query, (wall_ms + ttl_ms, shard, lease, wall_ms)).rowcount == 1 for shard in shards]


def release_lease(conn: sqlite3.Connection, shard: int, lease: str, wall_ms: int) -> bool:
    """lease_release.lua: delete only a live lease with the matching token."""
    query = "DELETE FROM lease WHERE shard = ? AND holder = ? AND expire_at > ?"
    return conn.execute(query, (shard, lease, wall_ms)).rowcount == 1


def lease_holder(conn: sqlite3.Connection, shard: int, wall_ms: int) -> str | None:
    row = conn.execute("SELECT holder FROM lease WHERE shard = ? AND expire_at > ?", (shard, wall_ms)).fetchone()
    return None if row is None else str(row[0])


def heartbeat(conn: sqlite3.Connection, node_id: str, now_ms: int, ttl_ms: int) -> list[str]:
    """The node set: announce `node_id` until now + ttl, drop the expired, list the live by expiry then id."""
    conn.execute(
        "INSERT INTO node (node_id, expire_at) VALUES (?, ?) ON CONFLICT (node_id) DO UPDATE SET expire_at = ?",
        (node_id, now_ms + ttl_ms, now_ms + ttl_ms),
    )
    conn.execute("DELETE FROM node WHERE expire_at <= ?", (now_ms,))
    return [str(node) for (node,) in conn.execute("SELECT node_id FROM node ORDER BY expire_at, node_id")]


def claim_due(
    conn: sqlite3.Connection, shard: int, lease: str, now_ms: int, limit: int, until_ms: int, wall_ms: int
) -> Reply:
    """claim_due.lua: if `lease` still holds the shard, retire expired data and take due gids up to `until_ms`.

    The one shard holds every transaction. Retiring deletes the rows (branches cascade): on Redis the TTL
    removes the data (by the server's clock) and the script the listing entry (by `now_ms`); here both are the
    row, so it goes once both times have passed: a claim "in the future" never deletes data that is still alive.
    """
    if lease_holder(conn, shard, wall_ms) != lease:
        return ("LEASE_LOST",)
    conn.execute(
        "DELETE FROM trans WHERE gid IN (SELECT gid FROM trans WHERE expire_at <= ? ORDER BY expire_at LIMIT ?)",
        (min(now_ms, wall_ms), RETIRE_BATCH),
    )
    due = [
        str(gid)
        for (gid,) in conn.execute(
            "SELECT gid FROM trans WHERE next_cron_time <= ? ORDER BY next_cron_time, gid LIMIT ?", (now_ms, limit)
        ).fetchall()
    ]
    conn.executemany("UPDATE trans SET next_cron_time = ? WHERE gid = ?", ((until_ms, gid) for gid in due))
    return ("OK", *due)
