"""fastdtm beside Go DTM v1.19.0: same machine, same Redis, same branch server, same load.

For each coordinator in turn (Go DTM, then fastdtm), on an emptied private Redis, it runs each
workload (``saga-empty``, ``saga-http``, ``msg``, ``tcc`` over HTTP, ``saga-grpc`` over DTM's gRPC API,
see ``bench/loadgen``) at each concurrency, and measures transactions/s, p50/p99 latency, errors,
coordinator and redis-server CPU seconds per 1,000 transactions, and Redis commands (and EVAL/EVALSHA)
per transaction. It prints a markdown table with a fastdtm/Go DTM ratio, writes the figures to
``bench/results/side_by_side-<time>.json`` and draws tx/s against concurrency to ``bench/side_by_side.png``.

It owns the whole set-up: installs what is missing (redis-server and nginx from apt, Go DTM with
``go install``, the Go load generator with ``go build``), starts a private redis-server, nginx (the HTTP
branch server) and the load generator's gRPC branch server on free loopback ports, starts and stops each
coordinator by pid, and pins with taskset: the coordinator under test alone on cpu 1, everything else on
cpu 0. With ``--workers N`` fastdtm runs N uvicorn worker processes and Go DTM GOMAXPROCS=N, the
coordinator alone on N cpus (1-N) and the rest still on cpu 0; a machine without N + 1 cpus is refused
unless ``--no-pin`` is given, and then everything shares every cpu.

Run (from the repository root):
    make bench
    .venv/bin/python bench/side_by_side.py --duration 15 --concurrency 16,64
    .venv/bin/python bench/side_by_side.py --duration 3 --concurrency 16 --workloads saga-empty,tcc
    .venv/bin/python bench/side_by_side.py --duration 10 --concurrency 16,64 --workloads saga-http,saga-grpc
    .venv/bin/python bench/side_by_side.py --workers 2 --duration 10 --concurrency 64   # 3+ cpus, or --no-pin
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import (
    GO_DTM_BIN,
    LOOPBACK,
    OWN_COMMANDS,
    REPO_ROOT,
    Managed,
    RedisAdmin,
    check_alive,
    comma_choices,
    command_output,
    cores_busy_ticks,
    cpu_list,
    display_command,
    fmt,
    free_port,
    int_list,
    json_number,
    load_generator,
    nginx_binary,
    nginx_config,
    parse_info,
    pinned,
    redis_version,
    run_captured,
    spawn,
    start_redis,
    terminate,
    tree_cpu_seconds,
    wait_ready,
    wait_tcp,
    write_go_dtm_config,
    write_results,
)

WORKLOADS = ("saga-empty", "saga-http", "msg", "tcc", "saga-grpc")
GRPC_WORKLOADS = ("saga-grpc",)  # on the coordinator's gRPC port, branches on the gRPC branch server
SERVERS = {"godtm": "Go DTM", "fastdtm": "fastdtm"}  # key -> display name; the ratio is fastdtm / Go DTM
GO_DTM_MODULE = "github.com/dtm-labs/dtm"
LOADGEN_SRC = REPO_ROOT / "bench" / "loadgen"
LOADGEN_BIN = REPO_ROOT / ".tools" / "loadgen" / "loadgen"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
CHART = REPO_ROOT / "bench" / "side_by_side.png"
EVAL_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro")
SUPPORT_ROLES = ("redis", "nginx", "grpc_branch", "loadgen")  # what runs beside the harness on --support-cpus
# Equivalent log levels: both servers then log only problems, not a line per request.
LOG_LEVELS = {"warn": ("warn", "warning"), "error": ("error", "error")}  # flag -> (Go DTM, fastdtm)
# A loadgen transaction is at most 6 requests (tcc), each bounded by --request-timeout.
REQUESTS_PER_TX = 6


# ----------------------------------------------------------------------------- set-up


def setup(args: argparse.Namespace) -> None:
    """Installs what is missing and builds the load generator; each step bounded by --setup-timeout."""
    deadline = time.monotonic() + args.setup_timeout
    steps = [[str(REPO_ROOT / "scripts" / "ensure-redis.sh")], [str(REPO_ROOT / "scripts" / "ensure-nginx.sh")]]
    if "godtm" in args.servers:
        steps.append([str(REPO_ROOT / "scripts" / "install-go-dtm.sh")])
    for argv in steps:
        _run_step(argv, REPO_ROOT, None, deadline)
    # Its modules (grpc-go, the DTM client SDK's messages) come from the Go module proxy, checked against
    # its go.sum; once in the module cache the build needs no network. No go.work around it may interfere.
    env = {**os.environ, "GOWORK": "off", "GOFLAGS": ""}
    LOADGEN_BIN.parent.mkdir(parents=True, exist_ok=True)
    _run_step(["go", "build", "-buildvcs=false", "-o", str(LOADGEN_BIN), "."], LOADGEN_SRC, env, deadline)


def _run_step(argv: list[str], cwd: Path, env: dict[str, str] | None, deadline: float) -> None:
    try:
        subprocess.run(
            argv, cwd=cwd, env=env, check=True, stdin=subprocess.DEVNULL, timeout=deadline - time.monotonic()
        )
    except FileNotFoundError as exc:
        raise RuntimeError(f"set-up step {argv[0]}: {exc}") from None
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"set-up step {' '.join(argv)} failed with code {exc.returncode}") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"set-up step {' '.join(argv)} did not finish within --setup-timeout") from None


@dataclass(frozen=True, slots=True)
class Pinning:
    coordinator: str | None  # cpus of the coordinator under test, alone
    support: str | None  # cpus of redis-server, the branch servers, the load generator and this harness
    note: str

    def cpusets(self) -> dict[str, set[int]]:
        """The coordinator's and the support cpus; unpinned, each is every cpu of the machine."""
        everything = set(range(os.cpu_count() or 1))
        return {
            "coordinator": {int(c) for c in cpu_list(self.coordinator)} if self.coordinator else everything,
            "support": {int(c) for c in cpu_list(self.support)} if self.support else everything,
        }


