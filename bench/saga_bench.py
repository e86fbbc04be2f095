"""Throughput, latency and cost per transaction of fastdtm's two-branch saga hot path.

It measures, for each concurrency level, how many two-branch sagas per second fastdtm completes
with ``wait_result`` (p50/p99 latency and errors alongside), how many Redis commands one saga
costs (from ``INFO commandstats``, split into client-issued and inside-Lua by a short MONITOR
sample), and how many CPU seconds fastdtm and redis-server spend per 1000 sagas. It owns the
whole set-up: a private redis-server, the branch server (``bench/branch_server.py``) and
``python -m fastdtm serve``, all on 127.0.0.1, pinned away from the load generator with taskset,
and stopped by pid when the run ends.

Run (from the repository root):
    .venv/bin/python bench/saga_bench.py --duration 15 --concurrency 16,64
    .venv/bin/python bench/saga_bench.py --workload empty     # branch URLs "" (DTM's own benchmark)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop
from benchlib import (
    LOOPBACK,
    OWN_COMMANDS,
    REPO_ROOT,
    Managed,
    MonitorSample,
    RedisAdmin,
    check_alive,
    command_output,
    cpu_list,
    display_command,
    fmt,
    free_port,
    int_list,
    own_cpu_seconds,
    parse_info,
    redis_version,
    spawn,
    start_redis,
    terminate,
    tree_cpu_seconds,
    wait_ready,
    wait_tcp,
)

BRANCH_SERVER = Path(__file__).resolve().parent / "branch_server.py"
JSON_HEADERS = {"Content-Type": "application/json"}
WORKLOADS = ("http", "empty")
# Our own socket reads that land in total_reads_processed after the reset (RESETSTAT's and INFO's).
OWN_READS = 2


# ----------------------------------------------------------------------------- redis scripts


def scripts_per_saga(sample: MonitorSample, sagas: int, names: dict[str, str]) -> dict[str, float]:
    """EVALSHA calls per saga by script name, over the MONITOR sample and the sagas completed during it."""
    if not sagas:
        return {}
    return {names.get(sha, sha[:12]): n / sagas for sha, n in sample.scripts.most_common()}


def script_names(module: str) -> dict[str, str]:
    """SHA1 → name of the server's Lua files (``<module>/lua/*.lua``), to name EVALSHA calls."""
    lua_dir = REPO_ROOT / module.replace(".", "/") / "lua"
    return {hashlib.sha1(path.read_bytes()).hexdigest(): path.stem for path in sorted(lua_dir.glob("*.lua"))}


# ----------------------------------------------------------------------------- load


@dataclass
class Recorder:
    """What the saga loops saw; only completions while ``active`` (the measured window) count."""

    active: bool = False
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    sampling: bool = False  # while MONITOR samples, after the window
    sampled_ok: int = 0

    def add(self, seconds: float, error: str | None) -> None:
        if self.sampling and error is None:
            self.sampled_ok += 1
        if not self.active:
            return
        if error is None:
            self.latencies.append(seconds)
        else:
            self.errors[error] += 1


def saga_body(gid: str, branch_base: str) -> bytes:
    """The submit body of a two-branch saga; ``branch_base`` "" gives DTM's empty-URL shape."""
    urls = [
        f"{branch_base}/{op}" if branch_base else ""
        for op in ("TransOut", "TransOutRevert", "TransIn", "TransInRevert")
    ]
    return (
        b'{"gid":"%s","trans_type":"saga","steps":[{"action":"%s","compensate":"%s"},'
        b'{"action":"%s","compensate":"%s"}],"payloads":["{\\"amount\\":30}","{\\"amount\\":30}"],'
        b'"wait_result":true}' % (gid.encode(), *(url.encode() for url in urls))
    )


async def submit(session: aiohttp.ClientSession, url: str, body: bytes) -> str | None:
    """POST one saga; None when the reply is 200 with SUCCESS in it, else a short reason."""
    try:
        async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
            text = await resp.read()
            if resp.status == 200 and b"SUCCESS" in text:
                return None
            return f"HTTP {resp.status}: {text[:160].decode(errors='replace')}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]


