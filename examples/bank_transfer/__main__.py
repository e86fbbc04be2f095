"""`python -m examples.bank_transfer`: start a private PostgreSQL (two databases, one per bank), a fastdtm node
on the embedded store unless one answers at --dtm, and the two bank services; then transfer money from
alice (bank A) to bob (bank B) as a saga, a TCC and a two-phase message, a refused transfer of each kind
rolled back, printing the balances after each and checking that no money was created or lost.
Exit status 0 when every check held."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from fastdtm_client import DtmClient

from .scenario import Banks, run_transfers

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DTM = "http://127.0.0.1:36789/api/dtmsvr"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.bank_transfer", description=__doc__)
    parser.add_argument("--dtm", default=DEFAULT_DTM, help="the coordinator; started here (embedded store) if down")
    parser.add_argument("--pg-dsn", default=None, help="a PostgreSQL superuser DSN instead of a private server")
    return parser.parse_args(argv)


def dtm_answers(dtm: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{dtm}/newGid", timeout=1).status_code == 200
    return False


@contextlib.contextmanager
def coordinator(dtm: str) -> Iterator[str]:
    """`dtm` if it answers; else a fastdtm node on the embedded store at that URL's port, stopped at the end."""
    if dtm_answers(dtm):
        print(f"using the coordinator at {dtm}")
        yield dtm
        return
    sys.path.insert(0, str(REPO_ROOT))
    from tests.support.node import FastdtmNode

    port = httpx.URL(dtm).port or 36789
    with tempfile.TemporaryDirectory(prefix="bank-transfer-") as directory:
        node = FastdtmNode(f"sqlite:///{directory}/fastdtm.db", port=port, workdir=Path(directory))
        print(f"started a fastdtm node at {node.dtm} (pid {node.pid})")
        try:
            yield node.dtm
        finally:
            node.stop()


@contextlib.contextmanager
def postgres(dsn: str | None) -> Iterator[tuple[str, str]]:
    """The DSNs of bank A's and bank B's databases, created fresh."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.support.postgres import PostgresServer

    if dsn is not None:
        yield _fresh_databases_at(dsn)
        return
    with PostgresServer() as server:
        print(f"started a private PostgreSQL on port {server.port}")
        server.create_database("bank_a")
        server.create_database("bank_b")
        yield server.dsn("bank_a"), server.dsn("bank_b")


def _fresh_databases_at(dsn: str) -> tuple[str, str]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in ("bank_a", "bank_b"):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = dsn.rsplit("/", 1)[0]
    return f"{base}/bank_a", f"{base}/bank_b"


async def run(dtm_url: str, dsns: tuple[str, str]) -> bool:
    async with DtmClient(dtm_url) as dtm, Banks.started(*dsns) as banks:
        return await run_transfers(dtm, banks)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    with postgres(args.pg_dsn) as dsns, coordinator(args.dtm) as dtm_url:
        consistent = asyncio.run(run(dtm_url, dsns))
    print(f"{'consistent' if consistent else 'INCONSISTENT'} after {time.monotonic() - started:.1f}s")
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())
