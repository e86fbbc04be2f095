"""The embedded store's SQLite file: its one-node lock, its one thread, its one connection and its schema.

Every database call runs on one thread the `Database` owns, on one connection created in that thread,
so the event loop never waits for SQLite (or for an fsync). Calls queue on that thread in the order they
were made. A write is one `BEGIN IMMEDIATE ... COMMIT`: the operation checks first and writes last, as a
Lua script does, and anything that raises rolls the whole transaction back. A caller cancelled while its
call still waits in the queue drops the call; once the call runs, it completes (committed or rolled back),
never half. sqlite3's errors become `StoreUnavailable` here and nowhere else.

One node only: the file is locked (`flock` on `<path>.lock`) from `open` to `close`, so a second fastdtm
process on the same file is refused with `StoreInUse` instead of sharing a store it cannot coordinate with.

Tables (schema version 3; times in ms; an older file is upgraded in place when opened):

==============  =====================================================================================
table           content
==============  =====================================================================================
schema_version  one row: the version of this layout
trans           one row per transaction; columns named as the Redis hash fields (a NULL text
                column = the field is absent; an absent time reads as 0 either way), plus
                ``next_cron_time`` (the schedule, Redis's ``due`` score; NULL once finished) and
                ``expire_at`` (finished data is gone from then on; NULL while unfinished);
                ``holder``/``held_until`` are a round's hold (``lua/take.lua``; version 2);
                ``paused``, ``failing_since``, ``retries`` the console's fields (fastdtm/notes.py) and
                ``attention`` the score of Redis's ``att`` index (version 3)
branch          branch records: ``idx`` = place in the list, UNIQUE (gid, branch_id, op) as DTM's
                SQL schema; ``status``/``finish_time`` NULL until a result is recorded; ``last_error``,
                ``operator`` the hash fields ``e<i>``, ``o<i>`` (version 3)
lease           shard -> ``holder`` (``"<node_id> <token>"``) until ``expire_at`` (wall clock)
node            node_id -> heartbeat expiry
kv              KV entries (topics): (cat, k) -> v, version, create_time, update_time
==============  =====================================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, Final, ParamSpec, TypeVar

from fastdtm.errors import StoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION: Final = 3

SCHEMA: Final = """
CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT;
CREATE TABLE trans (
    gid                TEXT PRIMARY KEY,
    trans_type         TEXT NOT NULL,
    status             TEXT NOT NULL,
    options            TEXT,
    custom_data        TEXT,
    query_prepared     TEXT,
    protocol           TEXT,
    rollback_reason    TEXT,
    result             TEXT,
    create_time        INTEGER NOT NULL DEFAULT 0,
    update_time        INTEGER NOT NULL DEFAULT 0,
    finish_time        INTEGER NOT NULL DEFAULT 0,
    rollback_time      INTEGER NOT NULL DEFAULT 0,
    next_cron_interval INTEGER NOT NULL DEFAULT 0,
    next_cron_time     INTEGER,
    expire_at          INTEGER,
    holder             TEXT,
    held_until         INTEGER NOT NULL DEFAULT 0,
    paused             INTEGER,
    failing_since      INTEGER,
    retries            INTEGER,
    attention          INTEGER
) STRICT;
CREATE INDEX trans_due ON trans (next_cron_time, gid) WHERE next_cron_time IS NOT NULL;
CREATE INDEX trans_created ON trans (create_time, gid);
CREATE INDEX trans_expiry ON trans (expire_at) WHERE expire_at IS NOT NULL;
CREATE INDEX trans_attention ON trans (attention, gid) WHERE attention IS NOT NULL;
CREATE TABLE branch (
    gid         TEXT NOT NULL REFERENCES trans (gid) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    branch_id   TEXT NOT NULL,
    op          TEXT NOT NULL,
    url         TEXT NOT NULL,
    data        TEXT NOT NULL,
    create_time INTEGER NOT NULL,
    status      TEXT,
    finish_time INTEGER,
    last_error  TEXT,
    operator    TEXT,
    PRIMARY KEY (gid, idx),
    UNIQUE (gid, branch_id, op)
) STRICT;
CREATE TABLE lease (shard INTEGER PRIMARY KEY, holder TEXT NOT NULL, expire_at INTEGER NOT NULL) STRICT;
CREATE TABLE node (node_id TEXT PRIMARY KEY, expire_at INTEGER NOT NULL) STRICT;
CREATE TABLE kv (
    cat         TEXT NOT NULL,
    k           TEXT NOT NULL,
    v           TEXT NOT NULL,
    version     INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (cat, k)
) STRICT;
"""


class StoreInUse(StoreUnavailable):
    """Another process holds the embedded store's file: the embedded store serves one node."""