def check_cores(args: argparse.Namespace) -> str:
    """Refuses --workers N when the coordinator's cpus are not N, or when this machine has no N + 1 cpus
    (N for the coordinator alone, one at least for the support processes) and --no-pin is not given.
    Returns what the run will be, in one sentence, for the printed note and the JSON."""
    workers, usable = args.workers, len(os.sched_getaffinity(0))
    same = f"fastdtm --workers {workers}, Go DTM GOMAXPROCS={workers}"
    if args.no_pin:
        if workers + 1 > usable:
            return (
                f"{same}, unpinned (--no-pin) on the {usable} cpus this process may use: the largest N here "
                f"leaves redis-server, nginx, the gRPC branch server and the load generator no cpu of their own; "
                f"they share all {usable} with the coordinator"
            )
        return f"{same}, unpinned (--no-pin) on the {usable} cpus this process may use"
    coordinator = set(cpu_list(args.coordinator_cpus))
    if len(coordinator) != workers:
        raise RuntimeError(
            f"--coordinator-cpus {args.coordinator_cpus} is {len(coordinator)} cpu(s), --workers {workers} needs "
            f"{workers}: one per fastdtm worker, and as many for Go DTM's GOMAXPROCS"
        )
    if workers + 1 > usable:
        raise RuntimeError(
            f"--workers {workers} needs {workers} cpus for the coordinator alone and at least one more for "
            f"redis-server, nginx and the load generator, {workers + 1} in all; this machine offers {usable}. "
            f"Give --no-pin to run unpinned, everything sharing the {usable} cpus, or a smaller --workers"
        )
    return same  # where it runs is the pinning note


def choose_pinning(args: argparse.Namespace) -> Pinning:
    if args.no_pin:
        return Pinning(None, None, "no pinning (--no-pin)")
    if shutil.which("taskset") is None:
        return Pinning(None, None, "no pinning (taskset not found)")
    coordinator, support = set(cpu_list(args.coordinator_cpus)), set(cpu_list(args.support_cpus))
    missing = {int(c) for c in coordinator | support} - os.sched_getaffinity(0)
    if missing:
        return Pinning(None, None, f"no pinning (cpus {sorted(missing)} not available)")
    if coordinator & support:
        raise RuntimeError("--coordinator-cpus and --support-cpus overlap: the coordinator must have its cpus alone")
    os.sched_setaffinity(0, {int(c) for c in support})  # this harness stays off the coordinator's core
    note = (
        f"pinned: coordinator under test alone on cpu{'s' * (len(coordinator) > 1)} {args.coordinator_cpus}; "
        "redis-server, nginx, "
        f"the gRPC branch server, the load generator and this harness on cpu {args.support_cpus}"
    )
    return Pinning(args.coordinator_cpus, args.support_cpus, note)


#: The http block of the branch server: every request gets DTM's SUCCESS.
BRANCH_SERVER = """    server {{
        listen {host}:{port};
        location / {{
            default_type application/json;
            return 200 '{{"dtm_result":"SUCCESS"}}';
        }}
    }}
"""


