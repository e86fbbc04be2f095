"""What a contract check runs on, and what every check shares.

A `Subject` opens fresh stores over one backing state (a file, a Redis server): a check may open, close
and open again. The checks use nothing but the `Store` and `KV` protocols, so one check proves one
behaviour on every store. Times come from the real clock: Redis expires keys by its own clock, so a
finished transaction must be finished "now" for its data to live for the TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

from fastdtm.models import Branch, Options, Transaction
from fastdtm.states import TERMINAL, TransStatus, TransType
from fastdtm.store.base import ListQuery, Store
from fastdtm.store.kv_base import KV

#: The finished-data TTL of a store a check opens without asking for another: nothing expires during a check.
FINISHED_TTL_MS: Final = 60_000
#: A lease value as the cron makes them: "<node_id> <token>".
LEASE: Final = "node-a 5f0c1e9a7b3d2c4e"
THEIRS: Final = "node-b 0a1b2c3d4e5f6a7b"


class Subject(Protocol):
    """A store implementation under test, over backing state that is empty when the check starts."""

    def open(self, finished_ttl_ms: int = FINISHED_TTL_MS) -> AbstractAsyncContextManager[Store]:
        """A store on the subject's backing state, closed when the context exits."""
        ...

    def shard_of(self, gid: str) -> int: ...

    def kv(self, store: Store) -> KV:
        """The KV store that lives next to `store` (same file / same client)."""
        ...


Check = Callable[[Subject], Awaitable[None]]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def gids_in_shard(subject: Subject, shard: int, count: int, stem: str = "gid") -> list[str]:
    """`count` gids of one shard, in the order they were found (so: sorted only if the caller sorts)."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        gid = f"{stem}-{n:04d}"
        if subject.shard_of(gid) == shard:
            found.append(gid)
        n += 1
    return found


def trans(
    gid: str,
    now: int,
    status: TransStatus = TransStatus.SUBMITTED,
    trans_type: TransType = TransType.SAGA,
    next_cron_ms: int | None = None,
) -> Transaction:
    """A transaction created at `now`, due 10 s later unless said otherwise (finished ones have no schedule)."""
    schedule = 0 if status in TERMINAL else (now + 10_000 if next_cron_ms is None else next_cron_ms)
    return Transaction(gid, trans_type, status, Options(), create_ms=now, update_ms=now, next_cron_ms=schedule)


def saga_branches(now: int, steps: int) -> list[Branch]:
    out: list[Branch] = []
    for i in range(steps):
        out += [
            Branch(f"{i + 1:02d}", "compensate", f"http://busi/c{i}", '{"amount": 30}', now),
            Branch(f"{i + 1:02d}", "action", f"http://busi/a{i}", '{"amount": 30}', now),
        ]
    return out


def as_loaded(branch: Branch) -> Branch:
    """A branch as `load` gives it back: with no result recorded, its update time is its create time."""
    if branch.status is not branch.status.PREPARED:
        return branch
    return Branch(branch.branch_id, branch.op, branch.url, branch.data, branch.create_ms, update_ms=branch.create_ms)


Snapshot = tuple[list[tuple[Transaction, list[Branch]] | None], list[str]]


async def snapshot(store: Store, *gids: str) -> Snapshot:
    """Everything the protocol shows of `gids` (data, branches, schedule) and which gids `/all` lists."""
    loaded = [await store.load(gid) for gid in gids]
    return loaded, await listed(store)


async def listed(store: Store, query: ListQuery | None = None) -> list[str]:
    """Every gid `/all` lists for `query`, walking its cursor to the end."""
    query = query or ListQuery(limit=1000)
    gids: list[str] = []
    position = ""
    while True:
        page = await store.list_transactions(
            ListQuery(query.limit, position, query.status, query.trans_type, query.create_from_ms, query.create_to_ms)
        )
        gids += [t.gid for t in page.transactions]
        position = page.next_position
        if not position:
            return gids


async def schedule_of(store: Store, gid: str) -> int:
    loaded = await store.load(gid)
    assert loaded is not None, gid
    return loaded[0].next_cron_ms


async def eventually(probe: Callable[[], Awaitable[bool]], timeout: float = 3.0) -> None:
    """Wait for something that happens on a real clock (a TTL running out)."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not so after {timeout}s")
        await asyncio.sleep(0.02)
