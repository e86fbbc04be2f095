"""What a fastdtm node's costs do as the data grows (issue 19, "cost as data grows").

One private redis-server, one fastdtm node on it (default settings: 256 shards, cron every second). The
store is filled in steps, straight through fastdtm's own store code (`RedisStore.create`, the script a
submit runs), with unfinished sagas (2 steps, `submitted`, retrying: due at random times a day from now, so the
cron finds the shards full but nothing due) and then finished ones (`succeed`, awaiting expiry).
After each step, with the node idle but for the measurements:

- claim time per tick: the node's `fastdtm_claim_duration_seconds` over a window (one tick = one
  `claim_due` on every shard, pipelined), and the Redis commands/s and node CPU of that idle window;
- submit latency: sequential 2-step sagas with empty URLs and `wait_result` (p50/p99 of the HTTP call);
- `/all` paging: the first page (limit 100), each of the next pages walked by cursor, and a page filtered
  by a status no transaction has (`failed`): a filter the index cannot answer, so it shows the scan;
- Redis memory per transaction: `used_memory` growth ÷ transactions added.

And, apart, bytes per transaction in Redis for the same finished 2-step saga submitted over HTTP to fastdtm
and to Go DTM v1.19.0 (scripts/install-go-dtm.sh), each on its own flushed Redis.

    .venv/bin/python bench/growth.py                                   # 0, 100k, 1M unfinished; +2M finished
    .venv/bin/python bench/growth.py --unfinished 0,10000 --finished 20000 --compare 2000   # a quick look

Results: a table on stdout and bench/results/growth-<time>.json. No assertion on any figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    GO_DTM_BIN,
    LOOPBACK,
    Managed,
    RedisAdmin,
    free_port,
    parse_info,
    spawn,
    start_redis,
    tree_cpu_seconds,
    write_go_dtm_config,
)

from fastdtm.models import Branch, Options, Transaction
from fastdtm.sharding import Keys
from fastdtm.states import TransStatus, TransType
from fastdtm.store.redis import SCRIPTS, RedisStore, Script
from fastdtm.store.redis_client import connect

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
LOAD_BATCH = 2_000


@dataclass
class Level:
    unfinished: int
    finished: int
    claim_ms_per_tick: float
    ticks: int
    idle_redis_commands_per_s: float
    idle_node_cpu_percent: float
    submit_p50_ms: float
    submit_p99_ms: float
    all_first_page_ms: float
    all_next_pages_ms: float
    all_filtered_ms: float
    used_memory_mb: float
    bytes_per_added_trans: float | None


def saga(gid: str, now: int, status: TransStatus, next_cron_ms: int) -> tuple[Transaction, list[Branch]]:
    """The shape a 2-step HTTP saga stores: four branch records with URLs and small bodies."""
    trans = Transaction(gid, TransType.SAGA, status, Options(), now, now, next_cron_interval_ms=10_000)
    trans = trans.with_status(status, now, schedule=(next_cron_ms, 10_000))
    body = '{"amount":30}'
    branches = [
        Branch("01", "compensate", "http://busi.example:8081/api/TransOutRevert", body, now),
        Branch("01", "action", "http://busi.example:8081/api/TransOut", body, now),
        Branch("02", "compensate", "http://busi.example:8081/api/TransInRevert", body, now),
        Branch("02", "action", "http://busi.example:8081/api/TransIn", body, now),
    ]
    return trans, branches


async def load(store: RedisStore, count: int, status: TransStatus, stem: str) -> None:
    """`count` transactions through the create script, LOAD_BATCH at a time (the client pipelines them)."""
    rng = random.Random(stem)
    done = 0
    started = time.monotonic()
    while done < count:
        now = int(time.time() * 1000)
        batch = []
        for i in range(done, min(done + LOAD_BATCH, count)):
            # Due after the run (a backlog retrying with long intervals): the cron finds the shards full, none due.
            due = 0 if status is TransStatus.SUCCEED else now + DAY_MS + rng.randrange(HOUR_MS)
            batch.append(saga(f"{stem}-{i}", now, status, due))
        await asyncio.gather(*(store.create(t, b) for t, b in batch))
        done += len(batch)
    rate = count / max(time.monotonic() - started, 1e-9)
    print(f"  loaded {count:,} {status} transactions ({rate:,.0f}/s)", flush=True)


async def redis_numbers(port: int) -> tuple[int, int]:
    """(used_memory, total commands processed)."""
    admin = await RedisAdmin.connect(port)
    try:
        _, memory = parse_info(await admin.command("INFO", "memory"))
        _, stats = parse_info(await admin.command("INFO", "stats"))
    finally:
        await admin.close()
    return int(memory["used_memory"]), int(stats["total_commands_processed"])


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


async def measure(
    client: httpx.AsyncClient, node: Managed, port: int, args: argparse.Namespace, counts: tuple[int, int]
) -> tuple[Level, int]:
    # Idle window: the cron's claims over every shard, nothing due.
    before = (await client.get("/api/metrics")).text
    cpu0, (_, cmds0), t0 = tree_cpu_seconds(node.pid), await redis_numbers(port), time.monotonic()
    await asyncio.sleep(args.idle_seconds)
    after = (await client.get("/api/metrics")).text
    cpu1, (memory, cmds1), t1 = tree_cpu_seconds(node.pid), await redis_numbers(port), time.monotonic()
    ticks = int(
        metric(after, "fastdtm_claim_duration_seconds_count") - metric(before, "fastdtm_claim_duration_seconds_count")
    )
    claim_s = metric(after, "fastdtm_claim_duration_seconds_sum") - metric(before, "fastdtm_claim_duration_seconds_sum")

    latencies = []
    for _ in range(args.submits):
        gid = f"probe-{uuid.uuid4().hex}"
        body = {
            "gid": gid,
            "trans_type": "saga",
            "steps": [{"action": "", "compensate": ""}, {"action": "", "compensate": ""}],
            "payloads": ["", ""],
            "wait_result": True,
        }
        started = time.perf_counter()
        reply = await client.post("/api/dtmsvr/submit", json=body)
        latencies.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
    latencies.sort()

    first = []
    for _ in range(5):
        started = time.perf_counter()
        page = (await client.get("/api/dtmsvr/all", params={"limit": 100})).json()
        first.append((time.perf_counter() - started) * 1000)
    position, walked = page["next_position"], []
    for _ in range(args.pages):
        if not position:
            break
        started = time.perf_counter()
        page = (await client.get("/api/dtmsvr/all", params={"limit": 100, "position": position})).json()
        walked.append((time.perf_counter() - started) * 1000)
        position = page["next_position"]
    # The filter walks the create-time index and reads each transaction: bounded here, its growth is the point.
    started = time.perf_counter()
    try:
        await client.get("/api/dtmsvr/all", params={"limit": 10, "status": "failed"}, timeout=args.filter_timeout)
        filtered = (time.perf_counter() - started) * 1000
    except httpx.TimeoutException:
        filtered = float("inf")

    level = Level(
        unfinished=counts[0],
        finished=counts[1],
        claim_ms_per_tick=claim_s * 1000 / ticks if ticks else float("nan"),
        ticks=ticks,
        idle_redis_commands_per_s=(cmds1 - cmds0) / (t1 - t0),
        idle_node_cpu_percent=100 * (cpu1 - cpu0) / (t1 - t0),
        submit_p50_ms=latencies[len(latencies) // 2],
        submit_p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        all_first_page_ms=statistics.median(first),
        all_next_pages_ms=statistics.median(walked) if walked else float("nan"),
        all_filtered_ms=filtered,
        used_memory_mb=memory / 1e6,
        bytes_per_added_trans=None,
    )
    return level, memory


async def wait_ready(client: httpx.AsyncClient, node: Managed) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (await client.get("/api/ready")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the node did not get ready:\n{node.log_tail()}")


async def growth(args: argparse.Namespace, stack: ExitStack, log_dir: Path) -> list[Level]:
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    _, port = start_redis(stack, redis_server, None, log_dir)
    url = f"redis://{LOOPBACK}:{port}/0"
    http_port = free_port()
    argv = [str(Path(sys.executable).with_name("fastdtm")), "serve", "--store", url, "--host", LOOPBACK]
    argv += ["--port", str(http_port), "--grpc-port", "0", "--workers", "1", "--log-level", "warning"]
    node = spawn("fastdtm", argv, None, log_dir)
    stack.callback(node.stop)
    store = RedisStore(connect(url, preload=[Script(n).source for n in SCRIPTS]), Keys(), DAY_MS)
    levels: list[Level] = []
    async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{http_port}", timeout=60) as client:
        await wait_ready(client, node)
        await asyncio.sleep(2)  # the node's leases taken, its cron polling
        memory_before = (await redis_numbers(port))[0]
        loaded_unfinished = 0
        steps = [(n, 0) for n in args.unfinished] + ([(args.unfinished[-1], args.finished)] if args.finished else [])
        for unfinished, finished in steps:
            added = 0
            if unfinished > loaded_unfinished:
                await load(store, unfinished - loaded_unfinished, TransStatus.SUBMITTED, f"u{loaded_unfinished}")
                added, loaded_unfinished = unfinished - loaded_unfinished, unfinished
            if finished:
                await load(store, finished, TransStatus.SUCCEED, "f")
                added = finished
            level, memory = await measure(client, node, port, args, (unfinished, finished))
            if added:
                level.bytes_per_added_trans = (memory - memory_before) / added
            memory_before = memory
            levels.append(level)
            print("  " + json.dumps(asdict(level)), flush=True)
    await store.close()
    return levels


async def bytes_per_saga(server: str, count: int, stack: ExitStack, log_dir: Path) -> float:
    """Redis bytes per finished 2-step HTTP saga (empty branch URLs) submitted over the HTTP API."""
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    _, port = start_redis(stack, redis_server, None, log_dir)
    http_port = free_port()
    if server == "go":
        conf = write_go_dtm_config(
            log_dir / "dtm.yml", redis_port=port, http_port=http_port, grpc_port=free_port(), jsonrpc_port=free_port()
        )
        node = spawn("godtm", [str(GO_DTM_BIN), "-c", str(conf)], None, log_dir)
    else:
        argv = [str(Path(sys.executable).with_name("fastdtm")), "serve", "--store", f"redis://{LOOPBACK}:{port}/0"]
        argv += ["--host", LOOPBACK, "--port", str(http_port), "--grpc-port", "0", "--log-level", "warning"]
        node = spawn("fastdtm-compare", argv, None, log_dir)
    stack.callback(node.stop)
    async with httpx.AsyncClient(base_url=f"http://{LOOPBACK}:{http_port}", timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await client.get("/api/dtmsvr/newGid")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server} did not start:\n{node.log_tail()}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        before = (await redis_numbers(port))[0]
        gate = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            body = {
                "gid": f"cmp-{i}-{uuid.uuid4().hex[:8]}",
                "trans_type": "saga",
                "steps": [{"action": "", "compensate": ""}, {"action": "", "compensate": ""}],
                "payloads": ['{"amount":30}', '{"amount":30}'],
                "wait_result": True,
            }
            async with gate:
                (await client.post("/api/dtmsvr/submit", json=body)).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.sleep(2)  # Go DTM writes branch results in the background
        after = (await redis_numbers(port))[0]
    node.stop()
    return (after - before) / count


def table(levels: list[Level]) -> str:
    head = (
        "| unfinished | finished | claim ms/tick (256 shards) | idle Redis cmds/s | idle node CPU % "
        "| submit p50 / p99 ms | /all first page ms | /all next pages ms | /all status=failed ms | Redis MB "
        "| bytes/trans added |"
    )
    rows = [head, "|" + "--:|" * 11]
    for lv in levels:
        added = "" if lv.bytes_per_added_trans is None else f"{lv.bytes_per_added_trans:,.0f}"
        rows.append(
            f"| {lv.unfinished:,} | {lv.finished:,} | {lv.claim_ms_per_tick:.2f} | {lv.idle_redis_commands_per_s:,.0f}"
            f" | {lv.idle_node_cpu_percent:.1f} | {lv.submit_p50_ms:.2f} / {lv.submit_p99_ms:.2f}"
            f" | {lv.all_first_page_ms:.1f} | {lv.all_next_pages_ms:.1f} | {lv.all_filtered_ms:,.0f}"
            f" | {lv.used_memory_mb:,.0f} | {added} |"
        )
    return "\n".join(rows)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--unfinished", type=lambda s: [int(x) for x in s.split(",")], default=[0, 100_000, 1_000_000])
    p.add_argument("--finished", type=int, default=2_000_000, help="finished transactions loaded last (0: none)")
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--submits", type=int, default=300)
    p.add_argument("--pages", type=int, default=20)
    p.add_argument("--filter-timeout", type=float, default=30.0, help="s the status-filtered /all may take")
    p.add_argument("--compare", type=int, default=20_000, help="sagas for the bytes-per-saga comparison (0: skip)")
    return p.parse_args()


async def main() -> None:
    args = parse_args()
    log_dir = Path(tempfile.mkdtemp(prefix="fastdtm-growth-"))
    print(f"logs: {log_dir}", flush=True)
    with ExitStack() as stack:
        levels = await growth(args, stack, log_dir)
        compare: dict[str, Any] = {}
        if args.compare:
            compare["fastdtm"] = await bytes_per_saga("fastdtm", args.compare, stack, log_dir)
            if GO_DTM_BIN.exists():
                compare["go_dtm"] = await bytes_per_saga("go", args.compare, stack, log_dir)
    print(table(levels))
    for server, value in compare.items():
        print(f"Redis bytes per finished 2-step saga over HTTP, {server}: {value:,.0f}")
    out = Path(__file__).resolve().parent / "results" / f"growth-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"args": vars(args), "levels": [asdict(lv) for lv in levels], "bytes_per_saga": compare}))
    print(f"results: {out}")


if __name__ == "__main__":
    asyncio.run(main())
