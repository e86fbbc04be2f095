"""What an idle node costs: Redis commands/s and CPU, per node and with 3 nodes (issue 19, item 3).

One private redis-server (no persistence, loopback), then, with nothing submitted:

1. one fastdtm node (default settings, 256 shards): once it holds every lease and has settled (the first full
   round of shard looks behind it), a window of `--seconds`;
2. `--nodes` nodes (3) on the same Redis: two more join, the leases split, the same window;
3. Go DTM v1.19.0 (scripts/install-go-dtm.sh) on a redis-server of its own, the same window.

Over each window: Redis commands/s (`INFO stats` total_commands_processed, commands inside scripts count,
the harness's own INFO taken off), calls/s per command (`INFO commandstats`), the CPU of each node's process
tree and of redis-server (% of one core, from /proc), and from each node's /api/metrics its shard looks/s
(`fastdtm_shard_looks_total`, absent before it existed), claim_due calls/s and store calls/s by script.

    .venv/bin/python bench/idle.py                                       # ~2.5 min (--seconds 60: ~4 min)
    git worktree add --detach /tmp/wt-idle-head HEAD                     # e.g. the last commit, to compare
    .venv/bin/python bench/idle.py --pythonpath /tmp/wt-idle-head --label before --no-godtm

Results: tables on stdout and bench/results/idle-<time>.json. No assertion on any figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from benchlib import (
    GO_DTM_BIN,
    LOOPBACK,
    REPO_ROOT,
    Managed,
    RedisAdmin,
    check_alive,
    free_port,
    parse_info,
    redis_version,
    spawn,
    start_redis,
    terminate,
    tree_cpu_seconds,
    wait_ready,
    write_go_dtm_config,
    write_results,
)

SHARDS = 256
# One `INFO stats commandstats` per snapshot: a window's delta holds the first one (INFO counts once it has run).
OWN_INFO_CALLS = 1


@dataclass
class Server:
    """A coordinator this run started: its process and, for fastdtm, where its metrics are."""

    name: str
    proc: Managed
    url: str
    metrics: bool


@dataclass
class NodeCost:
    name: str
    cpu_percent: float
    leases: int | None = None
    shard_looks_per_s: float | None = None  # None: the tree has no fastdtm_shard_looks_total
    claim_due_per_s: float | None = None
    store_calls_per_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Phase:
    name: str
    seconds: float
    redis_commands_per_s: float
    redis_cpu_percent: float
    commands_per_s: dict[str, float]
    nodes: list[NodeCost]
    load_average: float

    @property
    def node_cpu_percent(self) -> float:
        return sum(n.cpu_percent for n in self.nodes)


@dataclass
class Snapshot:
    at: float
    calls: dict[str, int]
    total: int
    redis_cpu: float
    cpu: dict[str, float]
    metrics: dict[str, dict[str, float]]


# ----------------------------------------------------------------------------- reading


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {series (name with its labels): value}."""
    series: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            series[name] = float(value)
    return series


def by_script(metrics: dict[str, float]) -> dict[str, float]:
    prefix = 'fastdtm_store_calls_total{script="'
    return {k[len(prefix) : -2]: v for k, v in metrics.items() if k.startswith(prefix)}


async def scrape(client: httpx.AsyncClient, server: Server) -> dict[str, float]:
    return parse_metrics((await client.get(server.url + "/api/metrics")).text) if server.metrics else {}


async def snapshot(client: httpx.AsyncClient, admin: RedisAdmin, redis: Managed, servers: list[Server]) -> Snapshot:
    metrics = {s.name: await scrape(client, s) for s in servers}
    cpu = {s.name: tree_cpu_seconds(s.proc.pid) for s in servers}
    calls, fields = parse_info(await admin.command("INFO", "stats", "commandstats"))
    return Snapshot(
        time.monotonic(), calls, int(fields["total_commands_processed"]), tree_cpu_seconds(redis.pid), cpu, metrics
    )


