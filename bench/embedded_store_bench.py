"""Throughput of the embedded (SQLite) store: creates and transitions per second, on a real file.

    .venv/bin/python bench/embedded_store_bench.py [--n 5000] [--concurrency 1 64] [--dir /tmp]

Each transaction is a 2-step saga (4 branch records) created `submitted`, then finished with one transition
that records its two actions and `succeed`: the store calls of an all-empty-URL saga (DESIGN §4). One run
per concurrency level, on uvloop, each on a fresh file in `--dir` (on the disk to measure: every commit is
fsynced, `synchronous=FULL`). Figures are the store alone, without HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import uvloop

from fastdtm.models import Branch, Options, Transaction
from fastdtm.states import BranchStatus, TransStatus, TransType
from fastdtm.store.base import Change
from fastdtm.store.embedded import EmbeddedStore


def saga(gid: str, now: int) -> tuple[Transaction, list[Branch]]:
    trans = Transaction(gid, TransType.SAGA, TransStatus.SUBMITTED, Options(), now, now, next_cron_ms=now + 10_000)
    branches = [Branch(f"{i:02d}", op, "", '{"amount": 30}', now) for i in (1, 2) for op in ("compensate", "action")]
    return trans, branches


async def one(store: EmbeddedStore, gid: str, now: int) -> None:
    trans, branches = saga(gid, now)
    await store.create(trans, branches)
    done = {i: branches[i].with_status(BranchStatus.SUCCEED, now) for i in (1, 3)}
    await store.transition(Change(gid, TransStatus.SUBMITTED, TransStatus.SUCCEED, now, done))


async def run(path: Path, n: int, concurrency: int) -> float:
    """Seconds for n create + transition pairs, `concurrency` at a time."""
    store = await EmbeddedStore.open(str(path), 86_400_000)
    now = time.time_ns() // 1_000_000
    pending = iter(range(n))

    async def worker() -> None:
        for i in pending:
            await one(store, f"bench-{i}", now)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started
    finally:
        await store.close()


async def main(n: int, levels: list[int], directory: str | None) -> None:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for concurrency in levels:
            seconds = await run(Path(tmp) / f"c{concurrency}.db", n, concurrency)
            print(
                f"concurrency {concurrency:>3}: {n / seconds:7.0f} create+transition pairs/s "
                f"({2 * n / seconds:7.0f} writes/s, {seconds * 1e6 / (2 * n):6.0f} us per write)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="transactions per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64], help="runs, by tasks in flight")
    parser.add_argument("--dir", default=None, help="directory for the database files (default: the temp dir)")
    args = parser.parse_args()
    uvloop.run(main(args.n, args.concurrency, args.dir))
