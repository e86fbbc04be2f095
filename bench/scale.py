"""How Redis load spreads over the masters of a Redis Cluster: fastdtm's shards against Go DTM's one slot.

It starts a private 3-master Redis Cluster (``tests/support/redis_servers.py``), a branch server (nginx,
as in ``side_by_side.py``) and, for each coordinator in turn (fastdtm, then Go DTM v1.19.0), 3 nodes
on that cluster behind one load balancer (nginx, HTTP reverse proxy, upstream keep-alive). The Go load
generator (``bench/loadgen``) drives the load balancer with ``saga-empty`` and ``saga-http`` at each
concurrency. Over the load generator's measured window it reads, per master: Redis commands
(``INFO commandstats`` after ``CONFIG RESETSTAT``), EVAL/EVALSHA calls, main-thread CPU
(``INFO cpu``), and after the level the keys (``DBSIZE``); per node: its share of the requests
(``dtm_server_process_total`` of its ``/api/metrics``) and its CPU.

From the same figures it states the model: a master's ceiling is the Lua calls/s one Redis core
sustains ÷ the Lua calls a transaction costs on that master, and a cluster's ceiling is that of its
busiest master. fastdtm's 256 shards spread the transactions over all masters; Go DTM keys everything
with the hash tag ``{a}``, so one master carries all of it however many there are.

It prints the tables, writes ``bench/results/scale-<time>.json``, and stops everything it started by
pid. This machine's cores are shared by everything here: the figure is where Redis load lands, not
tx/s.

Run (from the repository root):
    make bench-scale
    .venv/bin/python bench/scale.py --duration 10 --concurrency 16,64
    .venv/bin/python bench/scale.py --duration 3 --concurrency 32 --workloads saga-empty     # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import redis
from benchlib import (
    GO_DTM_BIN,
    LOOPBACK,
    OWN_COMMANDS,
    REPO_ROOT,
    Managed,
    RedisAdmin,
    check_alive,
    comma_choices,
    display_command,
    free_port,
    int_list,
    json_number,
    load_generator,
    nginx_binary,
    nginx_config,
    parse_info,
    redis_version,
    run_captured,
    spawn,
    terminate,
    tree_cpu_seconds,
    wait_ready,
    wait_tcp,
    write_results,
)
from side_by_side import (
    EVAL_COMMANDS,
    LOADGEN_BIN,
    REQUESTS_PER_TX,
    RESULTS_DIR,
    Coordinator,
    Pinning,
    machine,
    server_version,
    setup,
    start_nginx,
)

from fastdtm.config import Settings
from fastdtm.sharding import shard_tags as fastdtm_shard_tags, slot_of

# The cluster fixture lives with the tests; this script runs as bench/scale.py, so the repository root
# is not on sys.path by itself.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.redis_servers import RedisCluster

WORKLOADS = ("saga-empty", "saga-http")
SERVERS = {"fastdtm": "fastdtm", "godtm": "Go DTM"}
GO_DTM_TAG = "{a}"  # Go DTM's default RedisPrefix: every key it writes carries this hash tag
NO_PIN = Pinning(None, None, "no pinning: 3 masters, 3 nodes, 2 nginx and the load generator share every cpu")
# Log lines per request would cost the nodes CPU; both still log problems at this level.
LOG_LEVELS = {"godtm": "warn", "fastdtm": "warning"}
STARTUP_BOUND_S = 90.0  # cluster, branch server: a few seconds normally


# ----------------------------------------------------------------------------- cluster layout


@dataclass(frozen=True, slots=True)
class Master:
    port: int
    slots: tuple[tuple[int, int], ...]  # inclusive ranges

    @property
    def name(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[Master]:
    """Masters with slots, from CLUSTER NODES: ``<id> <ip:port@bus> <flags> <master> ... <slot ranges>``."""
    masters: list[Master] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 9 or "master" not in fields[2].split(","):
            continue
        port = int(fields[1].split("@", 1)[0].rpartition(":")[2])
        ranges = []
        for item in fields[8:]:
            if item.startswith("["):  # a slot being migrated or imported: not this node's yet
                continue
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
        masters.append(Master(port, tuple(sorted(ranges))))
    return sorted(masters, key=lambda m: m.slots)


@dataclass(frozen=True, slots=True)
class Layout:
    masters: list[Master]
    shards: int  # fastdtm's shard count
    fastdtm_shards: list[int]  # per master: how many of fastdtm's shards its slots hold
    godtm_master: int  # index of the master that serves the slot of "{a}"

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {
                "master": m.name,
                "slots": [list(r) for r in m.slots],
                "fastdtm_shards": self.fastdtm_shards[i],
                "godtm_slot_of_{a}": i == self.godtm_master,
            }
            for i, m in enumerate(self.masters)
        ]


async def cluster_layout(port: int) -> Layout:
    admin = await RedisAdmin.connect(port)
    try:
        masters = parse_cluster_nodes((await admin.command("CLUSTER", "NODES")).decode())
    finally:
        await admin.close()
    # Settings as the nodes will read them (FASTDTM_SHARDS included), so the count matches theirs.
    tags = fastdtm_shard_tags(Settings.from_env().shards)
    shards = [sum(1 for tag in tags if m.serves(slot_of(tag))) for m in masters]
    godtm = [i for i, m in enumerate(masters) if m.serves(slot_of(GO_DTM_TAG))]
    if sum(shards) != len(tags) or len(godtm) != 1:
        raise RuntimeError(f"the cluster does not serve every slot: {masters}")
    return Layout(masters, len(tags), shards, godtm[0])


# ----------------------------------------------------------------------------- coordinators and balancer


#: The http block of the balancer: round robin over the nodes, keep-alive both ways.
BALANCER = """    upstream coordinators {{
{servers}
        # Idle connections kept open to the nodes: without this every proxied request dials a new one.
        keepalive {keepalive};
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://coordinators;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # A slow or failing node must show as errors, not be hidden by a retry on another node.
            proxy_next_upstream off;
            proxy_read_timeout {read_timeout}s;
        }}
    }}