def start_nginx(stack: ExitStack, pin: Pinning, log_dir: Path) -> tuple[Managed, int]:
    port = free_port()
    conf = log_dir / "nginx.conf"
    body = BRANCH_SERVER.format(host=LOOPBACK, port=port)
    written_by = "bench/side_by_side.py: a branch server that answers every request with DTM's SUCCESS."
    conf.write_text(nginx_config(written_by, log_dir, log_dir / "nginx-error.log", body))
    # -e: the error log before the config is read, which would otherwise be the system's path.
    argv = [nginx_binary(), "-p", str(log_dir), "-e", str(log_dir / "nginx-error.log"), "-c", str(conf)]
    proc = spawn("nginx", argv, pin.support, log_dir, cwd=log_dir)
    stack.callback(proc.stop)
    return proc, port


def start_grpc_branch(stack: ExitStack, pin: Pinning, log_dir: Path) -> tuple[Managed, int]:
    """The gRPC branch server of saga-grpc (`loadgen grpc-branch`): every method answers OK, an Empty."""
    port = free_port()
    argv = [str(LOADGEN_BIN), "grpc-branch", "-listen", f"{LOOPBACK}:{port}"]
    proc = spawn("grpc-branch", argv, pin.support, log_dir, cwd=log_dir)
    stack.callback(proc.stop)
    return proc, port


# ----------------------------------------------------------------------------- coordinators


@dataclass
class Coordinator:
    key: str  # "godtm" or "fastdtm"
    proc: Managed
    url: str
    ready_path: str
    grpc_port: int = 0  # its gRPC API (dtmgimp.Dtm) on LOOPBACK; 0: none

    @property
    def name(self) -> str:
        return SERVERS[self.key]


def start_godtm(args: argparse.Namespace, pin: Pinning, log_dir: Path, redis_port: int) -> Coordinator:
    port, grpc_port = free_port(), free_port()
    conf = write_go_dtm_config(
        log_dir / "godtm.yml",
        redis_port=redis_port,
        http_port=port,
        grpc_port=grpc_port,  # Go DTM always listens on it (default 36790); saga-grpc calls it
        log_level=LOG_LEVELS[args.log_level][0],
    )
    # --workers N: GOMAXPROCS=N, pinned (its cpus are then N, check_cores) or not. Pinned, the Go runtime
    # already sizes GOMAXPROCS from the affinity mask; Go DTM then calls automaxprocs, which would raise it
    # to a cgroup CPU quota if there were one. An explicit value wins over both.
    env = {**os.environ, "GOMAXPROCS": str(args.workers)}
    proc = spawn("godtm", [str(GO_DTM_BIN), "-c", str(conf)], pin.coordinator, log_dir, env=env, cwd=log_dir)
    print(f"Go DTM: {GO_DTM_BIN} -c {conf} (GOMAXPROCS={env['GOMAXPROCS']})", flush=True)
    return Coordinator("godtm", proc, f"http://{LOOPBACK}:{port}", "/api/ping", grpc_port)


def start_fastdtm(args: argparse.Namespace, pin: Pinning, log_dir: Path, redis_port: int) -> Coordinator:
    port, grpc_port = free_port(), free_port()
    exe = Path(sys.executable).with_name("fastdtm")  # the venv's console script
    argv = [str(exe), "serve", "--store", f"redis://{LOOPBACK}:{redis_port}/0", "--host", LOOPBACK]
    # --workers explicitly (1 by default), whatever FASTDTM_WORKERS says: N uvicorn worker processes on
    # one port, each a node of its own, children of the pid the CPU figures start from. Like Go DTM it
    # always serves gRPC too, on a free port rather than the default 36790 (the workers share it too).
    argv += ["--port", str(port), "--grpc-port", str(grpc_port), "--workers", str(args.workers)]
    argv += ["--log-level", LOG_LEVELS[args.log_level][1]]
    proc = spawn("fastdtm", argv, pin.coordinator, log_dir)
    print("fastdtm:", " ".join(argv), flush=True)
    return Coordinator("fastdtm", proc, f"http://{LOOPBACK}:{port}", "/api/ready", grpc_port)


