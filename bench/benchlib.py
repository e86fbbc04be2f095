"""Helpers shared by the benchmark harnesses (``saga_bench.py``, ``side_by_side.py``).

Process management (start pinned, measure CPU from ``/proc``, stop by pid, never by name), a minimal
Redis admin connection (``CONFIG RESETSTAT``, ``INFO``, ``MONITOR``) and readiness checks. Nothing here
knows about a particular server or workload.
"""

from __future__ import annotations

import argparse
import asyncio
import grp
import json
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
#: Go DTM v1.19.0 as scripts/install-go-dtm.sh builds it (into a folder git ignores; never committed).
GO_DTM_BIN = REPO_ROOT / ".tools" / "go-dtm" / "bin" / "dtm"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Our own commands that land in commandstats after CONFIG RESETSTAT (INFO does not count itself).
OWN_COMMANDS = {"config|resetstat": 1}
STOP_GRACE_S = 5.0


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ProcStat:
    ppid: int
    start_ticks: int
    own_ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime: children already reaped


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        raise RuntimeError("nginx not found (scripts/ensure-nginx.sh installs it)")
    return found


def nginx_config(written_by: str, directory: Path, error_log: Path, http_body: str) -> str:
    """A private nginx's whole config: one worker, every path under `directory`, our `http_body`."""
    user = ""
    if os.geteuid() == 0:  # as root nginx would switch its worker to "nobody": keep it as us
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
    temps = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp_paths = "".join(f"    {name}_temp_path {directory}/{name};\n" for name in temps)
    return (
        f"# Written by {written_by}\ndaemon off;\nworker_processes 1;\n{user}pid {directory}/nginx.pid;\n"
        f"error_log {error_log} warn;\nevents {{\n    worker_connections 4096;\n}}\nhttp {{\n"
        f"    access_log off;\n{temp_paths}    keepalive_requests 10000000;\n    keepalive_timeout 300s;\n"
        f"{http_body}}}\n"
    )


def read_proc_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state; ppid=4, utime=14, stime=15, cutime=16, cstime=17, starttime=22.
    return ProcStat(
        ppid=int(fields[1]),
        start_ticks=int(fields[19]),
        own_ticks=int(fields[11]) + int(fields[12]),
        child_ticks=int(fields[13]) + int(fields[14]),
    )


def process_tree(root: int) -> dict[int, ProcStat]:
    """``root`` and all its live descendants (workers, their helpers), by pid."""
    stats: dict[int, ProcStat] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := read_proc_stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    tree: dict[int, ProcStat] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats and pid not in tree:
            tree[pid] = stats[pid]
            frontier.extend(child for child, stat in stats.items() if stat.ppid == pid)
    return tree


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process tree: live processes count themselves, reaped ones count in their parent."""
    ticks = sum(stat.own_ticks + stat.child_ticks for stat in process_tree(root).values())
    return ticks / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU of this process only (the load generator), not of the servers it started."""
    stat = read_proc_stat(os.getpid())
    return 0.0 if stat is None else stat.own_ticks / CLK_TCK


def cores_busy_ticks(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) clock ticks of these cpus since boot, from /proc/stat: with a process's own CPU time
    over the same window it tells how much of a core went to processes that are not ours."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal (guest time is already inside user)
        ticks = [int(v) for v in values[:8]]
        idle = ticks[3] + ticks[4]
        busy += sum(ticks) - idle
        total += sum(ticks)
    return busy, total


@dataclass
class Managed:
    """A process this benchmark started; ``stop()`` ends it and any descendants by pid."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 30) -> str:
        with suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """Idempotent. Once the process has exited and been reaped its pid may be someone else's, so
        then nothing more is looked up or signalled."""
        if self.stopped or self.popen.poll() is not None:
            self.stopped = True
            return
        self.stopped = True
        # Unreaped, our child keeps its pid, so the tree read here is really its own.
        descendants = {pid: stat.start_ticks for pid, stat in process_tree(self.pid).items() if pid != self.pid}
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(STOP_GRACE_S)
        deadline = time.monotonic() + STOP_GRACE_S
        for pid, start in descendants.items():
            _stop_pid(pid, start, deadline)


def _same_process(pid: int, start_ticks: int) -> bool:
    stat = read_proc_stat(pid)
    return stat is not None and stat.start_ticks == start_ticks


def _stop_pid(pid: int, start_ticks: int, deadline: float) -> None:
    """Stop a leftover descendant, checking its start time so a reused pid is never hit."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _same_process(pid, start_ticks):
            return
        with suppress(ProcessLookupError):
            os.kill(pid, sig)
        while time.monotonic() < deadline and _same_process(pid, start_ticks):
            time.sleep(0.05)
        deadline = time.monotonic() + 1.0


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """``argv`` under ``taskset -c cpus`` when ``cpus`` is set; taskset execs, so the pid stays the command's."""
    return ["taskset", "-c", cpus, *argv] if cpus else argv