"""


def start_balancer(
    stack: AsyncExitStack, ports: Sequence[int], args: argparse.Namespace, log_dir: Path
) -> tuple[Managed, str]:
    """nginx in front of the nodes, and its base URL."""
    port = free_port()
    conf_dir = log_dir / f"lb-{port}"
    conf_dir.mkdir()
    # max_fails=0: a node is never taken out of the rotation, so the request share stays what round robin gives.
    servers = "\n".join(f"        server {LOOPBACK}:{p} max_fails=0;" for p in ports)
    conf = conf_dir / "nginx.conf"
    body = BALANCER.format(
        servers=servers,
        keepalive=2 * max(args.concurrency) + 16,
        host=LOOPBACK,
        port=port,
        read_timeout=int(args.request_timeout) + 5,
    )
    written_by = f"bench/scale.py: one HTTP entry point for {len(ports)} coordinator nodes, round robin."
    conf.write_text(nginx_config(written_by, conf_dir, conf_dir / "error.log", body))
    argv = [nginx_binary(), "-p", str(conf_dir), "-e", str(conf_dir / "error.log"), "-c", str(conf)]
    proc = spawn(f"lb-{port}", argv, None, log_dir, cwd=conf_dir)
    stack.callback(proc.stop)
    return proc, f"http://{LOOPBACK}:{port}"


GO_DTM_CONF = """# Written by bench/scale.py. Go DTM v1.19.0 opens a go-redis cluster client when Host lists several
# addresses (dtmsvr/storage/redis/redis.go); Port is then unused but must not be 0.
Store:
  Driver: redis
  Host: "{hosts}"
  Port: {first_port}
HttpPort: {http_port}
GrpcPort: {grpc_port}
LogLevel: {log_level}
"""


@dataclass
class Node:
    name: str
    proc: Managed
    port: int

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def start_fastdtm_node(index: int, cluster_url: str, log_dir: Path) -> Node:
    port = free_port()
    exe = Path(sys.executable).with_name("fastdtm")  # the venv's console script
    argv = [str(exe), "serve", "--store", cluster_url, "--host", LOOPBACK, "--port", str(port), "--workers", "1"]
    argv += ["--grpc-port", str(free_port())]  # each node a port of its own (the default, 36790, is one)
    env = {**os.environ, "FASTDTM_LOG_LEVEL": LOG_LEVELS["fastdtm"]}
    name = f"fastdtm-{index}"
    return Node(name, spawn(name, argv, None, log_dir, env=env), port)


def start_godtm_node(index: int, masters: Sequence[Master], log_dir: Path) -> Node:
    port = free_port()
    conf = log_dir / f"godtm-{index}.yml"
    conf.write_text(
        GO_DTM_CONF.format(
            hosts=",".join(m.name for m in masters),
            first_port=masters[0].port,
            http_port=port,
            grpc_port=free_port(),  # unused, but each node listens on one
            log_level=LOG_LEVELS["godtm"],
        )
    )
    name = f"godtm-{index}"
    return Node(name, spawn(name, [str(GO_DTM_BIN), "-c", str(conf)], None, log_dir, cwd=log_dir), port)


def ready_path(key: str) -> str:
    return "/api/ping" if key == "godtm" else "/api/ready"


# ----------------------------------------------------------------------------- counters


@dataclass(frozen=True, slots=True)
class MasterReading:
    """One master over a window (counters reset at its start): commands by name, the time Redis spent inside
    EVAL/EVALSHA, errors by prefix, main-thread CPU seconds, and the window's length."""

    calls: dict[str, int]
    eval_usec: int
    errors: dict[str, int]
    cpu_s: float
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def evals(self) -> int:
        return sum(self.calls.get(c, 0) for c in EVAL_COMMANDS)

    def per_s(self, value: float) -> float:
        return value / self.seconds if self.seconds > 0 else math.nan