async def server_version(coord: Coordinator) -> str:
    """What the server says over HTTP, plus where the bits came from."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(coord.url + "/api/dtmsvr/version") as resp,
    ):
        said = str((await resp.json(content_type=None)).get("version", "?"))
    if coord.key == "godtm":
        # `go install` sets no -ldflags version, so the server says v0.0.0-dev; the binary knows its module.
        build_info = command_output(["go", "version", "-m", str(GO_DTM_BIN)])
        mod = re.search(rf"^\s*mod\s+{re.escape(GO_DTM_MODULE)}\s+(\S+)", build_info, re.MULTILINE)
        return f"Go DTM {mod.group(1) if mod else '?'} (go install; /version says {said})"
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "status", "--porcelain", "--", "fastdtm"]) not in ("", "?")
    return f"fastdtm {said} (commit {commit}{', uncommitted changes in fastdtm/' if dirty else ''})"


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True, slots=True)
class Context:
    args: argparse.Namespace
    pin: Pinning
    log_dir: Path
    redis: Managed
    nginx: Managed
    branch_base: str  # nginx URL the HTTP workloads put in their branch URLs
    grpc_branch: Managed
    grpc_branch_addr: str  # host:port of the gRPC branch server, for saga-grpc's branch URLs
    admin: RedisAdmin  # opened once; INFO does not count itself, CONFIG RESETSTAT does (OWN_COMMANDS)


@dataclass
class Level:
    server: str
    workload: str
    concurrency: int
    report: dict[str, Any]  # the load generator's JSON line
    cpu: dict[str, float]  # CPU seconds over the window, by role
    calls: dict[str, int]  # Redis commandstats calls over the window, ours removed
    failed_calls: int
    cpu_window_s: float
    # Whole-cpu busy share of the coordinator's and the support cpus, whoever ran there: the gap to
    # share_pct() is other processes on the machine (noise), not the benchmark.
    cores_busy: dict[str, float]
    cpus: dict[str, int]  # how many cpus "coordinator" and "support" are (unpinned: every cpu, both)

    @property
    def count(self) -> int:
        return int(self.report["count"])

    @property
    def tps(self) -> float:
        return float(self.report["tps"])

    def per_tx(self, value: float) -> float:
        return value / self.count if self.count else float("nan")

    def cpu_per_1k(self, role: str) -> float:
        return self.per_tx(self.cpu[role]) * 1000

    def busy_pct(self, *roles: str) -> float:
        """Share of one core these roles used over the window: near 100 for the coordinator means it is
        the limit; the support roles (redis, the branch servers, loadgen) near 100 would mean they are."""
        return 100 * sum(self.cpu[r] for r in roles) / self.cpu_window_s if self.cpu_window_s > 0 else float("nan")

    def share_pct(self, cpuset: str, *roles: str) -> float:
        """Share of the cpuset ("coordinator" or "support") these roles used, comparable with cores_busy:
        busy_pct() over its cpus (the same figure with one cpu)."""
        return self.busy_pct(*roles) / self.cpus[cpuset]

    @property
    def redis_calls_per_tx(self) -> float:
        return self.per_tx(sum(self.calls.values()))

    @property
    def eval_per_tx(self) -> float:
        return self.per_tx(sum(self.calls.get(c, 0) for c in EVAL_COMMANDS))

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            **self.report,
            "cpu_window_s": round(self.cpu_window_s, 3),
            "cpu_s": {role: round(v, 3) for role, v in self.cpu.items()},
            "cpu_s_per_1k_tx": {role: json_number(self.cpu_per_1k(role), 4) for role in self.cpu},
            "coordinator_core_pct": json_number(self.busy_pct("coordinator"), 1),
            "support_core_pct": json_number(self.busy_pct(*SUPPORT_ROLES), 1),
            "cpus_busy_pct": {name: json_number(v, 1) for name, v in self.cores_busy.items()},
            "cpus": self.cpus,
            "redis_calls_per_tx": json_number(self.redis_calls_per_tx, 3),
            "eval_per_tx": json_number(self.eval_per_tx, 3),
            "redis_failed_calls": self.failed_calls,
            "redis_calls_per_tx_by_command": {
                c: json_number(self.per_tx(n), 3) for c, n in sorted(self.calls.items(), key=lambda kv: -kv[1])
            },
        }


def failed_calls(info: bytes) -> int:
    """Sum of ``failed_calls`` over commandstats (errors a command or script returned)."""
    return sum(int(n) for n in re.findall(rb"failed_calls=(\d+)", info))


def loadgen_argv(ctx: Context, coord: Coordinator, workload: str, *extra: str) -> list[str]:
    argv = [str(LOADGEN_BIN), "-coord", coord.url, "-workload", workload]
    if workload in GRPC_WORKLOADS:
        argv += ["-grpc", f"{LOOPBACK}:{coord.grpc_port}", "-grpc-branch", ctx.grpc_branch_addr]
    else:
        argv += ["-branch", ctx.branch_base]
    return pinned([*argv, "-timeout", f"{ctx.args.request_timeout}s", *extra], ctx.pin.support)


async def verify(ctx: Context, coord: Coordinator, workload: str) -> None:
    """One transaction, then GET /query: it must show status succeed (loadgen -verify)."""
    tag = f"sbs{os.getpid()}-{coord.key}"
    argv = loadgen_argv(ctx, coord, workload, "-verify", "-prefix", tag)
    code, text = await run_captured(argv, REQUESTS_PER_TX * ctx.args.request_timeout + 10)
    if code != 0:
        raise RuntimeError(f"{coord.name} failed the {workload} check: {text}\n{coord.proc.log_tail()}")
    got = json.loads(text)
    flow = ", ".join(f"{b['branch_id']} {b['op']} {b['status']}" for b in got.get("branches") or [])
    print(f"  verified {workload}: {got['gid']} {got['status']} ({flow})", flush=True)


def cpu_snapshot(roles: dict[str, int]) -> dict[str, float]:
    return {role: tree_cpu_seconds(pid) for role, pid in roles.items()}


@dataclass(frozen=True, slots=True)
class Mark:
    """Counters when the load generator's window opened or closed."""

    at: float
    cpu: dict[str, float]  # CPU seconds by role
    cores: dict[str, tuple[int, int]]  # (busy, total) ticks of the coordinator's and the support cpus

    @classmethod
    def take(cls, roles: dict[str, int], pin: Pinning) -> Mark:
        cores = {k: cores_busy_ticks(v) for k, v in pin.cpusets().items()}
        return cls(time.perf_counter(), cpu_snapshot(roles), cores)

    def busy_pct_since(self, start: Mark) -> dict[str, float]:
        out = {}
        for name, (busy, total) in self.cores.items():
            busy0, total0 = start.cores[name]
            out[name] = 100 * (busy - busy0) / (total - total0) if total > total0 else float("nan")
        return out