def spawn(
    name: str,
    argv: list[str],
    cpus: str | None,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO_ROOT,
) -> Managed:
    """Start ``argv`` with output to ``<log_dir>/<name>.log``; pinned with taskset when ``cpus`` is set."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            pinned(argv, cpus), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    return Managed(name, popen, log_path)


# ----------------------------------------------------------------------------- redis admin


class RedisAdmin:
    """Just enough RESP for CONFIG RESETSTAT, INFO and MONITOR, on a connection opened before any reset."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, port: int) -> RedisAdmin:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        return cls(reader, writer)

    async def command(self, *args: str) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._writer.write(b"".join(parts))
        return await self._reply()

    async def _reply(self) -> bytes:
        line = (await self._reader.readline()).rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(f"redis error: {rest.decode(errors='replace')}")
        if kind == b"$":
            size = int(rest)
            return b"" if size < 0 else (await self._reader.readexactly(size + 2))[:-2]
        if kind in (b"+", b":"):
            return rest
        raise RuntimeError(f"unexpected redis reply: {line[:80]!r}")

    async def monitor(self, seconds: float) -> MonitorSample:
        """Sample ``seconds`` of MONITOR; this connection is unusable afterwards."""
        sample = MonitorSample()
        if await self.command("MONITOR") != b"OK":
            raise RuntimeError("MONITOR was refused")
        with suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while line := await self._reader.readline():
                    if (parsed := parse_monitor_line(line)) is not None:
                        sample.add(*parsed)
        return sample

    async def close(self) -> None:
        self._writer.close()
        with suppress(OSError):
            await self._writer.wait_closed()


@dataclass
class MonitorSample:
    """Commands seen by MONITOR, by (name, ran inside Lua), and EVALSHA calls by script SHA1."""

    commands: Counter[tuple[str, bool]] = field(default_factory=Counter)
    scripts: Counter[str] = field(default_factory=Counter)

    def add(self, command: str, in_lua: bool, first_arg: str) -> None:
        self.commands[(command, in_lua)] += 1
        if command == "evalsha":
            self.scripts[first_arg] += 1


def parse_monitor_line(line: bytes) -> tuple[str, bool, str] | None:
    """``+1700000000.1 [0 lua] "hset" "k" ...`` → ("hset", True, "k"); None for anything else."""
    open_at, close_at = line.find(b"["), line.find(b"] ")
    if open_at < 0 or close_at < 0:
        return None
    source = line[open_at + 1 : close_at].split()
    tokens = line[close_at + 2 :].split(b'"', 4)  # ['', cmd, ' ', first arg, rest]
    if len(source) < 2 or len(tokens) < 3:
        return None
    first_arg = tokens[3].decode(errors="replace") if len(tokens) > 3 else ""
    return tokens[1].decode(errors="replace").lower(), source[1] == b"lua", first_arg


def parse_info(text: bytes) -> tuple[dict[str, int], dict[str, str]]:
    """INFO output → (calls per command from commandstats, every other ``key:value`` field)."""
    calls: dict[str, int] = {}
    fields: dict[str, str] = {}
    for raw in text.decode(errors="replace").splitlines():
        key, sep, value = raw.partition(":")
        if not sep or raw.startswith("#"):
            continue
        if key.startswith("cmdstat_"):
            calls[key.removeprefix("cmdstat_")] = int(value.split(",", 1)[0].removeprefix("calls="))
        else:
            fields[key] = value
    return calls, fields


# ----------------------------------------------------------------------------- load

# ----------------------------------------------------------------------------- start-up and readiness


def cpu_list(spec: str) -> list[str]:
    """taskset list syntax, e.g. ``0`` or ``1,2`` or ``2-3``."""
    out: list[str] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        out.extend(str(c) for c in range(int(low), int(high or low) + 1))
    return out


