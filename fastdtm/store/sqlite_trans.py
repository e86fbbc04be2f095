"""The embedded store's transaction operations: one function per Lua script, each run as one SQL transaction.

Each function is the SQL twin of `fastdtm/lua/<name>.lua`: the same inputs, every check before the first
write (so a refusal writes nothing), and the same tagged reply (`("OK",)`, `("STALE", current)`,
`("NOT_FOUND",)`, ...), which `embedded.EmbeddedStore` maps to exceptions exactly as `RedisStore` does.
What a row holds is what the Redis hash holds: the fields come from `store.hashes` (`trans_fields`,
`change_fields`) and go back through `hashes.decode_trans`, so both stores store and read the same values.

Where Redis uses its own clock (a key's TTL) these functions take `wall_ms`, the store's clock: a finished
transaction whose `expire_at` has passed is absent to every read and write, as an expired Redis key is,
even before `claim_due` deletes the row. They never read a clock themselves.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, TypeAlias

from fastdtm.errors import Held, Paused
from fastdtm.models import MAX_BRANCHES, PAUSED_MS, Branch, Transaction
from fastdtm.states import HTTP, TERMINAL, BranchStatus, TransStatus
from fastdtm.store import hashes
from fastdtm.store.base import Change, Taken, check_take_over
from fastdtm.store.replies import raise_for

Reply: TypeAlias = tuple[str, ...]

#: The Redis hash fields, in the order of the `trans` columns that hold them.
FIELDS: Final = (
    "gid",
    "trans_type",
    "status",
    "options",
    "custom_data",
    "query_prepared",
    "protocol",
    "rollback_reason",
    "result",
    "create_time",
    "update_time",
    "finish_time",
    "rollback_time",
    "next_cron_interval",
    "holder",
    "held_until",
    "paused",
    "failing_since",
    "retries",
)
INT_FIELDS: Final = frozenset(
    {
        "create_time",
        "update_time",
        "finish_time",
        "rollback_time",
        "next_cron_interval",
        "held_until",
        "paused",
        "failing_since",
        "retries",
    }
)
#: Fields a transition may overwrite: every column but the key.
WRITABLE: Final = frozenset(FIELDS) - {"gid"}
#: A branch progress field, `s<index>` (see `hashes.branch_progress`).
_PROGRESS: Final = re.compile(r"s(\d+)")
#: A branch's last error, `e<index>` (see `notes.error_field`): the branch row's `last_error`.
_ERROR: Final = re.compile(r"e(\d+)")

SELECT_TRANS: Final = f"SELECT {', '.join(FIELDS)}, next_cron_time FROM trans"
#: A row is there unless its data expired (the Redis key's TTL passed); bind `wall_ms`.
ALIVE: Final = "(expire_at IS NULL OR expire_at > ?)"
_BRANCH_COLUMNS: Final = "gid, idx, branch_id, op, url, data, create_time, status, finish_time"

BranchRow: TypeAlias = tuple[str, int, str, str, str, str, int, str | None, int | None]


def create(
    conn: sqlite3.Connection,
    trans: Transaction,
    branches: Sequence[Branch],
    expire_at: int | None,
    wall_ms: int,
    holder: str = "",
) -> Reply:
    """create.lua: insert the transaction and its branches if the gid is absent (or its data expired).

    One refusal more than the script: a (branch_id, op) twice in `branches` is ("DUPLICATE", mark), where
    Redis would store both; no kind builds such a list, and the table's UNIQUE key would refuse it anyway.
    """
    row = conn.execute(
        f"SELECT status, trans_type FROM trans WHERE gid = ? AND {ALIVE}", (trans.gid, wall_ms)
    ).fetchone()
    if row is not None:
        return ("WRONG_TYPE", row[1]) if row[1] != trans.trans_type else ("EXISTS", row[0])
    if duplicate := _first_duplicate(branches, set()):
        return ("DUPLICATE", duplicate)
    # A gid may come back after its finished data expired: the old row goes, the new one is live.
    conn.execute("DELETE FROM trans WHERE gid = ?", (trans.gid,))
    flat = hashes.trans_fields(trans)
    if holder and trans.status not in TERMINAL:
        flat += hashes.hold_fields(holder, trans.next_cron_ms)
    fields = hashes.pairs(flat)
    _insert(conn, fields, None if trans.status in TERMINAL else trans.next_cron_ms, expire_at)
    conn.executemany(
        f"INSERT INTO branch ({_BRANCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _rows(trans.gid, 0, branches)
    )
    return ("CREATED",)


def load(conn: sqlite3.Connection, gid: str, wall_ms: int) -> tuple[Transaction, list[Branch]] | None:
    """load.lua: the transaction with its branches and schedule, or None."""
    row = conn.execute(f"{SELECT_TRANS} WHERE gid = ? AND {ALIVE}", (gid, wall_ms)).fetchone()
    if row is None:
        return None
    found = conn.execute(
        "SELECT branch_id, op, url, data, create_time, status, finish_time FROM branch WHERE gid = ? ORDER BY idx",
        (gid,),
    )
    return decode_trans(row), [_decode_branch(*branch) for branch in found]


def transition(conn: sqlite3.Connection, change: Change, expire_at: int | None, wall_ms: int) -> Reply:
    """transition.lua: status (and, for a round's write, holder) compare-and-set, fields and branch progress,
    reschedule or finish."""
    query = f"SELECT status, holder, trans_type, failing_since, retries FROM trans WHERE gid = ? AND {ALIVE}"
    row = conn.execute(query, (change.gid, wall_ms)).fetchone()
    if row is None:
        return ("NOT_FOUND",)
    current, holder, stored_type, failing_since, retries = row
    if change.trans_type and stored_type != change.trans_type:
        return ("WRONG_TYPE", stored_type)
    if current != change.expected:
        return ("STALE", current)
    if change.holder and holder != change.holder:
        return ("FENCED", holder or "")
    columns, progress, errors = split_fields(hashes.change_fields(change))
    if change.status is not change.expected:
        columns = {"status": change.status, **columns}
    if change.status in TERMINAL:
        columns |= {"next_cron_time": None, "expire_at": expire_at, "attention": None}
    else:
        if change.next_cron_ms is not None:
            columns["next_cron_time"] = change.next_cron_ms
        columns |= _attention(change.attention, failing_since, retries)
    _update(conn, change.gid, columns)
    conn.executemany(
        "UPDATE branch SET status = ?, finish_time = ? WHERE gid = ? AND idx = ?",
        ((status, finish_ms, change.gid, index) for index, (status, finish_ms) in progress.items()),
    )
    conn.executemany(
        "UPDATE branch SET last_error = ? WHERE gid = ? AND idx = ?",
        ((error, change.gid, index) for index, error in errors.items()),
    )
    return ("OK",)


def _attention(attention: str, failing_since: int | None, retries: int | None) -> dict[str, int | None]:
    """transition.lua's ARGV[8] as columns: a round ending in an error counts, one ending without clears."""
    if attention == "-":
        return {"failing_since": None, "retries": None, "attention": None}
    if attention:
        since = failing_since if failing_since is not None else int(attention)
        # The att entry is added with failing_since only: a paused transaction keeps its own entry.
        added = {"attention": since} if failing_since is None else {}
        return {"failing_since": since, "retries": (retries or 0) + 1, **added}
    return {}


def take(
    conn: sqlite3.Connection, gid: str, now_ms: int, held_until_ms: int, holder: str, wall_ms: int
) -> Taken | None:
    """take.lua: hold an unfinished transaction for a new round and read it; None (and no longer scheduled)
    when absent or finished. A hold that ends after `now_ms` raises Held, having written nothing."""
    query = f"SELECT status, held_until, paused FROM trans WHERE gid = ? AND {ALIVE}"
    row = conn.execute(query, (gid, wall_ms)).fetchone()
    if row is None or row[0] in TERMINAL:
        forget(conn, gid)
        return None
    if row[1] > now_ms:
        raise Held(row[1])
    if row[2] is not None:
        raise Paused(row[2])
    conn.execute(
        "UPDATE trans SET holder = ?, held_until = ?, next_cron_time = ? WHERE gid = ?",
        (holder, held_until_ms, held_until_ms, gid),
    )
    return _taken(conn, gid, wall_ms)


def take_over(conn: sqlite3.Connection, change: Change, holder: str, wall_ms: int) -> Taken:
    """take_over.lua: a status change that hands the transaction to a new round, read back in the same SQL
    transaction. A refusal raises (Stale, TransNotFound) here: the SQL transaction rolls back, having written
    nothing."""
    check_take_over(change)
    raise_for(transition(conn, change, None, wall_ms), change.gid, trans_type=change.trans_type)
    conn.execute("UPDATE trans SET holder = ?, held_until = next_cron_time WHERE gid = ?", (holder, change.gid))
    return _taken(conn, change.gid, wall_ms)


def _taken(conn: sqlite3.Connection, gid: str, wall_ms: int) -> Taken:
    loaded = load(conn, gid, wall_ms)
    assert loaded is not None  # just written, in this transaction
    return Taken(loaded[0], loaded[1], loaded[0].next_cron_ms)


def register_branch(
    conn: sqlite3.Connection,
    gid: str,
    trans_type: str,
    branches: Sequence[Branch],
    now_ms: int,
    wall_ms: int,
    protocol: str,
) -> Reply:
    """register_branch.lua: append branches while the transaction is prepared and of that type and protocol."""
    query = f"SELECT status, trans_type, protocol FROM trans WHERE gid = ? AND {ALIVE}"
    row = conn.execute(query, (gid, wall_ms)).fetchone()
    if row is None:
        return ("NOT_FOUND",)
    status, stored_type, stored_protocol = row
    if stored_type != trans_type:
        return ("WRONG_TYPE", stored_type)
    if status != TransStatus.PREPARED:
        return ("NOT_PREPARED", status)
    if (stored_protocol or HTTP) != protocol:
        return ("WRONG_PROTOCOL", stored_protocol or HTTP)
    (count,) = conn.execute("SELECT COUNT(*) FROM branch WHERE gid = ?", (gid,)).fetchone()
    if count + len(branches) > MAX_BRANCHES:  # the list's length, as the script's LLEN
        return ("TOO_MANY", str(count))
    if duplicate := _first_duplicate(branches, _registered(conn, gid, branches)):
        return ("DUPLICATE", duplicate)
    start = count
    # As the script: a branch registered with a result keeps it, with no finish time (DTM's way).
    stamped = [b if b.status is BranchStatus.PREPARED else b.with_status(b.status, 0) for b in branches]
    conn.executemany(
        f"INSERT INTO branch ({_BRANCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _rows(gid, start, stamped)
    )
    conn.execute("UPDATE trans SET update_time = ? WHERE gid = ?", (now_ms, gid))
    return ("OK",)


def touch(conn: sqlite3.Connection, gid: str, next_cron_ms: int, now_ms: int, wall_ms: int) -> Reply:
    """touch.lua: move an unfinished transaction's schedule, never before a round's hold ends; a finished one
    has none to move."""
    query = f"SELECT status, next_cron_time, held_until, paused FROM trans WHERE gid = ? AND {ALIVE}"
    row = conn.execute(query, (gid, wall_ms)).fetchone()
    if row is None:
        return ("NOT_FOUND",)
    status, scheduled, held_until, paused = row
    if scheduled is None:
        return ("FINISHED", status)
    if paused is not None:
        return ("PAUSED", str(paused))
    conn.execute(
        "UPDATE trans SET next_cron_time = ?, update_time = ? WHERE gid = ?",
        (max(next_cron_ms, held_until), now_ms, gid),
    )
    return ("OK", status)


def reset_cron(conn: sqlite3.Connection, threshold_ms: int, now_ms: int, limit: int) -> tuple[int, int]:
    """reset_cron.lua: schedule at now up to `limit` transactions due after the threshold, earliest first."""
    found = conn.execute(
        "SELECT gid FROM trans WHERE next_cron_time > ? AND next_cron_time < ? ORDER BY next_cron_time, gid LIMIT ?",
        (threshold_ms, PAUSED_MS, limit + 1),
    ).fetchall()
    moved = min(len(found), limit)
    conn.executemany("UPDATE trans SET next_cron_time = ? WHERE gid = ?", ((now_ms, gid) for (gid,) in found[:moved]))
    return moved, 1 if len(found) > limit else 0


def forget(conn: sqlite3.Connection, gid: str) -> None:
    """Redis's ZREM from `due`: the transaction is no longer scheduled."""
    conn.execute("UPDATE trans SET next_cron_time = NULL WHERE gid = ?", (gid,))


def decode_trans(row: Sequence[str | int | None]) -> Transaction:
    """A `SELECT_TRANS` row, read back through the Redis decoder: the same values either store gives."""
    fields = {name: str(value) for name, value in zip(FIELDS, row, strict=False) if value is not None}
    scheduled = row[len(FIELDS)]
    return hashes.decode_trans(fields, "" if scheduled is None else str(scheduled))


def split_fields(flat: Sequence[str]) -> tuple[dict[str, str | int | None], dict[int, tuple[str, int]], dict[int, str]]:
    """Hash field/value pairs as columns to set, branch progress by index and branch errors by index; an
    unknown field is a bug."""
    columns: dict[str, str | int | None] = {}
    progress: dict[int, tuple[str, int]] = {}
    errors: dict[int, str] = {}
    for name, value in hashes.pairs(flat).items():
        if match := _PROGRESS.fullmatch(name):
            status, finish_ms = value.split(" ")
            progress[int(match[1])] = (status, int(finish_ms))
        elif match := _ERROR.fullmatch(name):
            errors[int(match[1])] = value
        elif name in WRITABLE:
            columns[name] = int(value) if name in INT_FIELDS else value
        else:
            raise ValueError(f"a transaction has no field {name!r} to write")
    return columns, progress, errors


def _insert(
    conn: sqlite3.Connection, fields: Mapping[str, str], next_cron_ms: int | None, expire_at: int | None
) -> None:
    names = [name for name in fields if name in WRITABLE or name == "gid"]
    values = [int(fields[n]) if n in INT_FIELDS else fields[n] for n in names]
    marks = ", ".join("?" * (len(names) + 2))
    conn.execute(
        f"INSERT INTO trans ({', '.join(names)}, next_cron_time, expire_at) VALUES ({marks})",
        (*values, next_cron_ms, expire_at),
    )


def _update(conn: sqlite3.Connection, gid: str, columns: Mapping[str, str | int | None]) -> None:
    # Column names come from WRITABLE (checked in split_fields) or from this module: never from a caller's text.
    assignments = ", ".join(f"{name} = ?" for name in columns)
    conn.execute(f"UPDATE trans SET {assignments} WHERE gid = ?", (*columns.values(), gid))


def _rows(gid: str, start: int, branches: Iterable[Branch]) -> list[BranchRow]:
    rows: list[BranchRow] = []
    for index, b in enumerate(branches, start):
        # NULL progress = no `s<i>` field: the branch reads back as never recorded.
        status, finish = (None, None) if b.status is BranchStatus.PREPARED else (str(b.status), b.finish_ms)
        rows.append((gid, index, b.branch_id, b.op, b.url, b.data, b.create_ms, status, finish))
    return rows


def _registered(conn: sqlite3.Connection, gid: str, branches: Sequence[Branch]) -> set[str]:
    """The unique marks (`hashes.unique_field`) of those of `branches` the transaction already has."""
    found: set[str] = set()
    for b in branches:
        query = "SELECT 1 FROM branch WHERE gid = ? AND branch_id = ? AND op = ?"
        if conn.execute(query, (gid, b.branch_id, b.op)).fetchone():
            found.add(hashes.unique_field(b))
    return found


def _first_duplicate(branches: Sequence[Branch], seen: set[str]) -> str:
    """The first (branch_id, op) already in `seen` or earlier in `branches`, as its unique mark; "" if none."""
    earlier: set[str] = set()
    for b in branches:
        mark = hashes.unique_field(b)
        if mark in seen or mark in earlier:
            return mark
        earlier.add(mark)
    return ""


def _decode_branch(
    branch_id: str, op: str, url: str, data: str, create_ms: int, status: str | None, finish_ms: int | None
) -> Branch:
    # As hashes.decode_branches: a record's update time is its create time until a result is recorded.
    branch = Branch(branch_id, op, url, data, create_ms, update_ms=create_ms)
    if status is None:
        return branch
    return branch.with_status(BranchStatus(status), finish_ms or 0)