async def run_level(ctx: Context, coord: Coordinator, workload: str, concurrency: int) -> Level:
    args = ctx.args
    tag = f"sbs{os.getpid()}-{coord.key}-{workload}-c{concurrency}"
    timing = ["-concurrency", str(concurrency), "-warmup", f"{args.warmup}s", "-duration", f"{args.duration}s"]
    argv = loadgen_argv(ctx, coord, workload, *timing, "-prefix", tag, "-markers")
    async with load_generator(argv, ctx.log_dir / f"loadgen-{coord.key}-{workload}-{concurrency}.log") as proc:
        return await _collect(ctx, coord, workload, concurrency, proc)


async def _collect(
    ctx: Context, coord: Coordinator, workload: str, concurrency: int, proc: asyncio.subprocess.Process
) -> Level:
    """Reads the load generator's lines; CPU and Redis counters are read when its window opens and closes."""
    roles = {
        "coordinator": coord.proc.pid,
        "redis": ctx.redis.pid,
        "nginx": ctx.nginx.pid,
        "grpc_branch": ctx.grpc_branch.pid,
        "loadgen": proc.pid,
    }
    marks: dict[str, Mark] = {}
    info, report = b"", None
    assert proc.stdout is not None and proc.stdin is not None
    while report is None and (line := await proc.stdout.readline()):
        msg = json.loads(line)
        if msg.get("event") == "window_start":
            await ctx.admin.command("CONFIG", "RESETSTAT")
            marks["start"] = Mark.take(roles, ctx.pin)
        elif msg.get("event") == "window_end":
            # The load generator is still alive here (it waits for its stdin), so its /proc entry is whole.
            marks["end"] = Mark.take(roles, ctx.pin)
            info = await ctx.admin.command("INFO", "commandstats")
        else:
            report = msg
    proc.stdin.close()
    code = await proc.wait()
    if code != 0 or report is None or len(marks) != 2:
        raise RuntimeError(f"load generator for {coord.name} {workload}/{concurrency} failed (exit {code}): {report}")
    if report.get("stuck"):
        raise RuntimeError(f"{coord.name} {workload}/{concurrency}: transactions still running long after the window")
    calls, _ = parse_info(info)
    for command, own in OWN_COMMANDS.items():
        calls[command] = calls.get(command, own) - own
    start, end = marks["start"], marks["end"]
    return Level(
        server=coord.key,
        workload=workload,
        concurrency=concurrency,
        report=report,
        cpu={role: end.cpu[role] - start.cpu[role] for role in roles},
        calls={c: n for c, n in calls.items() if n > 0},
        failed_calls=failed_calls(info),
        cpu_window_s=end.at - start.at,
        cores_busy=end.busy_pct_since(start),
        cpus={name: len(cpus) for name, cpus in ctx.pin.cpusets().items()},
    )