async def wait_tcp(proc: Managed, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        check_alive(proc)
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} did not listen on port {port} within {timeout}s") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


async def wait_ready(proc: Managed, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            check_alive(proc)
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{proc.name}: {url} not ready within {timeout}s (last: {last})\n{proc.log_tail()}")


def check_alive(proc: Managed) -> None:
    code = proc.popen.poll()
    if code is not None:
        raise RuntimeError(f"{proc.name} exited with code {code}; log {proc.log_path}:\n{proc.log_tail()}")


def start_redis(stack: ExitStack, redis_server: str, cpus: str | None, log_dir: Path) -> tuple[Managed, int]:
    """A private, non-persistent redis-server on a free port, stopped when ``stack`` closes."""
    port = free_port()
    argv = [redis_server, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(log_dir), "--daemonize", "no"]
    proc = spawn("redis", argv, cpus, log_dir)
    stack.callback(proc.stop)
    return proc, port


async def redis_version(port: int) -> str:
    admin = await RedisAdmin.connect(port)
    try:
        _, fields = parse_info(await admin.command("INFO", "server"))
    finally:
        await admin.close()
    return fields.get("redis_version", "?")


# ----------------------------------------------------------------------------- misc


def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN != NaN


def int_list(text: str) -> list[int]:
    """argparse type for a comma list of positive integers."""
    values = [int(part) for part in text.split(",") if part]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers, e.g. 16,64")
    return values


async def run_captured(argv: list[str], timeout: float) -> tuple[int, str]:
    """Runs a short command (stderr into stdout) within `timeout` s: (exit code, output); killed past it."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace").strip()


@asynccontextmanager
async def load_generator(argv: list[str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """The load generator with `-markers`, lines on its stdout, stderr in `log_path`; stopped by pid on exit.

    With -markers it exits only once its stdin closes, after the caller's last read of its /proc entry."""
    with log_path.open("wb") as err_log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err_log
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:  # failure or Ctrl-C: the load generator is ours, stop it by pid
            proc.kill()
            await proc.wait()


def comma_choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """argparse type for a comma list of some of `allowed`."""

    def parse(text: str) -> list[str]:
        values = [part for part in text.split(",") if part]
        if not values or any(v not in allowed for v in values):
            raise argparse.ArgumentTypeError(f"expected a comma list of {', '.join(allowed)}")
        return values

    return parse


def json_number(value: float, digits: int) -> float | None:
    """`value` rounded for a results file; None for NaN or infinity, which JSON cannot hold."""
    return round(value, digits) if math.isfinite(value) else None


def write_results(path: Path, settings: Mapping[str, Any], meta: Mapping[str, Any], levels: list[Any]) -> None:
    """A run's JSON: when, the command, its settings (paths as text), what the harness adds, the levels."""
    doc = {
        "generated": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": display_command(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()},
        **meta,
        "levels": levels,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def command_output(argv: list[str]) -> str:
    """stdout of a short command run in the repository, or "?" if it fails."""
    try:
        done = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?" if done.returncode == 0 else "?"


def display_command() -> str:
    exe = Path(sys.executable)
    with suppress(ValueError):
        exe = exe.relative_to(REPO_ROOT)
    return " ".join([str(exe), *sys.argv])


def terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler."""
    raise SystemExit(128 + signum)  # so the finally blocks stop what we started


def write_go_dtm_config(
    path: Path,
    *,
    redis_port: int,
    http_port: int,
    grpc_port: int,
    jsonrpc_port: int | None = None,
    log_level: str = "warn",
) -> Path:
    """Go DTM's YAML config for a benchmark: its Redis store on loopback, its ports and log level; DTM's
    defaults for the rest. Without `jsonrpc_port` it listens on its default one."""
    lines = [
        f"# Written by bench/{Path(sys.argv[0]).name}: Redis store, ports and log level; DTM's defaults for the rest.",
        "Store:",
        "  Driver: redis",
        f"  Host: {LOOPBACK}",
        f"  Port: {redis_port}",
        f"HttpPort: {http_port}",
        f"GrpcPort: {grpc_port}",
        *([f"JsonRpcPort: {jsonrpc_port}"] if jsonrpc_port is not None else []),
        f"LogLevel: {log_level}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path
