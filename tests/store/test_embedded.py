"""What only the embedded store has (the shared contract is tests/store/test_contract.py): its URL form, the
SQLite settings, the one-process lock, work kept off the event loop on one thread, expired rows deleted by the
claim, all-or-nothing writes, and the refusals a SQL schema adds."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from fastdtm.errors import BadRequest, LeaseLost, Refused, Stale, StoreUnavailable
from fastdtm.models import Branch
from fastdtm.states import BranchStatus, TransStatus
from fastdtm.store.base import Change, ListQuery, Store
from fastdtm.store.embedded import EmbeddedStore, StoreInUse, parse_sqlite_url
from fastdtm.store.embedded_kv import EmbeddedKV
from fastdtm.store.kv import RedisKV
from fastdtm.store.kv_base import KV
from fastdtm.store.sqlite_cron import RETIRE_BATCH
from fastdtm.store.sqlite_db import SCHEMA_VERSION
from tests.store.contract.support import LEASE, saga_branches, snapshot, trans, wall_ms

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000

# Opens the store named by argv[1] in a process of its own; exit code 3 and the message if it is refused.
OPEN_IN_ANOTHER_PROCESS = """
import asyncio, sys
from fastdtm.store.embedded import EmbeddedStore, StoreInUse

async def main() -> None:
    try:
        store = await EmbeddedStore.open(sys.argv[1], 1000)
    except StoreInUse as exc:
        print(exc)
        sys.exit(3)
    await store.close()
    print("opened")

asyncio.run(main())
"""

# Commits one transaction, says so, and waits to be killed.
COMMIT_THEN_HANG = """
import asyncio, sys, time
from fastdtm.models import Options, Transaction
from fastdtm.states import TransStatus, TransType
from fastdtm.store.embedded import EmbeddedStore