async def idle(ctx: Context, coord: Coordinator) -> dict[str, float]:
    """Background cost with no load (cron polling and the like): it is in every per-tx figure too."""
    roles = {"coordinator": coord.proc.pid, "redis": ctx.redis.pid}
    await ctx.admin.command("CONFIG", "RESETSTAT")
    before, t0 = cpu_snapshot(roles), time.perf_counter()
    await asyncio.sleep(ctx.args.idle_seconds)
    after, elapsed = cpu_snapshot(roles), time.perf_counter() - t0
    calls, _ = parse_info(await ctx.admin.command("INFO", "commandstats"))
    commands = sum(calls.values()) - sum(OWN_COMMANDS.values())
    return {
        "seconds": round(elapsed, 2),
        "coordinator_cpu_pct": round(100 * (after["coordinator"] - before["coordinator"]) / elapsed, 2),
        "redis_cpu_pct": round(100 * (after["redis"] - before["redis"]) / elapsed, 2),
        "redis_commands_per_s": round(commands / elapsed, 1),
    }


async def run_server(ctx: Context, key: str, redis_port: int) -> tuple[list[Level], dict[str, Any]]:
    """FLUSHALL, start one coordinator, check every workload, measure every level, stop it by pid."""
    args = ctx.args
    await ctx.admin.command("FLUSHALL")
    start = start_godtm if key == "godtm" else start_fastdtm
    levels: list[Level] = []
    with ExitStack() as stack:
        coord = start(args, ctx.pin, ctx.log_dir, redis_port)
        stack.callback(coord.proc.stop)
        await wait_ready(coord.proc, coord.url + coord.ready_path, args.ready_timeout)
        if any(w in GRPC_WORKLOADS for w in args.workloads):
            await wait_tcp(coord.proc, coord.grpc_port, args.ready_timeout)
        meta: dict[str, Any] = {"version": await server_version(coord), "log": str(coord.proc.log_path)}
        meta["workers" if key == "fastdtm" else "gomaxprocs"] = args.workers
        print(f"{coord.name}: {meta['version']}, ready at {coord.url}", flush=True)
        for workload in args.workloads:
            await verify(ctx, coord, workload)
        if args.idle_seconds > 0:
            meta["idle"] = await idle(ctx, coord)
            print(f"  idle: {meta['idle']}", flush=True)
        for workload in args.workloads:
            for concurrency in args.concurrency:
                check_alive(coord.proc)
                levels.append(await run_level(ctx, coord, workload, concurrency))
                print(level_line(levels[-1]), flush=True)
                await asyncio.sleep(args.pause)
        check_alive(coord.proc)
    await asyncio.sleep(args.pause)
    return levels, meta


async def run(args: argparse.Namespace, pin: Pinning, cores: str) -> tuple[list[Level], dict[str, Any]]:
    log_dir = Path(tempfile.mkdtemp(prefix="fastdtm-sbs-"))
    levels: list[Level] = []
    meta: dict[str, Any] = {"pinning": pin.note, "workers": args.workers, "cores": cores}
    meta |= {"logs": str(log_dir), "servers": {}}
    with ExitStack() as stack:
        redis, redis_port = start_redis(stack, args.redis_server, pin.support, log_dir)
        nginx, nginx_port = start_nginx(stack, pin, log_dir)
        grpc_branch, grpc_branch_port = start_grpc_branch(stack, pin, log_dir)
        await wait_tcp(redis, redis_port, 10)
        await wait_tcp(nginx, nginx_port, 10)
        await wait_tcp(grpc_branch, grpc_branch_port, 10)
        admin = await RedisAdmin.connect(redis_port)
        try:
            branch_base = f"http://{LOOPBACK}:{nginx_port}/api/busi"
            grpc_branch_addr = f"{LOOPBACK}:{grpc_branch_port}"
            ctx = Context(args, pin, log_dir, redis, nginx, branch_base, grpc_branch, grpc_branch_addr, admin)
            meta["machine"] = machine(await redis_version(redis_port))
            print(f"{meta['machine']}\n{pin.note}\n{cores}\nlogs: {log_dir}\n", flush=True)
            for key in args.servers:
                server_levels, meta["servers"][key] = await run_server(ctx, key, redis_port)
                levels += server_levels
        finally:
            await admin.close()
    return levels, meta