def node_cost(server: Server, a: Snapshot, b: Snapshot) -> NodeCost:
    elapsed = b.at - a.at
    cost = NodeCost(server.name, round(100 * (b.cpu[server.name] - a.cpu[server.name]) / elapsed, 2))
    if not server.metrics:
        return cost
    before, after = a.metrics[server.name], b.metrics[server.name]
    cost.leases = int(after.get("fastdtm_shard_leases_held", 0))
    if "fastdtm_shard_looks_total" in after:
        looks = after["fastdtm_shard_looks_total"] - before.get("fastdtm_shard_looks_total", 0)
        cost.shard_looks_per_s = round(looks / elapsed, 2)
    old = by_script(before)
    cost.store_calls_per_s = {k: round((v - old.get(k, 0)) / elapsed, 2) for k, v in sorted(by_script(after).items())}
    cost.claim_due_per_s = cost.store_calls_per_s.get("claim_due", 0.0)
    return cost


async def measure(
    name: str, seconds: float, redis: Managed, port: int, servers: list[Server], client: httpx.AsyncClient
) -> Phase:
    admin = await RedisAdmin.connect(port)
    try:
        a = await snapshot(client, admin, redis, servers)
        await asyncio.sleep(seconds)
        b = await snapshot(client, admin, redis, servers)
    finally:
        await admin.close()
    for server in servers:
        check_alive(server.proc)
    elapsed = b.at - a.at
    deltas = {k: v - a.calls.get(k, 0) for k, v in b.calls.items()}
    deltas["info"] = deltas.get("info", 0) - OWN_INFO_CALLS
    per_s = {k: round(v / elapsed, 2) for k, v in sorted(deltas.items(), key=lambda kv: -kv[1]) if v > 0}
    return Phase(
        name=name,
        seconds=round(elapsed, 2),
        redis_commands_per_s=round((b.total - a.total - OWN_INFO_CALLS) / elapsed, 1),
        redis_cpu_percent=round(100 * (b.redis_cpu - a.redis_cpu) / elapsed, 2),
        commands_per_s=per_s,
        nodes=[node_cost(s, a, b) for s in servers],
        load_average=round(os.getloadavg()[0], 2),
    )


# ----------------------------------------------------------------------------- starting


def node_env(args: argparse.Namespace, node_id: str) -> dict[str, str]:
    env = {**os.environ, "FASTDTM_NODE_ID": node_id}
    if args.pythonpath:
        env["PYTHONPATH"] = str(args.pythonpath)  # ahead of the venv's editable install of this tree
    return env


def start_node(args: argparse.Namespace, index: int, redis_port: int, log_dir: Path) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "fastdtm", "serve", "--store", f"redis://{LOOPBACK}:{redis_port}/0"]
    argv += ["--host", LOOPBACK, "--port", str(port), "--grpc-port", "0", "--workers", "1", "--log-level", "warning"]
    name = f"{args.label}-node-{index}"
    cwd = args.pythonpath or REPO_ROOT
    proc = spawn(name, argv, None, log_dir, env=node_env(args, name), cwd=cwd)
    return Server(name, proc, f"http://{LOOPBACK}:{port}", metrics=True)


def start_godtm(redis_port: int, log_dir: Path) -> Server:
    port = free_port()
    conf = write_go_dtm_config(
        log_dir / "godtm.yml", redis_port=redis_port, http_port=port, grpc_port=free_port(), jsonrpc_port=free_port()
    )
    proc = spawn("godtm", [str(GO_DTM_BIN), "-c", str(conf)], None, log_dir, cwd=log_dir)
    return Server("godtm", proc, f"http://{LOOPBACK}:{port}", metrics=False)


async def leases(client: httpx.AsyncClient, servers: Sequence[Server]) -> list[int]:
    return [int((await scrape(client, s)).get("fastdtm_shard_leases_held", 0)) for s in servers]


async def wait_split(client: httpx.AsyncClient, servers: Sequence[Server], timeout: float) -> list[int]:
    """Until the nodes' leases cover every shard, each node holds some, and nothing moved for 3 s."""
    deadline, stable, last = time.monotonic() + timeout, 0, [-1]
    while time.monotonic() < deadline:
        for server in servers:
            check_alive(server.proc)
        held = await leases(client, servers)
        stable = stable + 1 if held == last else 0
        if sum(held) == SHARDS and min(held) > 0 and stable >= 6:
            return held
        last = held
        await asyncio.sleep(0.5)
    raise RuntimeError(f"leases did not settle within {timeout}s: {last}")