async def main() -> None:
    store = await EmbeddedStore.open(sys.argv[1], 60_000)
    now = time.time_ns() // 1_000_000
    await store.create(Transaction("survivor", TransType.SAGA, TransStatus.SUBMITTED, Options(), now, now), [])
    print("committed", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


# mypy proves the protocols: each body type-checks only if the class has every member with a matching signature.
def _embedded_is_a_store(store: EmbeddedStore) -> Store:
    return store


def _embedded_kv_is_a_kv(kv: EmbeddedKV) -> KV:
    return kv


def _redis_kv_is_a_kv(kv: RedisKV) -> KV:
    return kv


@dataclass
class FakeClock:
    now: int = T0

    def now_ms(self) -> int:
        return self.now


async def row_counts(store: EmbeddedStore) -> tuple[int, int]:
    def count(conn: sqlite3.Connection) -> tuple[int, int]:
        (trans,) = conn.execute("SELECT COUNT(*) FROM trans").fetchone()
        (branches,) = conn.execute("SELECT COUNT(*) FROM branch").fetchone()
        return trans, branches

    return await store.db.read(count)


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///fastdtm.db", "fastdtm.db"),
        ("sqlite:///./fastdtm.db", "./fastdtm.db"),
        ("sqlite:///data/dir/fastdtm.db", "data/dir/fastdtm.db"),
        ("sqlite:////var/lib/fastdtm/fastdtm.db", "/var/lib/fastdtm/fastdtm.db"),
    ],
)
def test_sqlite_urls_as_sqlalchemy_writes_them(url: str, path: str) -> None:
    assert parse_sqlite_url(url) == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/0", "is not a sqlite URL"),
        ("sqlite://fastdtm.db", "is not a sqlite URL"),
        ("sqlite:///", "names no file"),
        ("sqlite:////var/lib/", "names no file"),
        ("sqlite:///:memory:", "needs a plain file path"),
        ("sqlite:///fastdtm.db?mode=ro", "needs a plain file path"),
    ],
)
def test_other_urls_are_refused_clearly(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sqlite_url(url)


async def test_one_file_in_wal_mode_with_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    store = await EmbeddedStore.open(str(tmp_path / "new" / "dir" / "fastdtm.db"), 1000)
    try:

        def settings(conn: sqlite3.Connection) -> list[object]:
            pragmas = [conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("journal_mode", "synchronous")]
            return [*pragmas, conn.execute("PRAGMA foreign_keys").fetchone()[0]]

        # synchronous 2 = FULL: a commit is fsynced before the caller hears of it.
        assert await store.db.read(settings) == ["wal", 2, 1]
        assert await store.db.read(lambda conn: conn.execute("SELECT version FROM schema_version").fetchall()) == [
            (SCHEMA_VERSION,)
        ]
        assert store.shards == 1
        assert (tmp_path / "new" / "dir" / "fastdtm.db.lock").read_text().strip() == str(os.getpid())
    finally:
        await store.close()


async def open_elsewhere(path: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        OPEN_IN_ANOTHER_PROCESS,
        str(path),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_second_process_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    path = tmp_path / "fastdtm.db"
    store = await EmbeddedStore.open(str(path), 1000)
    try:
        code, out = await open_elsewhere(path)
        assert code == 3, out
        assert f"{path} is in use by another fastdtm process (pid {os.getpid()})" in out
        assert "the embedded store serves one node" in out
        assert "use Redis" in out
    finally:
        await store.close()

    assert await open_elsewhere(path) == (0, "opened\n")


async def test_a_killed_holder_leaves_no_lock_and_loses_no_commit(tmp_path: Path) -> None:
    path = tmp_path / "fastdtm.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        COMMIT_THEN_HANG,
        str(path),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"committed\n"
    finally:
        process.kill()  # SIGKILL: no close(), no checkpoint, the lock dropped only by the kernel
        await process.wait()

    store = await EmbeddedStore.open(str(path), 60_000)
    try:
        loaded = await store.load("survivor")
        assert loaded is not None
        assert loaded[0].status is TransStatus.SUBMITTED
    finally:
        await store.close()


async def test_a_second_open_in_the_same_process_is_refused_too(tmp_path: Path) -> None:
    path = str(tmp_path / "fastdtm.db")
    store = await EmbeddedStore.open(path, 1000)
    try:
        with pytest.raises(StoreInUse, match="in use by another fastdtm process"):
            await EmbeddedStore.open(path, 1000)
        # The refusal is a StoreUnavailable: whatever handles an unreachable store handles it.
        assert issubclass(StoreInUse, StoreUnavailable)
    finally:
        await store.close()
    again = await EmbeddedStore.open(path, 1000)
    await again.close()


async def test_the_event_loop_keeps_running_while_the_store_writes(store: EmbeddedStore) -> None:
    # A loop that never idles holds the GIL, and the store's thread gets it back only every switch interval,
    # once per SQLite call (about 12 per write): at the default 5 ms these 200 writes take ~15 s. A short
    # interval keeps the test quick; what it proves, the loop running during every write, is the same.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0001)
    try:
        during = await ticks_during_writes(store, 200)
    finally:
        sys.setswitchinterval(interval)

    # A write done on the loop would let the ticker in at most between writes, never while one runs.
    assert min(during) >= 1
    assert sum(during) >= 200


async def ticks_during_writes(store: EmbeddedStore, writes: int) -> list[int]:
    """How often an `asyncio.sleep(0)` ticker ran while each of `writes` creates was awaited."""
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    during: list[int] = []
    now = wall_ms()
    for i in range(writes):
        before = ticks
        await store.create(trans(f"g{i}", now), saga_branches(now, 2))
        during.append(ticks - before)
    running = False
    await task
    return during


async def test_every_call_runs_on_one_thread_that_is_not_the_loops(store: EmbeddedStore) -> None:
    idents = await asyncio.gather(*(store.db.read(lambda conn: threading.get_ident()) for _ in range(20)))
    idents.append(await store.db.write(lambda conn: threading.get_ident()))

    assert len(set(idents)) == 1
    assert idents[0] != threading.get_ident()


async def test_concurrent_compare_and_sets_have_one_winner(store: EmbeddedStore) -> None:
    now = wall_ms()
    await store.create(trans("g1", now, TransStatus.PREPARED), [])
    change = Change("g1", TransStatus.PREPARED, TransStatus.SUBMITTED, now, next_cron_ms=now)

    results = await asyncio.gather(*(store.transition(change) for _ in range(50)), return_exceptions=True)

    assert results.count(None) == 1
    losers = [r for r in results if r is not None]
    assert all(isinstance(r, Stale) and r.current == "submitted" for r in losers), losers


async def test_a_write_that_fails_midway_leaves_nothing(store: EmbeddedStore) -> None:
    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO node (node_id, expire_at) VALUES ('n', 1)")
        raise RuntimeError("midway")

    with pytest.raises(RuntimeError, match="midway"):
        await store.db.write(half_then_fail)

    assert await store.db.read(lambda conn: conn.execute("SELECT node_id FROM node").fetchall()) == []


async def test_an_unknown_field_is_refused_before_any_write(store: EmbeddedStore) -> None:
    now = wall_ms()
    await store.create(trans("g1", now), saga_branches(now, 1))
    before = await snapshot(store, "g1")
    done = saga_branches(now, 1)[1].with_status(BranchStatus.SUCCEED, now)

    # Redis would store a stray hash field no one reads; a table has no column for it: a bug, said loudly.
    with pytest.raises(ValueError, match="no field 'bogus'"):
        await store.transition(
            Change("g1", TransStatus.SUBMITTED, TransStatus.SUCCEED, now, {1: done}, fields={"bogus": "x"})
        )

    assert await snapshot(store, "g1") == before


async def test_a_branch_list_with_a_repeat_is_refused_and_nothing_written(store: EmbeddedStore) -> None:
    now = wall_ms()
    repeated = [Branch("01", "action", "http://a", "", now), Branch("01", "action", "http://b", "", now)]

    with pytest.raises(Refused, match="branch 01:action appears twice in 'g1'"):
        await store.create(trans("g1", now), repeated)

    assert await snapshot(store, "g1") == ([None], [])
    assert await row_counts(store) == (0, 0)


async def test_claims_delete_expired_rows_a_batch_at_a_time(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await EmbeddedStore.open(str(tmp_path / "fastdtm.db"), 1_000, clock=clock)
    try:
        for i in range(RETIRE_BATCH + 10):
            await store.create(trans(f"done-{i:03d}", T0, TransStatus.SUCCEED), saga_branches(T0, 1))
        await store.create(trans("alive", T0), saga_branches(T0, 1))
        assert await store.acquire_lease(0, LEASE, 60_000)

        assert (await store.claim_due(0, LEASE, T0 + 999, 10, T0 + 5_000)).gids == []
        assert await row_counts(store) == (RETIRE_BATCH + 11, 2 * (RETIRE_BATCH + 11))

        clock.now = T0 + 1_000  # the TTL ran out: the rows are absent before any claim deletes them
        assert await store.load("done-000") is None
        assert [t.gid for t in (await store.list_transactions(ListQuery())).transactions] == ["alive"]
        assert (await store.claim_due(0, LEASE, T0 + 1_000, 10, T0 + 5_000)).gids == []
        assert await row_counts(store) == (11, 22)
        await store.claim_due(0, LEASE, T0 + 1_000, 10, T0 + 5_000)
        assert await row_counts(store) == (1, 2)
    finally:
        await store.close()


async def test_a_claim_ahead_of_the_clock_never_deletes_live_data(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await EmbeddedStore.open(str(tmp_path / "fastdtm.db"), 1_000, clock=clock)
    try:
        await store.create(trans("done", T0, TransStatus.SUCCEED), [])
        assert await store.acquire_lease(0, LEASE, 60_000)

        await store.claim_due(0, LEASE, T0 + 10**9, 10, T0 + 2 * 10**9)

        # Redis keeps such data until its own clock passes the TTL: so does the embedded store.
        assert await store.load("done") is not None
    finally:
        await store.close()


async def test_leases_expire_on_the_stores_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    store = await EmbeddedStore.open(str(tmp_path / "fastdtm.db"), 1_000, clock=clock)
    try:
        assert await store.acquire_lease(0, LEASE, 1_000)
        clock.now = T0 + 999
        assert await store.lease_holder(0) == LEASE
        assert (await store.claim_due(0, LEASE, T0, 10, T0 + 1)).gids == []

        clock.now = T0 + 1_000
        assert await store.lease_holder(0) is None
        with pytest.raises(LeaseLost):
            await store.claim_due(0, LEASE, T0, 10, T0 + 1)
        assert await store.renew_leases([0], LEASE, 1_000) == [False]
    finally:
        await store.close()


async def test_a_cursor_of_another_shard_was_not_issued_here(store: EmbeddedStore) -> None:
    now = wall_ms()
    await store.create(trans("g1", now), [])

    # A Redis deployment's cursor (shard 7 of 256): this one-shard store never issues it.
    with pytest.raises(BadRequest, match="is not a cursor"):
        await store.list_transactions(ListQuery(position=f"7:{now}:g0"))


async def test_a_closed_store_answers_store_unavailable(tmp_path: Path) -> None:
    store = await EmbeddedStore.open(str(tmp_path / "fastdtm.db"), 1000)
    await store.close()
    await store.close()  # twice is harmless

    with pytest.raises(StoreUnavailable, match="is closed"):
        await store.load("g1")
    with pytest.raises(StoreUnavailable, match="is closed"):
        await store.ping()


async def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable, match="sqlite"):
        await EmbeddedStore.open(str(garbage), 1000)

    path = tmp_path / "future.db"
    await (await EmbeddedStore.open(str(path), 1000)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(StoreUnavailable, match=f"schema version 99; this fastdtm reads {SCHEMA_VERSION}"):
        await EmbeddedStore.open(str(path), 1000)
    # A refused open keeps no lock: trying again meets the same problem, not StoreInUse.
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        await EmbeddedStore.open(str(path), 1000)


#: What each older file version lacks, newest first: dropping them turns a new file into one of that version.
_ADDED_IN: Final = {
    3: (
        "DROP INDEX trans_attention",
        "ALTER TABLE trans DROP COLUMN paused",
        "ALTER TABLE trans DROP COLUMN failing_since",
        "ALTER TABLE trans DROP COLUMN retries",
        "ALTER TABLE trans DROP COLUMN attention",
        "ALTER TABLE branch DROP COLUMN last_error",
        "ALTER TABLE branch DROP COLUMN operator",
    ),
    2: ("ALTER TABLE trans DROP COLUMN holder", "ALTER TABLE trans DROP COLUMN held_until"),
}


@pytest.mark.parametrize("old_version", [1, 2])
async def test_an_older_file_is_upgraded_in_place_and_keeps_its_transactions(tmp_path: Path, old_version: int) -> None:
    path = tmp_path / f"v{old_version}.db"
    now = wall_ms()
    store = await EmbeddedStore.open(str(path), 60_000)
    await store.create(trans("g1", now), saga_branches(now, 1))
    await store.close()
    with sqlite3.connect(path) as conn:
        for newer in range(SCHEMA_VERSION, old_version, -1):
            for statement in _ADDED_IN[newer]:
                conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = ?", (old_version,))
    conn.close()

    store = await EmbeddedStore.open(str(path), 60_000)
    try:
        claim = await store.take("g1", now, now + 5_000, "r1")
        assert claim is not None and claim.trans.gid == "g1"
        version = await store.db.read(lambda conn: conn.execute("SELECT version FROM schema_version").fetchone())
        assert version == (SCHEMA_VERSION,)
        # The console's columns are there: a pause and its index work on the upgraded file.
        assert await store.pause("g1", now + 6_000, "operator-1") is True
        assert (await store.attention("", 10)).gids == [("g1", now + 6_000)]
    finally:
        await store.close()