def machine(redis_ver: str) -> str:
    nginx = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=False).stderr.strip()
    return (
        f"machine: {os.cpu_count()} cpus ({platform.processor() or platform.machine()}), {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; redis-server {redis_ver}; "
        f"{nginx.removeprefix('nginx version: ')}; {command_output(['go', 'version'])}"
    )


# ----------------------------------------------------------------------------- report


def level_line(r: Level) -> str:
    rep = r.report
    line = (
        f"  {SERVERS[r.server]:<7} {r.workload:<10} c={r.concurrency:<4} {r.tps:8.1f} tx/s  p50 {rep['p50_ms']:.1f} "
        f"p99 {rep['p99_ms']:.1f} max {rep['max_ms']:.1f} ms  errors {rep['errors']}  "
        f"CPU s/1k tx: coordinator {fmt(r.cpu_per_1k('coordinator'), 3)} redis {fmt(r.cpu_per_1k('redis'), 3)} "
        f"nginx {fmt(r.cpu_per_1k('nginx'), 3)} grpc-branch {fmt(r.cpu_per_1k('grpc_branch'), 3)} "
        f"loadgen {fmt(r.cpu_per_1k('loadgen'), 3)}  "
        f"busy: coordinator cpus {r.cores_busy['coordinator']:.0f}% "
        f"(coordinator {r.share_pct('coordinator', 'coordinator'):.0f}%), support cpus {r.cores_busy['support']:.0f}% "
        f"(redis+branches+loadgen {r.share_pct('support', *SUPPORT_ROLES):.0f}%)  "
        f"Redis calls/tx {fmt(r.redis_calls_per_tx)} EVAL*/tx {fmt(r.eval_per_tx)}"
    )
    reasons = [f"\n    error x{e['count']}: {e['reason']}" for e in rep.get("error_reasons") or []]
    return line + "".join(reasons)