async def saga_loop(
    session: aiohttp.ClientSession, url: str, gid_prefix: str, branch_base: str, rec: Recorder, stop: asyncio.Event
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        body = saga_body(f"{gid_prefix}_{n}", branch_base)
        started = time.perf_counter()
        error = await submit(session, url, body)
        rec.add(time.perf_counter() - started, error)
        if error is not None and not error.startswith("HTTP"):
            await asyncio.sleep(0.05)  # a refused connection would otherwise spin


# ----------------------------------------------------------------------------- one level


@dataclass(frozen=True, slots=True)
class Target:
    """Where the load goes and what to sample while it runs."""

    server_url: str
    branch_base: str  # "" for the empty workload
    redis_port: int
    cpu_pids: dict[str, int]  # role → root pid whose tree's CPU is measured
    script_names: dict[str, str]  # SHA1 → name of the server's Lua scripts


@dataclass
class LevelResult:
    workload: str
    concurrency: int
    seconds: float
    latencies: list[float]
    errors: Counter[str]
    calls: dict[str, int]
    reads: int
    cpu: dict[str, float]
    monitor: MonitorSample
    scripts: dict[str, float]  # EVALSHA calls per saga by script name, during the MONITOR sample

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def per_saga(self, count: float) -> float:
        return count / self.ok if self.ok else float("nan")

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def lua_share(self, command: str) -> float:
        """Share of ``command``'s calls that ran inside Lua, from the MONITOR sample (NaN if unseen)."""
        in_lua, outside = self.monitor.commands[(command, True)], self.monitor.commands[(command, False)]
        return in_lua / (in_lua + outside) if in_lua + outside else float("nan")

    @property
    def client_calls(self) -> float:
        """Commands sent by clients (not run by scripts), over the commands the MONITOR sample saw."""
        total = 0.0
        for command, n in self.calls.items():
            share = self.lua_share(command)
            if share == share:  # NaN != NaN: unseen in the sample, see unattributed_calls
                total += n * (1 - share)
        return total

    @property
    def unattributed_calls(self) -> int:
        """Calls of commands the MONITOR sample never saw (rare ones, e.g. periodic lease renewals)."""
        return sum(n for command, n in self.calls.items() if self.lua_share(command) != self.lua_share(command))


def cpu_snapshot(target: Target) -> dict[str, float]:
    snap = {role: tree_cpu_seconds(pid) for role, pid in target.cpu_pids.items()}
    snap["loadgen"] = own_cpu_seconds()
    return snap


async def run_level(target: Target, workload: str, concurrency: int, args: argparse.Namespace) -> LevelResult:
    rec = Recorder()
    stop = asyncio.Event()
    admin = await RedisAdmin.connect(target.redis_port)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    connector = aiohttp.TCPConnector(limit=concurrency, ttl_dns_cache=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tag = f"{args.run_tag}{workload[0]}{concurrency}"
        url = f"{target.server_url}/api/dtmsvr/submit"
        loops = [
            asyncio.create_task(saga_loop(session, url, f"{tag}_{i}", target.branch_base, rec, stop))
            for i in range(concurrency)
        ]
        try:
            result = await _measure(target, workload, concurrency, args, rec, admin)
        finally:
            stop.set()
            await _drain(loops, args.request_timeout + 2)
            await admin.close()
    return result


async def _measure(
    target: Target, workload: str, concurrency: int, args: argparse.Namespace, rec: Recorder, admin: RedisAdmin
) -> LevelResult:
    await asyncio.sleep(args.warmup)
    await admin.command("CONFIG", "RESETSTAT")
    cpu_before = cpu_snapshot(target)
    t0 = time.perf_counter()
    rec.active = True
    await asyncio.sleep(args.duration)
    rec.active = False
    t1 = time.perf_counter()
    cpu_after = cpu_snapshot(target)
    calls, fields = parse_info(await admin.command("INFO", "commandstats", "stats"))
    for command, own in OWN_COMMANDS.items():
        calls[command] = calls.get(command, own) - own
    rec.sampling = True
    monitor = await admin.monitor(args.monitor_seconds) if args.monitor_seconds > 0 else MonitorSample()
    rec.sampling = False
    return LevelResult(
        workload=workload,
        concurrency=concurrency,
        seconds=t1 - t0,
        latencies=rec.latencies,
        errors=rec.errors,
        calls={command: n for command, n in calls.items() if n > 0},
        reads=int(fields.get("total_reads_processed", "0")) - OWN_READS,
        cpu={role: cpu_after[role] - cpu_before[role] for role in cpu_after},
        monitor=monitor,
        scripts=scripts_per_saga(monitor, rec.sampled_ok, target.script_names),
    )


async def _drain(loops: list[asyncio.Task[None]], grace: float) -> None:
    _, pending = await asyncio.wait(loops, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)


# ----------------------------------------------------------------------------- report


def pct(share: float) -> str:
    return "n/a" if share != share else f"{100 * share:.0f}%"


def level_report(r: LevelResult, cores: Pinning) -> str:
    per_k = {role: r.per_saga(seconds) * 1000 for role, seconds in r.cpu.items()}
    lines = [
        f"== workload={r.workload} concurrency={r.concurrency} window={r.seconds:.2f}s ==",
        f"sagas/s {r.rate:.1f}   p50 {fmt(r.percentile_ms(0.50))} ms   p99 {fmt(r.percentile_ms(0.99))} ms   "
        f"ok {r.ok}   errors {sum(r.errors.values())}",
        f"redis: {fmt(r.per_saga(r.total_calls))} commands/saga, "
        f"of which client-issued {fmt(r.per_saga(r.client_calls))} "
        f"(rest inside Lua, per a {sum(r.monitor.commands.values())}-line MONITOR sample; "
        f"{fmt(r.per_saga(r.unattributed_calls), 3)} unattributed: not in the sample); "
        f"{fmt(r.per_saga(r.reads))} socket reads/saga (~ round trips incl. pipelines)",
    ]
    for command, n in sorted(r.calls.items(), key=lambda item: -item[1]):
        lines.append(f"    {command:<24} {r.per_saga(n):8.3f}/saga   inside Lua {pct(r.lua_share(command))}")
        if command == "evalsha":
            lines.extend(f"      script {name:<15} {k:8.3f}/saga (MONITOR sample)" for name, k in r.scripts.items())
    lines.append("CPU s per 1000 sagas: " + ", ".join(f"{role} {fmt(v, 3)}" for role, v in per_k.items()))
    lines.append(
        f"core use: server core(s) {cores.server or 'any'} "
        f"{100 * (r.cpu.get('fastdtm', 0) + r.cpu.get('redis', 0)) / r.seconds:.0f}% (fastdtm+redis); "
        f"load generator {100 * r.cpu['loadgen'] / r.seconds:.0f}%; branch server "
        f"{100 * r.cpu.get('branch', 0) / r.seconds:.0f}%"
    )
    lines.extend(f"  error x{n}: {reason}" for reason, n in r.errors.most_common(3))
    return "\n".join(lines)


TABLE_HEADER = (
    "| workload | concurrency | sagas/s | p50 ms | p99 ms | errors | Redis cmds/saga | client-issued cmds/saga "
    "| Redis reads/saga | fastdtm CPU s/1k | redis CPU s/1k | branch CPU s/1k | loadgen CPU s/1k |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
)


def table_row(r: LevelResult) -> str:
    cells = [
        r.workload,
        str(r.concurrency),
        f"{r.rate:.0f}",
        fmt(r.percentile_ms(0.50), 1),
        fmt(r.percentile_ms(0.99), 1),
        str(sum(r.errors.values())),
        fmt(r.per_saga(r.total_calls)),
        fmt(r.per_saga(r.client_calls)),
        fmt(r.per_saga(r.reads)),
        *(
            fmt(r.per_saga(r.cpu.get(role, float("nan"))) * 1000, 3)
            for role in ("fastdtm", "redis", "branch", "loadgen")
        ),
    ]
    return "| " + " | ".join(cells) + " |"


def breakdown_rows(r: LevelResult) -> Iterator[str]:
    for command, n in sorted(r.calls.items(), key=lambda item: -item[1]):
        yield f"| {r.workload} | {r.concurrency} | {command} | {r.per_saga(n):.3f} | {pct(r.lua_share(command))} |"
        if command == "evalsha":
            for name, k in r.scripts.items():
                yield f"| {r.workload} | {r.concurrency} | evalsha: {name} (sample) | {k:.3f} | |"


def markdown(results: Sequence[LevelResult]) -> str:
    parts = [TABLE_HEADER, *(table_row(r) for r in results), ""]
    parts.append("| workload | concurrency | Redis command | calls/saga | inside Lua |\n|---|--:|---|--:|--:|")
    parts.extend(row for r in results for row in breakdown_rows(r))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- set-up


@dataclass(frozen=True, slots=True)
class Pinning:
    client: str | None
    server: str | None
    branch: str | None
    note: str


def choose_pinning(args: argparse.Namespace) -> Pinning:
    if args.no_pin:
        return Pinning(None, None, None, "no pinning (--no-pin)")
    if shutil.which("taskset") is None:
        return Pinning(None, None, None, "no pinning (taskset not found)")
    available = os.sched_getaffinity(0)
    wanted = {int(c) for spec in (args.client_cpus, args.server_cpus, args.branch_cpus) for c in cpu_list(spec)}
    if not wanted <= available:
        return Pinning(None, None, None, f"no pinning (cpus {sorted(wanted - available)} not available)")
    os.sched_setaffinity(0, {int(c) for c in cpu_list(args.client_cpus)})
    note = (
        f"pinned: load generator on cpu {args.client_cpus}, fastdtm + redis-server on cpu {args.server_cpus}, "
        f"branch server on cpu {args.branch_cpus}"
    )
    return Pinning(args.client_cpus, args.server_cpus, args.branch_cpus, note)


def start_branch(stack: ExitStack, pin: Pinning, log_dir: Path) -> tuple[Managed, int]:
    port = free_port()
    argv = [sys.executable, str(BRANCH_SERVER), "--host", LOOPBACK, "--port", str(port)]
    proc = spawn("branch", argv, pin.branch, log_dir)
    stack.callback(proc.stop)
    return proc, port


def start_fastdtm(
    stack: ExitStack, args: argparse.Namespace, pin: Pinning, log_dir: Path, redis_port: int
) -> tuple[Managed, int]:
    port = free_port()
    argv = [sys.executable, "-m", args.server_module, "serve", "--store", f"redis://{LOOPBACK}:{redis_port}/0"]
    argv += ["--host", LOOPBACK, "--port", str(port), "--grpc-port", str(free_port())]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    argv += args.server_arg
    proc = spawn("fastdtm", argv, pin.server, log_dir)
    stack.callback(proc.stop)
    print("fastdtm command:", " ".join(argv), flush=True)
    return proc, port


async def idle_line(target: Target, seconds: float) -> str:
    """Background cost with no load: the cron polling its shards, lease renewals, heartbeats."""
    admin = await RedisAdmin.connect(target.redis_port)
    try:
        await admin.command("CONFIG", "RESETSTAT")
        before, t0 = cpu_snapshot(target), time.perf_counter()
        await asyncio.sleep(seconds)
        after, elapsed = cpu_snapshot(target), time.perf_counter() - t0
        calls, _ = parse_info(await admin.command("INFO", "commandstats"))
    finally:
        await admin.close()
    commands = sum(calls.values()) - sum(OWN_COMMANDS.values())
    busy = {role: 100 * (after[role] - before[role]) / elapsed for role in ("fastdtm", "redis")}
    return (
        f"idle, no load ({elapsed:.1f}s): fastdtm {busy['fastdtm']:.1f}% cpu, redis-server {busy['redis']:.1f}% cpu, "
        f"{commands / elapsed:.0f} Redis commands/s"
    )


async def run(args: argparse.Namespace) -> tuple[list[LevelResult], str]:
    pin = choose_pinning(args)
    log_dir = Path(tempfile.mkdtemp(prefix="fastdtm-bench-"))
    results: list[LevelResult] = []
    with ExitStack() as stack:
        redis, redis_port = start_redis(stack, args.redis_server, pin.server, log_dir)
        branch, branch_port = start_branch(stack, pin, log_dir)
        await wait_tcp(redis, redis_port, 10)
        await wait_tcp(branch, branch_port, 10)
        server, server_port = start_fastdtm(stack, args, pin, log_dir, redis_port)
        server_url = f"http://{LOOPBACK}:{server_port}"
        await wait_ready(server, f"{server_url}/api/ready", args.ready_timeout)
        version = server_version(args.server_module)
        print(machine_line(await redis_version(redis_port), pin, log_dir, version), flush=True)
        roles = {"fastdtm": server.pid, "redis": redis.pid, "branch": branch.pid}
        names = script_names(args.server_module)
        idle = await idle_line(Target(server_url, "", redis_port, roles, names), args.idle_seconds)
        print(idle + "\n", flush=True)
        for workload in args.workload:
            base = f"http://{LOOPBACK}:{branch_port}/api/busi" if workload == "http" else ""
            target = Target(server_url, base, redis_port, roles, names)
            for concurrency in args.concurrency:
                check_alive(server)
                results.append(await run_level(target, workload, concurrency, args))
                print(level_report(results[-1], pin) + "\n", flush=True)
                await asyncio.sleep(args.pause)
        check_alive(server)
    return results, idle


def server_version(module: str) -> str:
    """``<module> version`` at the repository's commit, marked dirty if its sources differ from it."""
    version = command_output([sys.executable, "-m", module, "version"])
    commit = command_output(["git", "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "status", "--porcelain", "--", module]) not in ("", "?")
    return f"{module} {version} (commit {commit}{', uncommitted changes' if dirty else ''})"


def machine_line(redis_ver: str, pin: Pinning, log_dir: Path, server: str) -> str:
    return (
        f"machine: {os.cpu_count()} cpus ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, redis-server {redis_ver}, aiohttp {aiohttp.__version__}\n"
        f"server: {server}\n{pin.note}\nlogs: {log_dir}\n"
    )


# ----------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per level (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each level (default 3)")
    p.add_argument("--concurrency", type=int_list, default=[16, 64], help="comma list of levels (default 16,64)")
    p.add_argument("--workload", type=_workloads, default=["http"], help="http (default), empty, or http,empty")
    p.add_argument("--workers", type=int, default=0, help="pass --workers N to fastdtm serve (default: not passed)")
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for fastdtm serve (repeatable)")
    p.add_argument(
        "--server-module", default="fastdtm", help="module run as `python -m MODULE serve` (default fastdtm)"
    )
    p.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    p.add_argument(
        "--monitor-seconds", type=float, default=4.0, help="MONITOR sample after each level (default 4); 0 disables"
    )
    p.add_argument("--idle-seconds", type=float, default=3.0, help="idle CPU measurement before the levels")
    p.add_argument("--request-timeout", type=float, default=10.0, help="client timeout per submit, seconds")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to wait for GET /api/ready")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between levels")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cpus")
    p.add_argument("--client-cpus", default="0", help="cpus for the load generator (default 0)")
    p.add_argument("--server-cpus", default="1", help="cpus for fastdtm and redis-server (default 1)")
    p.add_argument("--branch-cpus", default="0", help="cpus for the branch server (default 0, beside the client)")
    args = p.parse_args(argv)
    args.run_tag = f"bench{os.getpid()}t{int(time.time()) % 100000}"
    return args


def _workloads(text: str) -> list[str]:
    values = [part for part in text.split(",") if part]
    if not values or any(v not in WORKLOADS for v in values):
        raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(WORKLOADS)}")
    return values


def time_bound(args: argparse.Namespace) -> float:
    per_level: float = args.warmup + args.duration + args.monitor_seconds + args.request_timeout + args.pause + 10
    startup: float = 30 + args.ready_timeout + args.idle_seconds
    return startup + per_level * len(args.concurrency) * len(args.workload)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)

    async def bounded() -> tuple[list[LevelResult], str]:
        async with asyncio.timeout(time_bound(args)):
            return await run(args)

    try:
        results, idle = uvloop.run(bounded())
    except (RuntimeError, TimeoutError) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    print(f"command: {display_command()}\n")
    print(markdown(results))
    print(f"\n{idle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
