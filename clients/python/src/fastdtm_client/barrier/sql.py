"""The barrier's two statements in each SQL dialect, parameterised (only the checked table name is formatted)."""

from __future__ import annotations

from typing import Final

from .core import checked_table

NAMES: Final = ("trans_type", "gid", "branch_id", "op", "barrier_id", "reason")
COLUMNS: Final = f"({', '.join(NAMES)})"
#: The unique constraint the PostgreSQL migration creates; ON CONFLICT names it, as DTM's SDKs do.
PG_CONSTRAINT: Final = "uniq_barrier"


def postgres_insert(table: str, placeholder: str = "$") -> str:
    """`placeholder` "$" gives asyncpg's $1..$6, "%s" psycopg's, ":" SQLAlchemy's named parameters."""
    if placeholder == "$":
        marks = ", ".join(f"${i}" for i in range(1, 7))
    elif placeholder == ":":
        marks = ", ".join(f":{name}" for name in NAMES)
    else:
        marks = ", ".join(["%s"] * 6)
    return (
        f"INSERT INTO {checked_table(table)} {COLUMNS} VALUES ({marks}) "
        f"ON CONFLICT ON CONSTRAINT {PG_CONSTRAINT} DO NOTHING"
    )


def postgres_reason(table: str, placeholder: str = "$") -> str:
    marks = ["$1", "$2", "$3", "$4"] if placeholder == "$" else ["%s"] * 4
    return (
        f"SELECT reason FROM {checked_table(table)} "
        f"WHERE gid = {marks[0]} AND branch_id = {marks[1]} AND op = {marks[2]} AND barrier_id = {marks[3]}"
    )


#: MySQL's "duplicate entry" error: the row exists. The MySQL insert is a plain INSERT whose duplicate-key error
#: counts as "0 rows": INSERT IGNORE would do the same, but drivers (aiomysql) turn its warning into a Python
#: warning on every repeated call, and InnoDB rolls back only the failed statement, not the transaction.
MYSQL_DUPLICATE_ENTRY: Final = 1062


def mysql_insert(table: str, placeholder: str = "%s") -> str:
    """`placeholder` "%s" for DB-API drivers; ":" for SQLAlchemy's named parameters."""
    marks = ", ".join(f":{name}" if placeholder == ":" else "%s" for name in NAMES)
    return f"INSERT INTO {checked_table(table)} {COLUMNS} VALUES ({marks})"


def mysql_reason(table: str) -> str:
    return (
        f"SELECT reason FROM {checked_table(table)} WHERE gid = %s AND branch_id = %s AND op = %s AND barrier_id = %s"
    )