TABLE_HEADER = (
    "| workload | concurrency | server | tx/s | tx/s fastdtm ÷ Go DTM | p50 ms | p99 ms | p99 fastdtm ÷ Go DTM "
    "| errors | coordinator CPU s/1k tx | redis CPU s/1k tx | Redis calls/tx | EVAL+EVALSHA/tx "
    "| coordinator's cpu busy % (by it) |\n"
    "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def table_rows(levels: Sequence[Level], workloads: Sequence[str]) -> Iterator[str]:
    by_key = {(r.server, r.workload, r.concurrency): r for r in levels}
    concurrencies = sorted({r.concurrency for r in levels})
    for workload in workloads:
        for concurrency in concurrencies:
            go = by_key.get(("godtm", workload, concurrency))
            for key in SERVERS:
                r = by_key.get((key, workload, concurrency))
                if r is None:
                    continue
                both = key == "fastdtm" and go is not None
                cells = [
                    workload,
                    str(concurrency),
                    SERVERS[key],
                    f"{r.tps:.0f}",
                    _ratio(r.tps, go.tps) if both and go else "",
                    f"{r.report['p50_ms']:.1f}",
                    f"{r.report['p99_ms']:.1f}",
                    _ratio(r.report["p99_ms"], go.report["p99_ms"]) if both and go else "",
                    str(r.report["errors"]),
                    fmt(r.cpu_per_1k("coordinator"), 3),
                    fmt(r.cpu_per_1k("redis"), 3),
                    fmt(r.redis_calls_per_tx, 1),
                    fmt(r.eval_per_tx, 2),
                    f"{r.cores_busy['coordinator']:.0f} ({r.share_pct('coordinator', 'coordinator'):.0f})",
                ]
                yield "| " + " | ".join(cells) + " |"


def markdown(levels: Sequence[Level], workloads: Sequence[str]) -> str:
    return "\n".join([TABLE_HEADER, *table_rows(levels, workloads)])


def draw_chart(path: Path, levels: Sequence[Level], workloads: Sequence[str], title: str) -> None:
    """tx/s against concurrency, one panel per workload, one line per server."""
    import matplotlib  # imported here: only this step needs it (the `bench` extra)

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    cols = min(2, len(workloads))
    rows = -(-len(workloads) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    axes = list(grid.flat)
    for ax in axes[len(workloads) :]:
        ax.set_visible(False)
    for ax, workload in zip(axes, workloads, strict=False):
        concurrencies = sorted({r.concurrency for r in levels if r.workload == workload})
        for key, name in SERVERS.items():
            points = sorted((r.concurrency, r.tps) for r in levels if r.server == key and r.workload == workload)
            if points:
                ax.plot([c for c, _ in points], [t for _, t in points], marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.minorticks_off()
        ax.set_ylim(bottom=0)
        ax.set_title(workload)
        ax.set_xlabel("concurrency (transactions in flight)")
        ax.set_ylabel("transactions/s")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(levels: Sequence[Level], meta: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\ncommand: {display_command()}")
    for key, info in meta["servers"].items():
        print(f"{SERVERS[key]}: {info['version']}; idle {info.get('idle', 'not measured')}")
    print(f"{meta['pinning']}; {meta['cores']}; log level {args.log_level} on both servers\n")
    print(markdown(levels, args.workloads))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.results_dir / f"side_by_side-{stamp}.json"
    settings = {k: v for k, v in vars(args).items() if k not in ("results_dir", "chart")}
    write_results(path, settings, meta, [r.to_json() for r in levels])
    print(f"\nresults: {path}")
    where = f"alone on cpu {args.coordinator_cpus}" if meta["pinning"].startswith("pinned") else "unpinned"
    cores = "" if args.workers == 1 else f", {args.workers} workers / GOMAXPROCS={args.workers}"
    title = (
        f"fastdtm vs Go DTM, tx/s ({datetime.now():%Y-%m-%d}, {args.duration:g} s per level; "
        f"coordinator {where}{cores})"
    )
    try:
        draw_chart(args.chart, levels, args.workloads, title)
    except ImportError:
        print("chart skipped: matplotlib is missing (pip install -e '.[bench]')", file=sys.stderr)
        return
    print(f"chart: {args.chart}")


# ----------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per level (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each level (default 3)")
    p.add_argument("--concurrency", type=int_list, default=[16, 64], help="comma list of levels (default 16,64)")
    p.add_argument(
        "--workloads",
        type=comma_choices(WORKLOADS),
        default=list(WORKLOADS),
        help=f"comma list of {', '.join(WORKLOADS)}",
    )
    p.add_argument(
        "--servers", type=comma_choices(tuple(SERVERS)), default=list(SERVERS), help="godtm,fastdtm (default: both)"
    )
    p.add_argument("--log-level", choices=tuple(LOG_LEVELS), default="warn", help="both servers' (default warn)")
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="fastdtm's --workers and Go DTM's GOMAXPROCS; pinned, the coordinator gets as many cpus (default 1)",
    )
    p.add_argument(
        "--coordinator-cpus", help="cpus of the coordinator under test, alone (default 1, 1-N with --workers N)"
    )
    p.add_argument(
        "--support-cpus", default="0", help="cpus of redis, the branch servers, the load generator (default 0)"
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cpus")
    p.add_argument("--request-timeout", type=float, default=10.0, help="load generator timeout per request, s")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for a server to be ready")
    p.add_argument("--idle-seconds", type=float, default=3.0, help="idle cost of each server before its levels")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between levels")
    p.add_argument("--setup-timeout", type=float, default=1200.0, help="bound of the install and build steps, s")
    p.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes (bench/results)")
    p.add_argument("--chart", type=Path, default=CHART, help="PNG path (default bench/side_by_side.png)")
    args = p.parse_args(argv)
    if args.coordinator_cpus is None:
        args.coordinator_cpus = "1" if args.workers == 1 else f"1-{args.workers}"
    return args


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be 1 or more")
    return value


def time_bound(args: argparse.Namespace) -> float:
    """Upper bound of the measuring part, from the flags (set-up has --setup-timeout)."""
    tx_bound = REQUESTS_PER_TX * args.request_timeout
    per_level: float = args.warmup + args.duration + tx_bound + args.pause + 15
    # Ready over HTTP, then (with a gRPC workload) the gRPC port: each within --ready-timeout.
    per_server: float = 2 * args.ready_timeout + len(args.workloads) * (tx_bound + 10) + args.idle_seconds + 20
    levels = len(args.workloads) * len(args.concurrency)
    return 30 + len(args.servers) * (per_server + per_level * levels)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)

    async def bounded(pin: Pinning, cores: str) -> tuple[list[Level], dict[str, Any]]:
        async with asyncio.timeout(time_bound(args)):
            return await run(args, pin, cores)

    try:
        cores = check_cores(args)  # before set-up: a refusal costs nothing
        setup(args)
        pin = choose_pinning(args)
        levels, meta = asyncio.run(bounded(pin, cores))
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"side-by-side benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    except SystemExit:  # SIGTERM, through benchlib.terminate: the finally blocks have run
        print("terminated; everything started was stopped", file=sys.stderr)
        raise
    report(levels, meta, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