async def settle(client: httpx.AsyncClient, servers: Sequence[Server], args: argparse.Namespace) -> None:
    held = await wait_split(client, servers, args.lease_timeout)
    print(f"  leases {held}; settling {args.settle:g}s", flush=True)
    await asyncio.sleep(args.settle)


# ----------------------------------------------------------------------------- phases


async def fastdtm_phases(args: argparse.Namespace, stack: ExitStack, log_dir: Path) -> tuple[list[Phase], str]:
    redis, port = start_redis(stack, shutil.which("redis-server") or "/usr/bin/redis-server", None, log_dir)
    phases: list[Phase] = []
    async with httpx.AsyncClient(timeout=10) as client:
        servers: list[Server] = []
        for count in (1, args.nodes):
            while len(servers) < count:
                servers.append(start_node(args, len(servers) + 1, port, log_dir))
                stack.callback(servers[-1].proc.stop)
            for server in servers:
                await wait_ready(server.proc, server.url + "/api/ready", args.lease_timeout)
            print(f"{args.label}: {count} node(s) on redis :{port}", flush=True)
            await settle(client, servers, args)
            phases.append(await measure(f"{args.label}, {count} node(s)", args.seconds, redis, port, servers, client))
            print(phase_line(phases[-1]), flush=True)
    return phases, await redis_version(port)


async def godtm_phase(args: argparse.Namespace, stack: ExitStack, log_dir: Path) -> Phase:
    redis, port = start_redis(stack, shutil.which("redis-server") or "/usr/bin/redis-server", None, log_dir)
    server = start_godtm(port, log_dir)
    stack.callback(server.proc.stop)
    await wait_ready(server.proc, server.url + "/api/ping", args.lease_timeout)
    print(f"Go DTM on redis :{port}; settling {args.settle:g}s", flush=True)
    await asyncio.sleep(args.settle)
    async with httpx.AsyncClient(timeout=10) as client:
        phase = await measure("Go DTM v1.19.0", args.seconds, redis, port, [server], client)
    print(phase_line(phase), flush=True)
    return phase


# ----------------------------------------------------------------------------- report


def opt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def phase_line(p: Phase) -> str:
    return (
        f"  {p.name}: Redis {p.redis_commands_per_s:,.1f} cmds/s, Redis CPU {p.redis_cpu_percent:.2f}%, "
        f"node CPU {[n.cpu_percent for n in p.nodes]}, looks/s {[n.shard_looks_per_s for n in p.nodes]}"
    )