def main_thread_cpu(fields: dict[str, str]) -> float:
    """Lua runs on Redis's main thread, so its CPU is what one core has to give."""
    if "used_cpu_user_main_thread" in fields:
        return float(fields["used_cpu_user_main_thread"]) + float(fields["used_cpu_sys_main_thread"])
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])  # before Redis 6.2: whole process


def stat_fields(info: bytes, prefix: str) -> dict[str, dict[str, str]]:
    """``cmdstat_evalsha:calls=3,usec=40,...`` lines → {"evalsha": {"calls": "3", "usec": "40", ...}}."""
    out: dict[str, dict[str, str]] = {}
    for line in info.decode(errors="replace").splitlines():
        if line.startswith(prefix):
            name, _, values = line.removeprefix(prefix).partition(":")
            out[name] = dict(item.partition("=")[::2] for item in values.split(","))
    return out


@dataclass(frozen=True, slots=True)
class WindowStart:
    at: float
    cpu: list[float]  # main-thread CPU seconds per master


async def start_window(admins: Sequence[RedisAdmin]) -> WindowStart:
    cpu = []
    for admin in admins:
        _, fields = parse_info(await admin.command("INFO", "cpu"))
        cpu.append(main_thread_cpu(fields))
        await admin.command("CONFIG", "RESETSTAT")  # INFO above came first, so it is not counted
    return WindowStart(time.perf_counter(), cpu)


async def end_window(admins: Sequence[RedisAdmin], start: WindowStart) -> list[MasterReading]:
    seconds = time.perf_counter() - start.at
    readings = []
    for admin, cpu0 in zip(admins, start.cpu, strict=True):
        info = await admin.command("INFO", "cpu", "commandstats", "errorstats")  # several sections: Redis >= 7.0
        calls, fields = parse_info(info)
        for command, own in OWN_COMMANDS.items():
            calls[command] = calls.get(command, own) - own
        stats = stat_fields(info, "cmdstat_")
        usec = sum(int(stats.get(c, {}).get("usec", "0")) for c in EVAL_COMMANDS)
        errors = {name: int(v.get("count", "0")) for name, v in stat_fields(info, "errorstat_").items()}
        cpu = main_thread_cpu(fields) - cpu0
        readings.append(MasterReading({c: n for c, n in calls.items() if n > 0}, usec, errors, cpu, seconds))
    return readings


async def dbsizes(admins: Sequence[RedisAdmin]) -> list[int]:
    return [int(await admin.command("DBSIZE")) for admin in admins]


