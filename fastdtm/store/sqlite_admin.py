"""The embedded store's console operations: the SQL twins of `lua/admin_pause.lua`, `admin_resume.lua` and
`admin_mark.lua` (same checks first, same tagged replies), and the reads of the console's views.

The columns hold what the Redis hash fields hold (`paused`, `failing_since`, `retries`; a branch row's
`last_error` and `operator` are `e<i>` and `o<i>`), and `attention` is the score of Redis's `att` index.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from fastdtm.models import PAUSED_MS, Branch, Transaction
from fastdtm.notes import BranchError, Mark, Notes, decode_error, decode_mark
from fastdtm.states import TERMINAL
from fastdtm.store.base import BranchMarking
from fastdtm.store.sqlite_trans import ALIVE, Reply, load

_RETRYING = ("submitted", "aborting")


def load_notes(conn: sqlite3.Connection, gid: str, wall_ms: int) -> tuple[Transaction, list[Branch], Notes] | None:
    loaded = load(conn, gid, wall_ms)
    if loaded is None:
        return None
    paused, failing_since, retries, held_until = conn.execute(
        "SELECT paused, failing_since, retries, held_until FROM trans WHERE gid = ?", (gid,)
    ).fetchone()
    errors: dict[int, BranchError] = {}
    marks: dict[int, Mark] = {}
    rows = conn.execute("SELECT idx, last_error, operator FROM branch WHERE gid = ? ORDER BY idx", (gid,))
    for index, error, mark in rows:
        if error is not None:
            errors[index] = decode_error(error)
        if mark is not None:
            marks[index] = decode_mark(mark)
    notes = Notes(paused or 0, failing_since or 0, retries or 0, held_until or 0, errors, marks)
    return loaded[0], loaded[1], notes


def pause(conn: sqlite3.Connection, gid: str, now_ms: int, holder: str, wall_ms: int) -> Reply:
    """admin_pause.lua."""
    query = f"SELECT status, held_until, paused, attention FROM trans WHERE gid = ? AND {ALIVE}"
    row = conn.execute(query, (gid, wall_ms)).fetchone()
    if row is None:
        return ("NOT_FOUND",)
    status, held_until, paused, attention = row
    if status not in _RETRYING:
        return ("STALE", status)
    if paused is not None:
        return ("ALREADY", str(paused))
    if held_until > now_ms:
        return ("HELD", str(held_until))
    conn.execute(
        "UPDATE trans SET paused = ?, holder = ?, held_until = 0, update_time = ?, next_cron_time = ?, attention = ?"
        " WHERE gid = ?",
        (now_ms, holder, now_ms, PAUSED_MS, now_ms if attention is None else attention, gid),
    )
    return ("OK",)


def resume(conn: sqlite3.Connection, gid: str, now_ms: int, wall_ms: int) -> Reply:
    """admin_resume.lua."""
    query = f"SELECT status, paused, failing_since, attention FROM trans WHERE gid = ? AND {ALIVE}"
    row = conn.execute(query, (gid, wall_ms)).fetchone()
    if row is None:
        return ("NOT_FOUND",)
    status, paused, failing_since, attention = row
    if paused is None or status in TERMINAL:
        return ("NOT_PAUSED", status)
    conn.execute(
        "UPDATE trans SET paused = NULL, update_time = ?, next_cron_time = ?, attention = ? WHERE gid = ?",
        (now_ms, now_ms, None if failing_since is None else attention, gid),
    )
    return ("OK",)


def mark_branch(conn: sqlite3.Connection, m: BranchMarking, wall_ms: int) -> Reply:
    """admin_mark.lua."""
    query = f"SELECT status, held_until, paused FROM trans WHERE gid = ? AND {ALIVE}"
    row = conn.execute(query, (m.gid, wall_ms)).fetchone()
    if row is None:
        return ("NOT_FOUND",)
    status, held_until, paused = row
    if status != m.expected:
        return ("STALE", status)
    if held_until > m.now_ms:
        return ("HELD", str(held_until))
    branch = conn.execute(
        "SELECT branch_id, op, status, finish_time FROM branch WHERE gid = ? AND idx = ?", (m.gid, m.index)
    ).fetchone()
    if branch is None or branch[:2] != (m.branch_id, m.op):
        return ("NO_BRANCH",)
    if branch[2] is not None:
        return ("BRANCH_DONE", f"{branch[2]} {branch[3]}")
    conn.execute(
        "UPDATE branch SET status = ?, finish_time = ?, operator = ? WHERE gid = ? AND idx = ?",
        (m.status, m.now_ms, m.mark, m.gid, m.index),
    )
    schedule: dict[str, Any] = {} if paused is not None else {"next_cron_time": m.now_ms}
    assignments = "".join(f", {name} = ?" for name in schedule)
    conn.execute(
        f"UPDATE trans SET holder = ?, held_until = 0, update_time = ?{assignments} WHERE gid = ?",
        (m.holder, m.now_ms, *schedule.values(), m.gid),
    )
    return ("OK",)


def attention(conn: sqlite3.Connection, after: tuple[int, str] | None, limit: int) -> list[tuple[str, int]]:
    """The att index's page after the cursor, oldest first."""
    since, gid = after or (-1, "")
    rows = conn.execute(
        "SELECT gid, attention FROM trans WHERE attention IS NOT NULL AND (attention, gid) > (?, ?)"
        " ORDER BY attention, gid LIMIT ?",
        (since, gid, limit + 1),
    )
    return [(str(g), int(a)) for g, a in rows]


def unfinished_count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM trans WHERE next_cron_time IS NOT NULL").fetchone()[0])


def nodes(conn: sqlite3.Connection, wall_ms: int) -> list[tuple[str, int]]:
    rows = conn.execute("SELECT node_id, expire_at FROM node WHERE expire_at > ? ORDER BY node_id", (wall_ms,))
    return [(str(node), int(expiry)) for node, expiry in rows]
