"""The embedded store: the `Store` contract on one SQLite file, for one node that needs nothing else installed.

`fastdtm serve` with no Redis runs on it (`sqlite:///./fastdtm.db`). Each method is the twin of the
`RedisStore` method of the same name: one SQL transaction (`store/sqlite_trans.py`, `store/sqlite_cron.py`)
with the same checks and the same tagged reply as the Lua script, mapped to the same exceptions here.
The database work runs on the store's own thread (`store/sqlite_db.py`), never on the event loop.

Differences from Redis, by design: one shard (one node polls everything, so there is nothing to
spread); a second process on the same file is refused (`StoreInUse`); create refuses a branch list that
repeats a (branch_id, op) (`Refused`), which Redis would store twice; register_branch refuses a
(branch_id, op) the transaction already has from its creation, not only one registered before.
Expiry of finished data and leases is measured on `clock`, as Redis measures TTLs on its own clock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final, Self

from fastdtm.clock import Clock, SystemClock
from fastdtm.errors import LeaseLost, Refused
from fastdtm.metrics import Metrics
from fastdtm.models import MAX_BRANCHES, Branch, Transaction
from fastdtm.notes import Notes
from fastdtm.states import HTTP, TERMINAL, TransStatus
from fastdtm.store import sqlite_admin as admin, sqlite_cron as cron, sqlite_trans as sql
from fastdtm.store.base import (
    AttentionPage,
    BranchMarking,
    Change,
    Claimed,
    ListPage,
    ListQuery,
    Taken,
    parse_attention_position,
    parse_position,
)
from fastdtm.store.replies import raise_for
from fastdtm.store.sqlite_db import Database, StoreInUse

__all__ = ["EmbeddedStore", "StoreInUse", "parse_sqlite_url"]

SCHEME: Final = "sqlite:///"


def parse_sqlite_url(url: str) -> str:
    """The file path of `sqlite:///relative/path.db` or `sqlite:////absolute/path.db` (SQLAlchemy's form)."""
    if not url.startswith(SCHEME):
        raise ValueError(
            f"store URL {url!r} is not a sqlite URL: write sqlite:///relative/path.db or sqlite:////absolute/path.db."
        )
    path = url.removeprefix(SCHEME)
    if not path or path.endswith("/"):
        raise ValueError(
            f"store URL {url!r} names no file: write sqlite:///fastdtm.db or sqlite:////var/lib/fastdtm.db."
        )
    if path == ":memory:" or "?" in path or "#" in path:
        raise ValueError(f"store URL {url!r}: the embedded store needs a plain file path (no :memory:, no ?options).")
    return path


class EmbeddedStore:
    """The Store protocol on SQLite; build it with `await EmbeddedStore.open(path, finished_ttl_ms)`."""

    def __init__(self, db: Database, finished_ttl_ms: int, clock: Clock, metrics: Metrics | None = None) -> None:
        self.db = db
        self.shards = 1
        self.finished_ttl_ms = finished_ttl_ms
        self.clock = clock
        self.metrics = metrics

    @classmethod
    async def open(
        cls, path: str, finished_ttl_ms: int, *, clock: Clock | None = None, metrics: Metrics | None = None
    ) -> Self:
        """Open (creating if needed) the store at `path`; raises StoreInUse if another process has it."""
        return cls(await Database.open(path), finished_ttl_ms, clock or SystemClock(), metrics)

    def _count(self, name: str) -> None:
        if self.metrics is not None:
            self.metrics.store_call(name)

    async def create(self, trans: Transaction, branches: Sequence[Branch], *, holder: str = "") -> TransStatus | None:
        self._count("create")
        expire_at = trans.update_ms + self.finished_ttl_ms if trans.status in TERMINAL else None
        reply = await self.db.write(sql.create, trans, branches, expire_at, self.clock.now_ms(), holder)
        if reply[0] == "DUPLICATE":
            raise Refused(f"branch {reply[1].removeprefix('u:')} appears twice in '{trans.gid}' (UniqueKeyConflict)")
        if reply[0] == "CREATED":
            return None
        raise_for(reply, trans.gid, trans_type=trans.trans_type)
        return TransStatus(reply[1])

    async def load(self, gid: str) -> tuple[Transaction, list[Branch]] | None:
        self._count("load")
        return await self.db.read(sql.load, gid, self.clock.now_ms())

    async def transition(self, change: Change) -> None:
        self._count("transition")
        expire_at = change.now_ms + self.finished_ttl_ms if change.status in TERMINAL else None
        reply = await self.db.write(sql.transition, change, expire_at, self.clock.now_ms())
        raise_for(reply, change.gid, trans_type=change.trans_type)

    async def take(self, gid: str, now_ms: int, held_until_ms: int, holder: str) -> Taken | None:
        self._count("take")
        return await self.db.write(sql.take, gid, now_ms, held_until_ms, holder, self.clock.now_ms())

    async def take_over(self, change: Change, holder: str) -> Taken:
        self._count("take_over")
        return await self.db.write(sql.take_over, change, holder, self.clock.now_ms())

    async def register_branches(
        self, gid: str, trans_type: str, branches: Sequence[Branch], now_ms: int, protocol: str = HTTP
    ) -> None:
        self._count("register_branch")
        reply = await self.db.write(
            sql.register_branch, gid, trans_type, branches, now_ms, self.clock.now_ms(), protocol
        )
        raise_for(reply, gid, trans_type=trans_type, limit=MAX_BRANCHES)

    async def touch(self, gid: str, next_cron_ms: int, now_ms: int) -> TransStatus:
        self._count("touch")
        reply = await self.db.write(sql.touch, gid, next_cron_ms, now_ms, self.clock.now_ms())
        raise_for(reply, gid)
        return TransStatus(reply[1])

    async def reset_cron(self, threshold_ms: int, now_ms: int, limit: int) -> tuple[int, bool]:
        if limit <= 0:
            return 0, False
        self._count("reset_cron")
        moved, _ = await self.db.write(sql.reset_cron, threshold_ms, now_ms, limit)
        # As RedisStore: True means "the limit was reached, call again", not a promise that more are left.
        return moved, moved >= limit

    async def forget(self, gid: str) -> None:
        self._count("forget")
        await self.db.write(sql.forget, gid)

    async def claim_due(self, shard: int, lease: str, now_ms: int, limit: int, until_ms: int) -> Claimed:
        self._count("claim_due")
        reply = await self.db.write(cron.claim_due, shard, lease, now_ms, limit, until_ms, self.clock.now_ms())
        raise_for(reply, "", shard=shard)
        # Due again at once: a claim here is one indexed query in this process (one shard, no network), so the
        # cron looks every tick and no write needs to wake it.
        return Claimed(list(reply[1:]), now_ms)

    async def claim_due_many(
        self, shards: Sequence[int], lease: str, now_ms: int, limit: int, until_ms: int
    ) -> dict[int, Claimed | None]:
        claims: dict[int, Claimed | None] = {}
        for shard in shards:
            try:
                claims[shard] = await self.claim_due(shard, lease, now_ms, limit, until_ms)
            except LeaseLost:
                claims[shard] = None
        return claims

    async def wake_counts(self, shards: Sequence[int]) -> list[int]:
        return [0] * len(shards)  # never woken: every claim says "at once"

    async def acquire_lease(self, shard: int, lease: str, ttl_ms: int) -> bool:
        self._count("lease_acquire")
        return await self.db.write(cron.acquire_lease, shard, lease, ttl_ms, self.clock.now_ms())

    async def renew_leases(self, shards: Sequence[int], lease: str, ttl_ms: int) -> list[bool]:
        self._count("lease_renew")
        return await self.db.write(cron.renew_leases, shards, lease, ttl_ms, self.clock.now_ms())

    async def release_lease(self, shard: int, lease: str) -> bool:
        self._count("lease_release")
        return await self.db.write(cron.release_lease, shard, lease, self.clock.now_ms())

    async def lease_holder(self, shard: int) -> str | None:
        return await self.db.read(cron.lease_holder, shard, self.clock.now_ms())

    async def heartbeat(self, node_id: str, now_ms: int, ttl_ms: int) -> list[str]:
        return await self.db.write(cron.heartbeat, node_id, now_ms, ttl_ms)

    async def load_notes(self, gid: str) -> tuple[Transaction, list[Branch], Notes] | None:
        self._count("load")
        return await self.db.read(admin.load_notes, gid, self.clock.now_ms())

    async def pause(self, gid: str, now_ms: int, holder: str) -> bool:
        self._count("admin_pause")
        reply = await self.db.write(admin.pause, gid, now_ms, holder, self.clock.now_ms())
        if reply[0] == "ALREADY":
            return False
        raise_for(reply, gid)
        return True

    async def resume(self, gid: str, now_ms: int) -> None:
        self._count("admin_resume")
        raise_for(await self.db.write(admin.resume, gid, now_ms, self.clock.now_ms()), gid)

    async def mark_branch(self, marking: BranchMarking) -> None:
        self._count("admin_mark")
        raise_for(await self.db.write(admin.mark_branch, marking, self.clock.now_ms()), marking.gid)

    async def attention(self, position: str, limit: int) -> AttentionPage:
        found = await self.db.read(admin.attention, parse_attention_position(position), limit)
        page = found[:limit]
        cursor = f"{page[-1][1]}:{page[-1][0]}" if len(found) > limit and page else ""
        return AttentionPage(page, cursor)

    async def unfinished_count(self) -> int:
        return await self.db.read(admin.unfinished_count)

    async def nodes(self) -> list[tuple[str, int]]:
        return await self.db.read(admin.nodes, self.clock.now_ms())

    async def list_transactions(self, query: ListQuery) -> ListPage:
        self._count("list")
        cursor = parse_position(query.position, self.shards)
        after = None if cursor is None else cursor[1:]
        found = await self.db.read(list_after, query, after, self.clock.now_ms())
        # As RedisStore's walk: a page that filled up carries a cursor, even if nothing follows it.
        if len(found) < max(query.limit, 1):
            return ListPage(found, "")
        last = found[-1]
        return ListPage(found, f"0:{last.create_ms}:{last.gid}")

    async def ping(self) -> None:
        await self.db.read(_ping)

    async def close(self) -> None:
        await self.db.close()


def list_after(
    conn: sqlite3.Connection, query: ListQuery, after: tuple[int, str] | None, wall_ms: int
) -> list[Transaction]:
    """`/all`'s page: live transactions by (create time, gid) after the cursor, filtered, at most `limit`."""
    clauses = [sql.ALIVE]
    params: list[str | int] = [wall_ms]
    if after is not None:
        clauses.append("(create_time, gid) > (?, ?)")
        params += after
    for clause, value in (
        ("create_time >= ?", query.create_from_ms),
        ("create_time <= ?", query.create_to_ms),
        ("status = ?", query.status),
        ("trans_type = ?", query.trans_type),
    ):
        if value:  # 0 and "" mean "no filter", as in RedisStore
            clauses.append(clause)
            params.append(value)
    params.append(max(query.limit, 1))
    rows = conn.execute(f"{sql.SELECT_TRANS} WHERE {' AND '.join(clauses)} ORDER BY create_time, gid LIMIT ?", params)
    return [sql.decode_trans(row) for row in rows]


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()