class Database:
    """One SQLite file, used from one thread through one connection; build it with `await Database.open(path)`."""

    def __init__(self, path: Path, lock_fd: int, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._executor = executor
        # Created in the executor's thread and only ever used there (sqlite3 checks that).
        self._conn = conn
        self._closed = False

    @classmethod
    async def open(cls, path: str) -> Database:
        """Lock the file, create its directory and schema if needed; raises StoreInUse / StoreUnavailable."""
        file = Path(path)
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastdtm-sqlite")
        try:
            # Directory creation, locking and opening touch the disk: on the store's thread too.
            lock_fd = await loop.run_in_executor(executor, _lock, file)
            try:
                conn = await loop.run_in_executor(executor, _connect, file)
            except BaseException:
                os.close(lock_fd)
                raise
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(file, lock_fd, executor, conn)

    async def read(self, op: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op(conn, ...)` on the store's thread. Reads need no transaction: no other writer exists."""
        return await self._submit(functools.partial(op, self._conn, *args, **kwargs))

    async def write(self, op: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `op(conn, ...)` on the store's thread as one transaction: committed if it returns, else rolled back."""
        conn = self._conn

        def job() -> T:
            return _transaction(conn, op, *args, **kwargs)

        return await self._submit(job)

    async def close(self) -> None:
        """Close the connection, stop the thread, release the lock; later calls raise StoreUnavailable."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            # Queued behind every call made before: those finish first.
            await loop.run_in_executor(self._executor, self._conn.close)
        finally:
            self._executor.shutdown(wait=True)  # idle by now: returns at once
            os.close(self._lock_fd)  # releases the flock: another process may open the file now

    async def _submit(self, job: Callable[[], T]) -> T:
        if self._closed:
            raise StoreUnavailable(f"sqlite: the store on {self.path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc


def _transaction(
    conn: sqlite3.Connection, op: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    # IMMEDIATE takes the write lock up front: the checks and the writes see the same state.
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = op(conn, *args, **kwargs)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def ensure_free(path: str) -> None:
    """Raise StoreInUse now if another process holds the file (the CLI's early, clean refusal)."""
    os.close(_lock(Path(path)))


def _lock(file: Path) -> int:
    """Create the directory, then lock `<file>.lock` for this process, or raise StoreInUse naming the holder."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{file}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreUnavailable(f"sqlite: cannot open {file}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise StoreInUse(
            f"{file} is in use by another fastdtm process{holder}: the embedded store serves one node "
            "(use Redis, --store redis://..., to run several nodes)."
        ) from None
    # For the message a second process shows: which process holds the file.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
    return ""


def _connect(file: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(file, isolation_level=None)  # autocommit: transactions are explicit
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"sqlite: cannot open {file}: {exc}") from exc
    try:
        _configure(conn)
        _migrate(conn, file)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        # FULL: a commit is on disk (the WAL fsynced) before the caller hears "done", as DTM's SQL stores.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"sqlite: {exc}") from exc
    if mode != "wal":
        raise StoreUnavailable(f"sqlite: the file system refused WAL mode (got {mode!r})")


#: version -> the statements that bring a file of that version to the next one.
UPGRADES: Final = {
    1: (
        "ALTER TABLE trans ADD COLUMN holder TEXT",
        "ALTER TABLE trans ADD COLUMN held_until INTEGER NOT NULL DEFAULT 0",
    ),
    2: (
        "ALTER TABLE trans ADD COLUMN paused INTEGER",
        "ALTER TABLE trans ADD COLUMN failing_since INTEGER",
        "ALTER TABLE trans ADD COLUMN retries INTEGER",
        "ALTER TABLE trans ADD COLUMN attention INTEGER",
        "CREATE INDEX trans_attention ON trans (attention, gid) WHERE attention IS NOT NULL",
        "ALTER TABLE branch ADD COLUMN last_error TEXT",
        "ALTER TABLE branch ADD COLUMN operator TEXT",
    ),
}


def _migrate(conn: sqlite3.Connection, file: Path) -> None:
    try:
        _transaction(conn, _create_schema)
        _transaction(conn, _upgrade)
        found = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"sqlite: {file}: {exc}") from exc
    if found is None or found[0] != SCHEMA_VERSION:
        version = None if found is None else found[0]
        raise StoreUnavailable(f"sqlite: {file} has schema version {version}; this fastdtm reads {SCHEMA_VERSION}")


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring an older file to SCHEMA_VERSION, one version at a time, in one transaction."""
    found = conn.execute("SELECT version FROM schema_version").fetchone()
    version = None if found is None else found[0]
    while version in UPGRADES:
        for statement in UPGRADES[version]:
            conn.execute(statement)
        version += 1
        conn.execute("UPDATE schema_version SET version = ?", (version,))


def _create_schema(conn: sqlite3.Connection) -> None:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if exists:
        return
    # executescript() would COMMIT the open transaction first: run the statements one by one instead.
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
