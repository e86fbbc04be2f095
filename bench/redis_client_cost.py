"""What one store command costs the node's own Redis client, in CPU: EVALSHA of a real store script over 256 shards,
1,024 at a time (as a busy node's rounds issue them), on a private standalone Redis and a private 3-master cluster.

    .venv/bin/python bench/redis_client_cost.py                   # this tree
    .venv/bin/python bench/redis_client_cost.py --tree /tmp/old   # another checkout (`git worktree add /tmp/old REV`)
    .venv/bin/python bench/redis_client_cost.py --durable         # what --redis-wait-replicas 1 costs

CPU time of this process only (`time.process_time`), best of 5 repetitions: the client's cost without the
server's. Compare trees in one run of this script each, alternating, on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BATCHES = 40
IN_FLIGHT = 1024


async def measure(url: str, replicas: int = 0) -> float:
    """Microseconds of CPU per command, best of 5; `replicas`: durable writes, confirmed by that many (WAIT)."""
    script = importlib.import_module("fastdtm.store.redis").Script("lease_renew", durable=replicas > 0)
    client = connect(url, replicas)
    keys = [f"{{t{i}}}:lease" for i in range(256)]
    try:
        await asyncio.gather(*(script.run(client, [k], ["x", 1000]) for k in keys))  # connected, map read
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for _ in range(BATCHES):
                await asyncio.gather(*(script.run(client, [k], ["x", 1000]) for k in keys for _ in range(4)))
            best = min(best, time.process_time() - started)
    finally:
        await client.aclose()
    return best / (BATCHES * IN_FLIGHT) * 1e6


def connect(url: str, replicas: int = 0) -> Any:
    """The tree's `connect`: in `redis_client` since issue 13, in `resp` before (no durable writes there)."""
    try:
        module = importlib.import_module("fastdtm.store.redis_client")
    except ModuleNotFoundError:
        return importlib.import_module("fastdtm.store.resp").connect(url)
    timeouts = importlib.import_module("fastdtm.store.resp").Timeouts(replicas=replicas)
    return module.connect(url, timeouts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO_ROOT, help="the checkout whose client is measured")
    parser.add_argument(
        "--durable", action="store_true", help="on a 3 + 3 cluster: plain writes, then writes a replica confirms"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree))
    sys.path.insert(1, str(REPO_ROOT))  # the test support that starts the servers
    import uvloop

    from tests.support.redis_servers import RedisCluster, RedisServer

    if args.durable:
        with RedisCluster(replicas=1) as replicated:
            for replicas in (0, 1):
                started = time.perf_counter()
                cost = uvloop.run(measure(replicated.url, replicas))
                rate = BATCHES * IN_FLIGHT * 5 / (time.perf_counter() - started)
                print(f"{args.tree}: 3+3 cluster, wait for {replicas} replica(s): {cost:.2f} µs CPU, {rate:,.0f}/s")
        return
    with RedisServer() as server, RedisCluster() as cluster:
        for name, url in (("standalone", server.url), ("cluster", cluster.url)):
            cost = uvloop.run(measure(url))
            print(f"{args.tree}: {name:<10} {cost:.2f} µs CPU per EVALSHA")


if __name__ == "__main__":
    main()