async def metric_sum(session: aiohttp.ClientSession, node: Node, name: str) -> int:
    """Sum of a metric's samples on this node's /api/metrics, leaving out the series of the /api/metrics
    requests themselves (this harness's own reads)."""
    async with session.get(node.url + "/api/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and 'api="metrics"' not in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def requests_served(session: aiohttp.ClientSession, node: Node) -> int:
    """Requests this node answered so far: ``dtm_server_process_total``, the same name and labels on both."""
    return await metric_sum(session, node, "dtm_server_process_total")


@dataclass(frozen=True, slots=True)
class NodeMark:
    at: float
    requests: list[int]
    cpu: list[float]  # per node, then balancer, branch server, load generator

    @classmethod
    async def take(cls, session: aiohttp.ClientSession, nodes: Sequence[Node], others: Sequence[int]) -> NodeMark:
        requests = [await requests_served(session, n) for n in nodes]
        cpu = [tree_cpu_seconds(pid) for pid in [*(n.proc.pid for n in nodes), *others]]
        return cls(time.perf_counter(), requests, cpu)


# ----------------------------------------------------------------------------- levels


@dataclass
class Level:
    server: str
    workload: str
    concurrency: int
    report: dict[str, Any]  # the load generator's JSON line
    window_s: float
    masters: list[MasterReading]
    keys: list[int]  # DBSIZE per master after the level (everything stored so far)
    node_requests: list[int]
    cpu_s: dict[str, float]  # by process: each node, lb, branch, loadgen
    idle: list[MasterReading]  # the same deployment with no load

    @property
    def tps(self) -> float:
        return float(self.report["tps"])

    def idle_evals_per_s(self, index: int) -> float:
        return self.idle[index].per_s(self.idle[index].evals)

    def idle_cpu(self, index: int) -> float:
        """Share of a core this master's main thread used with no load: cluster bus, cron, background scripts."""
        return self.idle[index].per_s(self.idle[index].cpu_s)

    def evals_per_tx(self, index: int) -> float:
        """Lua calls per transaction of the whole deployment that land on this master, background removed."""
        m = self.masters[index]
        return max(m.per_s(m.evals) - self.idle_evals_per_s(index), 0.0) / self.tps if self.tps else math.nan

    def carrying(self) -> list[int]:
        """The masters that run the transactions' scripts (Go DTM's: one)."""
        return [i for i in range(len(self.masters)) if self.evals_per_tx(i) > 0.01]

    @property
    def lua_per_core_from_cpu(self) -> float:
        """Lua calls/s one Redis core sustains, from what the load added on the carrying masters: extra EVAL*/s
        ÷ extra main-thread CPU. Everything else the thread did for them (reading, parsing, replying) is charged
        to the scripts, and a core this far from busy handles each call alone instead of batching it with
        others: a saturated core does better."""
        rows = [(self.masters[i], i) for i in self.carrying()]
        calls = sum(m.per_s(m.evals) - self.idle_evals_per_s(i) for m, i in rows)
        cpu = sum(m.per_s(m.cpu_s) - self.idle_cpu(i) for m, i in rows)
        return calls / cpu if cpu > 0 else math.nan

    @property
    def lua_per_core_from_exec(self) -> float:
        """The same from the time Redis spent executing EVAL/EVALSHA (``usec`` of commandstats, the commands run
        inside included): no network or parsing, so higher than the CPU estimate, unless the machine is so busy
        that the kernel preempts Redis mid-script (``usec`` is wall time)."""
        usec = sum(m.eval_usec for m in self.masters)
        return 1e6 * sum(m.evals for m in self.masters) / usec if usec > 0 else math.nan

    @property
    def lua_calls_per_tx(self) -> float:
        return sum(self.evals_per_tx(i) for i in range(len(self.masters)))

    def master_ceiling(self, index: int, lua_per_core: float) -> float:
        """tx/s of the whole deployment at which this master's core is full: the core its background leaves,
        in Lua calls, ÷ the Lua calls each transaction costs this master."""
        per_tx = self.evals_per_tx(index)
        return (1 - self.idle_cpu(index)) * lua_per_core / per_tx if per_tx > 0.01 else math.inf

    def cluster_ceiling(self, lua_per_core: float) -> float:
        """Transactions spread by their gid's hash, so the busiest master caps everyone."""
        return min(self.master_ceiling(i, lua_per_core) for i in range(len(self.masters)))

    def one_master_ceiling(self, lua_per_core: float) -> float:
        """L ÷ Lua calls per transaction: what one master sustains when it holds every transaction."""
        return lua_per_core / self.lua_calls_per_tx if self.lua_calls_per_tx > 0 else math.nan

    def _master_json(self, index: int, layout: Layout) -> dict[str, Any]:
        m = self.masters[index]
        total = sum(x.total for x in self.masters) or 1
        evals = sum(x.evals for x in self.masters) or 1
        return {
            "master": layout.masters[index].name,
            "calls_per_s": round(m.per_s(m.total), 1),
            "calls_share_pct": round(100 * m.total / total, 2),
            "eval_per_s": round(m.per_s(m.evals), 1),
            "eval_share_pct": round(100 * m.evals / evals, 2),
            "eval_usec_per_call": json_number(m.eval_usec / m.evals if m.evals else math.nan, 2),
            "keys_after": self.keys[index],
            "main_thread_cpu_pct": round(100 * m.per_s(m.cpu_s), 1),
            "lua_calls_per_tx": json_number(self.evals_per_tx(index), 3),
            "idle_eval_per_s": round(self.idle_evals_per_s(index), 1),
            "idle_main_thread_cpu_pct": round(100 * self.idle_cpu(index), 2),
            "errors": m.errors,
            "calls_by_command": dict(sorted(m.calls.items(), key=lambda kv: -kv[1])),
        }

    def to_json(self, layout: Layout) -> dict[str, Any]:
        requests = sum(self.node_requests) or 1
        by_cpu, by_exec = self.lua_per_core_from_cpu, self.lua_per_core_from_exec
        return {
            "server": self.server,
            **self.report,
            "cpu_window_s": round(self.window_s, 3),
            "masters": [self._master_json(i, layout) for i in range(len(self.masters))],
            "node_request_share_pct": [round(100 * n / requests, 1) for n in self.node_requests],
            "cpu_s_per_1k_tx": {
                k: json_number(1000 * v / (self.tps * self.window_s), 3) for k, v in self.cpu_s.items()
            },
            "model": {
                "lua_calls_per_tx": json_number(self.lua_calls_per_tx, 3),
                "masters_carrying_transactions": len(self.carrying()),
                "estimates": {
                    name: {
                        "lua_calls_per_core_s": json_number(v, 0),
                        "one_master_ceiling_tx_per_s": json_number(self.one_master_ceiling(v), 0),
                        "cluster_ceiling_tx_per_s": json_number(self.cluster_ceiling(v), 0),
                    }
                    for name, v in (("from_main_thread_cpu", by_cpu), ("from_exec_time", by_exec))
                },
            },
        }


@dataclass
class Deployment:
    """One coordinator's nodes behind the balancer, on the cluster, with the shared pieces of the run."""

    key: str
    nodes: list[Node]
    lb_url: str
    lb_pid: int
    branch_pid: int
    branch_base: str
    admins: list[RedisAdmin]
    args: argparse.Namespace
    log_dir: Path
    idle: list[MasterReading] = field(default_factory=list)

    def check_alive(self) -> None:
        for node in self.nodes:
            check_alive(node.proc)

    def loadgen_argv(self, workload: str, *extra: str) -> list[str]:
        argv = [str(LOADGEN_BIN), "-coord", self.lb_url, "-branch", self.branch_base, "-workload", workload]
        return [*argv, "-timeout", f"{self.args.request_timeout}s", *extra]


async def verify(dep: Deployment, workload: str) -> None:
    """One transaction through the balancer, read back through it (maybe from another node): ``succeed``."""
    argv = dep.loadgen_argv(workload, "-verify", "-prefix", f"scale{os.getpid()}-{dep.key}")
    code, text = await run_captured(argv, REQUESTS_PER_TX * dep.args.request_timeout + 10)
    if code != 0:
        logs = "\n".join(f"--- {n.name} ---\n{n.proc.log_tail()}" for n in dep.nodes)
        raise RuntimeError(f"{SERVERS[dep.key]} failed the {workload} check: {text}\n{logs}")
    got = json.loads(text)
    print(f"  verified {workload} through the balancer: {got['gid']} {got['status']}", flush=True)


async def settle(dep: Deployment, shards: int) -> str:
    """Wait until the background is in its steady state before measuring it. fastdtm: a node that starts alone
    takes every shard lease and the others win theirs over the next membership ticks, each trying its missing
    shards once a second until then; so wait until the nodes' ``fastdtm_shard_leases_held`` add up to every
    shard with none left out. Then, for both servers, --settle seconds more, so that every periodic script
    (lease renewal every lease_ttl/3 s, Go DTM's 3 s cron) has run once and is cached on every master."""
    note = ""
    if dep.key == "fastdtm":
        deadline = time.monotonic() + dep.args.ready_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                held = [await metric_sum(session, n, "fastdtm_shard_leases_held") for n in dep.nodes]
                if sum(held) == shards and min(held) > 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fastdtm shard leases did not settle: {held} of {shards}")
                await asyncio.sleep(0.5)
        note = f"shard leases per node {'/'.join(map(str, held))}"
        print(f"  {note}", flush=True)
    await asyncio.sleep(dep.args.settle)
    return note


async def measure_idle(dep: Deployment) -> None:
    """Background Redis work with no load (fastdtm's shard polling and leases, Go DTM's cron): per-tx figures
    leave it out, and it is taken from a master's room in the model."""
    start = await start_window(dep.admins)
    await asyncio.sleep(dep.args.idle_seconds)
    dep.idle = await end_window(dep.admins, start)
    per_master = ", ".join(
        f"{m.per_s(m.total):.0f} ({m.per_s(m.evals):.0f} EVAL*, cpu {100 * m.per_s(m.cpu_s):.1f}%)" for m in dep.idle
    )
    print(f"  idle: Redis calls/s per master {per_master}", flush=True)


async def run_level(dep: Deployment, session: aiohttp.ClientSession, workload: str, concurrency: int) -> Level:
    args = dep.args
    tag = f"scale{os.getpid()}-{dep.key}-{workload}-c{concurrency}"
    timing = ["-concurrency", str(concurrency), "-warmup", f"{args.warmup}s", "-duration", f"{args.duration}s"]
    argv = dep.loadgen_argv(workload, *timing, "-prefix", tag, "-markers")
    async with load_generator(argv, dep.log_dir / f"loadgen-{dep.key}-{workload}-{concurrency}.log") as proc:
        return await _collect(dep, session, workload, concurrency, proc)


async def _collect(
    dep: Deployment, session: aiohttp.ClientSession, workload: str, concurrency: int, proc: asyncio.subprocess.Process
) -> Level:
    """Reads the load generator's lines; counters are read when its window opens and closes."""
    others = [dep.lb_pid, dep.branch_pid, proc.pid]
    marks: dict[str, NodeMark] = {}
    window: WindowStart | None = None
    readings: list[MasterReading] = []
    report = None
    assert proc.stdout is not None and proc.stdin is not None
    while report is None and (line := await proc.stdout.readline()):
        msg = json.loads(line)
        if msg.get("event") == "window_start":
            window = await start_window(dep.admins)
            marks["start"] = await NodeMark.take(session, dep.nodes, others)
        elif msg.get("event") == "window_end":
            marks["end"] = await NodeMark.take(session, dep.nodes, others)
            readings = await end_window(dep.admins, window) if window else []
        else:
            report = msg
    proc.stdin.close()
    code = await proc.wait()
    if code != 0 or report is None or len(marks) != 2 or not readings:
        raise RuntimeError(f"load generator for {dep.key} {workload}/{concurrency} failed (exit {code}): {report}")
    if report.get("stuck"):
        raise RuntimeError(f"{dep.key} {workload}/{concurrency}: transactions still running long after the window")
    start, end = marks["start"], marks["end"]
    names = [*(n.name for n in dep.nodes), "lb", "branch", "loadgen"]
    return Level(
        server=dep.key,
        workload=workload,
        concurrency=concurrency,
        report=report,
        window_s=end.at - start.at,
        masters=readings,
        keys=await dbsizes(dep.admins),
        node_requests=[b - a for a, b in zip(start.requests, end.requests, strict=True)],
        cpu_s={name: b - a for name, a, b in zip(names, start.cpu, end.cpu, strict=True)},
        idle=dep.idle,
    )


# ----------------------------------------------------------------------------- runs


@dataclass(frozen=True, slots=True)
class Shared:
    """What every coordinator's run uses: the cluster, its admin connections, the branch server."""

    args: argparse.Namespace
    log_dir: Path
    cluster_url: str
    layout: Layout
    admins: list[RedisAdmin]
    branch_pid: int
    branch_base: str


async def run_server(shared: Shared, key: str) -> tuple[list[Level], dict[str, Any]]:
    """Empty the cluster, start the nodes and the balancer, check, measure idle and every level, stop them."""
    args = shared.args
    for admin in shared.admins:
        await admin.command("FLUSHALL")
    levels: list[Level] = []
    async with AsyncExitStack() as stack:
        nodes = []
        for i in range(args.nodes):
            if key == "fastdtm":
                node = start_fastdtm_node(i, shared.cluster_url, shared.log_dir)
            else:
                node = start_godtm_node(i, shared.layout.masters, shared.log_dir)
            stack.callback(node.proc.stop)
            nodes.append(node)
        for node in nodes:
            await wait_ready(node.proc, node.url + ready_path(key), args.ready_timeout)
        lb, lb_url = start_balancer(stack, [n.port for n in nodes], args, shared.log_dir)
        await wait_ready(lb, lb_url + ready_path(key), args.ready_timeout)
        dep = Deployment(
            key, nodes, lb_url, lb.pid, shared.branch_pid, shared.branch_base, shared.admins, args, shared.log_dir
        )
        version = await server_version(Coordinator(key, nodes[0].proc, nodes[0].url, ready_path(key)))
        print(f"{SERVERS[key]}: {version}; {len(nodes)} nodes behind {lb_url}", flush=True)
        meta: dict[str, Any] = {
            "version": version,
            "balancer": lb_url,
            "nodes": {n.name: {"url": n.url, "log": str(n.proc.log_path)} for n in nodes},
        }
        for workload in args.workloads:
            await verify(dep, workload)
        meta["leases"] = await settle(dep, shared.layout.shards)
        await measure_idle(dep)
        meta["idle"] = {
            "seconds": round(dep.idle[0].seconds, 2),
            "calls_per_s": [round(m.per_s(m.total), 1) for m in dep.idle],
            "eval_per_s": [round(m.per_s(m.evals), 1) for m in dep.idle],
            "main_thread_cpu_pct": [round(100 * m.per_s(m.cpu_s), 2) for m in dep.idle],
            "errors": [m.errors for m in dep.idle],
        }
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for workload in args.workloads:
                for concurrency in args.concurrency:
                    dep.check_alive()
                    levels.append(await run_level(dep, session, workload, concurrency))
                    print(level_line(levels[-1]), flush=True)
                    await asyncio.sleep(args.pause)
        dep.check_alive()
    return levels, meta


async def run(args: argparse.Namespace) -> tuple[list[Level], dict[str, Any], Layout]:
    log_dir = Path(tempfile.mkdtemp(prefix="fastdtm-scale-"))
    levels: list[Level] = []
    meta: dict[str, Any] = {"pinning": NO_PIN.note, "logs": str(log_dir), "servers": {}}
    async with AsyncExitStack() as stack:
        # Blocking start-up (a few seconds, bounded by the fixture's own timeout); stopped by pid on exit.
        cluster = stack.enter_context(RedisCluster(masters=args.masters))
        layout = await cluster_layout(cluster.ports[0])
        admins = []
        for master in layout.masters:
            admins.append(await RedisAdmin.connect(master.port))
            stack.push_async_callback(admins[-1].close)
        branch, branch_port = start_nginx(stack.enter_context(ExitStack()), NO_PIN, log_dir)
        await wait_tcp(branch, branch_port, 10)
        meta["machine"] = machine(await redis_version(layout.masters[0].port))
        meta["cluster"] = layout.to_json()
        print(f"{meta['machine']}\n{NO_PIN.note}\nlogs: {log_dir}", flush=True)
        print(layout_text(layout) + "\n", flush=True)
        branch_base = f"http://{LOOPBACK}:{branch_port}/api/busi"
        shared = Shared(args, log_dir, cluster.url, layout, admins, branch.pid, branch_base)
        for key in args.servers:
            server_levels, meta["servers"][key] = await run_server(shared, key)
            levels += server_levels
            await asyncio.sleep(args.pause)
    return levels, meta, layout


# ----------------------------------------------------------------------------- report


def master_label(layout: Layout, index: int) -> str:
    return f"M{index + 1} :{layout.masters[index].port}"


def layout_text(layout: Layout) -> str:
    lines = ["cluster:"]
    for i, m in enumerate(layout.masters):
        ranges = " ".join(f"{a}-{b}" for a, b in m.slots)
        a_note = f"; slot {slot_of(GO_DTM_TAG)} of {GO_DTM_TAG} (all of Go DTM)" if i == layout.godtm_master else ""
        lines.append(f"  {master_label(layout, i)}: slots {ranges}; {layout.fastdtm_shards[i]} fastdtm shards{a_note}")
    return "\n".join(lines)


def level_line(r: Level) -> str:
    rep = r.report
    masters = "  ".join(
        f"{m.per_s(m.total):.0f}/s ({m.per_s(m.evals):.0f} EVAL*, cpu {100 * m.per_s(m.cpu_s):.0f}%)" for m in r.masters
    )
    requests = sum(r.node_requests) or 1
    shares = "/".join(f"{100 * n / requests:.0f}" for n in r.node_requests)
    line = (
        f"  {SERVERS[r.server]:<7} {r.workload:<10} c={r.concurrency:<4} {r.tps:7.1f} tx/s  p50 {rep['p50_ms']:.1f} "
        f"p99 {rep['p99_ms']:.1f} ms  errors {rep['errors']}  masters: {masters}  node requests % {shares}"
    )
    reasons = [f"\n    error x{e['count']}: {e['reason']}" for e in rep.get("error_reasons") or []]
    # Error replies inside Redis (NOSCRIPT, a script's error): not failed transactions, but worth seeing.
    redis_errors = [f"\n    redis errors on M{i + 1}: {m.errors}" for i, m in enumerate(r.masters) if m.errors]
    return line + "".join(reasons + redis_errors)


DISTRIBUTION_HEADER = (
    "| server | workload | concurrency | tx/s | master | holds | Redis calls/s | share % | EVAL*/s | EVAL* share % "
    "| keys after | main-thread CPU % |\n"
    "|---|---|--:|--:|---|---|--:|--:|--:|--:|--:|--:|"
)


def distribution_rows(levels: Sequence[Level], layout: Layout) -> Iterator[str]:
    for r in levels:
        total = sum(m.total for m in r.masters) or 1
        evals = sum(m.evals for m in r.masters) or 1
        for i, m in enumerate(r.masters):
            if r.server == "godtm":
                holds = f"slot of {GO_DTM_TAG}" if i == layout.godtm_master else "nothing"
            else:
                holds = f"{layout.fastdtm_shards[i]} shards"
            cells = [
                SERVERS[r.server],
                r.workload,
                str(r.concurrency),
                f"{r.tps:.0f}",
                master_label(layout, i),
                holds,
                f"{m.per_s(m.total):.0f}",
                f"{100 * m.total / total:.1f}",
                f"{m.per_s(m.evals):.0f}",
                f"{100 * m.evals / evals:.1f}",
                str(r.keys[i]),
                f"{100 * m.per_s(m.cpu_s):.0f}",
            ]
            yield "| " + " | ".join(cells) + " |"


MODEL_HEADER = (
    "| server | workload | concurrency | tx/s | errors | node request share % | Lua calls/tx (k) "
    "| L from CPU | L from exec time | one master: L ÷ k, tx/s | masters carrying transactions "
    "| projected cluster ceiling, tx/s |\n"
    "|---|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|"
)


def _num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if math.isfinite(value) else "n/a"


def _pair(by_cpu: float, by_exec: float) -> str:
    return f"{_num(by_cpu)} / {_num(by_exec)}"


def model_rows(levels: Sequence[Level]) -> Iterator[str]:
    for r in levels:
        requests = sum(r.node_requests) or 1
        by_cpu, by_exec = r.lua_per_core_from_cpu, r.lua_per_core_from_exec
        cells = [
            SERVERS[r.server],
            r.workload,
            str(r.concurrency),
            f"{r.tps:.0f}",
            str(r.report["errors"]),
            " / ".join(f"{100 * n / requests:.0f}" for n in r.node_requests),
            _num(r.lua_calls_per_tx, 2),
            _num(by_cpu),
            _num(by_exec),
            _pair(r.one_master_ceiling(by_cpu), r.one_master_ceiling(by_exec)),
            f"{len(r.carrying())} of {len(r.masters)}",
            _pair(r.cluster_ceiling(by_cpu), r.cluster_ceiling(by_exec)),
        ]
        yield "| " + " | ".join(cells) + " |"


MODEL_TEXT = """
The model: a master's ceiling = L ÷ k_m, where L = Lua calls/s one Redis core sustains and k_m = Lua calls
each transaction costs that master, less what its idle background takes; transactions spread by gid, so
the busiest master caps the cluster (the sum over masters when they are even). k and the ceilings leave
out the background calls measured with no load. L is estimated two ways: from CPU = the extra EVAL*/s the
load brought ÷ the extra main-thread CPU it brought (network and parsing charged to the scripts, at a load
far from saturation, where each call is handled alone: low); from exec time = EVAL* calls ÷ the time Redis
spent executing them (commandstats usec: no network or parsing, so high, unless the machine is so busy that
Redis is preempted mid-script, as usec is wall time). "one master" is L ÷ k: all transactions on one master.
"""


def report(levels: Sequence[Level], meta: dict[str, Any], layout: Layout, args: argparse.Namespace) -> None:
    print(f"\ncommand: {display_command()}")
    for key, info in meta["servers"].items():
        print(f"{SERVERS[key]}: {info['version']}; idle Redis calls/s per master {info['idle']['calls_per_s']}")
    print(f"\n{layout_text(layout)}\n")
    print("Redis load per master over the measured window (Redis calls include the commands Lua scripts run):\n")
    print("\n".join([DISTRIBUTION_HEADER, *distribution_rows(levels, layout)]))
    print(MODEL_TEXT)
    print("\n".join([MODEL_HEADER, *model_rows(levels)]))
    path = args.results_dir / f"scale-{datetime.now():%Y%m%d-%H%M%S}.json"
    settings = {k: v for k, v in vars(args).items() if k != "results_dir"}
    write_results(path, settings, meta, [r.to_json(layout) for r in levels])
    print(f"\nresults: {path}")


# ----------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per level (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each level (default 3)")
    p.add_argument("--concurrency", type=int_list, default=[16, 64], help="comma list of levels (default 16,64)")
    p.add_argument("--workloads", type=comma_choices(WORKLOADS), default=list(WORKLOADS), help="saga-empty,saga-http")
    p.add_argument("--servers", type=comma_choices(tuple(SERVERS)), default=list(SERVERS), help="fastdtm,godtm (both)")
    p.add_argument("--nodes", type=int, default=3, help="coordinator nodes behind the balancer (default 3)")
    p.add_argument("--masters", type=int, default=3, help="Redis Cluster masters (default 3)")
    p.add_argument("--settle", type=float, default=4.0, help="seconds between settled leases and idle (default 4)")
    # 10 s: three of fastdtm's lease-renewal periods (lease_ttl / 3), so its bursts of renewals average out.
    p.add_argument("--idle-seconds", type=float, default=10.0, help="background Redis load with no traffic, s")
    p.add_argument("--request-timeout", type=float, default=10.0, help="load generator timeout per request, s")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for a node to be ready")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between levels")
    p.add_argument("--setup-timeout", type=float, default=1200.0, help="bound of the install and build steps, s")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes (bench/results)")
    args = p.parse_args(argv)
    if args.nodes < 1 or args.masters < 1:
        p.error("--nodes and --masters must be at least 1")
    return args


def time_bound(args: argparse.Namespace) -> float:
    """Upper bound of everything after set-up, from the flags (set-up has --setup-timeout)."""
    tx_bound = REQUESTS_PER_TX * args.request_timeout
    per_level: float = args.warmup + args.duration + tx_bound + args.pause + 15
    per_server: float = 3 * args.ready_timeout + len(args.workloads) * (tx_bound + 10) + args.settle + args.idle_seconds
    per_server += 20
    levels = len(args.workloads) * len(args.concurrency)
    return STARTUP_BOUND_S + len(args.servers) * (per_server + per_level * levels)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)

    async def bounded() -> tuple[list[Level], dict[str, Any], Layout]:
        async with asyncio.timeout(time_bound(args)):
            return await run(args)

    try:
        setup(args)  # side_by_side's: redis-server, nginx, Go DTM when asked, the load generator
        levels, meta, layout = asyncio.run(bounded())
    except (RuntimeError, TimeoutError, OSError, redis.RedisError) as exc:  # RedisError: the cluster fixture
        print(f"scale benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except SystemExit:  # SIGTERM, through benchlib.terminate: the finally blocks have run
        print("terminated; everything started was stopped", file=sys.stderr)
        raise
    report(levels, meta, layout, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