def summary_table(phases: Sequence[Phase]) -> str:
    rows = [
        "| setup | leases per node | Redis cmds/s | per node | node CPU % (sum) | node CPU % each | Redis CPU % "
        "| shard looks/s | claim_due/s | load avg |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for p in phases:
        looks = [n.shard_looks_per_s for n in p.nodes]
        claims = [n.claim_due_per_s for n in p.nodes]
        rows.append(
            f"| {p.name} | {' / '.join(str(n.leases) for n in p.nodes if n.leases is not None) or '-'}"
            f" | {p.redis_commands_per_s:,.1f} | {p.redis_commands_per_s / len(p.nodes):,.1f}"
            f" | {p.node_cpu_percent:.2f} | {' / '.join(f'{n.cpu_percent:.2f}' for n in p.nodes)}"
            f" | {p.redis_cpu_percent:.2f}"
            f" | {opt(None if None in looks else sum(x for x in looks if x is not None))}"
            f" | {opt(None if None in claims else sum(x for x in claims if x is not None))} | {p.load_average} |"
        )
    return "\n".join(rows)


def commands_table(phases: Sequence[Phase]) -> str:
    names: list[str] = []
    for p in phases:
        names += [c for c in p.commands_per_s if c not in names]
    rows = ["| command (calls/s) | " + " | ".join(p.name for p in phases) + " |", "|---|" + "--:|" * len(phases)]
    for c in names:
        rows.append(f"| {c} | " + " | ".join(opt(p.commands_per_s.get(c, 0.0)) for p in phases) + " |")
    return "\n".join(rows)


def scripts_table(phases: Sequence[Phase]) -> str:
    nodes = [(p.name, n) for p in phases for n in p.nodes if n.store_calls_per_s]
    # Lease renewals are pipelined past the per-script count (`renew_leases`): rows that stayed at 0 are left out.
    scripts = sorted({s for _, n in nodes for s, v in n.store_calls_per_s.items() if v})
    rows = ["| store calls/s | " + " | ".join(f"{p} {n.name}" for p, n in nodes) + " |", "|---|" + "--:|" * len(nodes)]
    for s in scripts:
        rows.append(f"| {s} | " + " | ".join(opt(n.store_calls_per_s.get(s, 0.0), 2) for _, n in nodes) + " |")
    return "\n".join(rows)


def tree_version(args: argparse.Namespace) -> dict[str, str]:
    """Which fastdtm the nodes ran: the tree, its commit, whether it had uncommitted changes, the module path."""
    tree = Path(args.pythonpath or REPO_ROOT)
    env = node_env(args, "probe")
    probe = [sys.executable, "-c", "import fastdtm; print(fastdtm.__file__)"]
    return {
        "tree": str(tree),
        "commit": git(tree, "rev-parse", "--short", "HEAD"),
        "uncommitted_changes": "yes" if git(tree, "status", "--porcelain", "--", "fastdtm") else "no",
        "module": run_text(probe, tree, env),
    }


def git(tree: Path, *argv: str) -> str:
    return run_text(["git", "-C", str(tree), *argv], tree, None)


def run_text(argv: list[str], cwd: Path, env: dict[str, str] | None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip()


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30.0, help="measured window of each phase (default 30)")
    p.add_argument("--settle", type=float, default=12.0, help="wait after the leases settle (default 12)")
    p.add_argument("--nodes", type=int, default=3, help="nodes in the second phase (default 3)")
    p.add_argument("--lease-timeout", type=float, default=60.0, help="s to wait for readiness and leases")
    p.add_argument(
        "--godtm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure Go DTM v1.19.0 too (default: when .tools/go-dtm/bin/dtm exists)",
    )
    p.add_argument("--pythonpath", type=Path, help="run the nodes from this tree (e.g. a git worktree)")
    p.add_argument("--label", default="fastdtm", help="name of this tree's rows (default fastdtm)")
    args = p.parse_args(argv)
    if args.godtm and not GO_DTM_BIN.exists():
        p.error(f"{GO_DTM_BIN} is missing: scripts/install-go-dtm.sh builds it, or pass --no-godtm")
    if args.godtm is None:
        args.godtm = GO_DTM_BIN.exists()
        if not args.godtm:
            print(f"Go DTM skipped: {GO_DTM_BIN} is missing (scripts/install-go-dtm.sh)", flush=True)
    if args.pythonpath:
        args.pythonpath = args.pythonpath.resolve()
    return args


async def run(args: argparse.Namespace, log_dir: Path) -> tuple[list[Phase], str]:
    bound = 3 * (2 * args.lease_timeout + args.settle + args.seconds) + 60
    async with asyncio.timeout(bound):
        with ExitStack() as stack:
            phases, version = await fastdtm_phases(args, stack, log_dir)
        if args.godtm:
            with ExitStack() as stack:
                phases.append(await godtm_phase(args, stack, log_dir))
    return phases, version


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)
    log_dir = Path(tempfile.mkdtemp(prefix="fastdtm-idle-"))
    print(f"logs: {log_dir}", flush=True)
    version = tree_version(args)
    print(f"fastdtm from {version}", flush=True)
    phases, redis_ver = asyncio.run(run(args, log_dir))
    print()
    print(summary_table(phases), end="\n\n")
    print(commands_table(phases), end="\n\n")
    print(scripts_table(phases))
    out = REPO_ROOT / "bench" / "results" / f"idle-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {"fastdtm": version, "redis_version": redis_ver, "cpus": os.cpu_count(), "log_dir": str(log_dir)}
    write_results(out, vars(args), meta, [asdict(p) for p in phases])
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
