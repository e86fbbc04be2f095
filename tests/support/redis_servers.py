"""Real Redis for the test suite: this module owns starting `redis-server` processes on free loopback ports
(one standalone server, or a 3-master Redis Cluster formed without `redis-cli`), waiting until they answer,
flushing them between tests and stopping them. It also wraps servers the user points at with
`--redis-url`/`--redis-cluster-url` behind the same small interface, so fixtures need not care which."""

from __future__ import annotations

import contextlib
import functools
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, Self, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .processes import LoggedProcess

HOST = "127.0.0.1"
CLUSTER_SCHEME = "redis+cluster://"
CLUSTER_SLOTS = 16384
START_ATTEMPTS = 3

Address = tuple[str, int]
T = TypeVar("T")


class RedisUnavailable(RuntimeError):
    """`redis-server` is not installed on this machine."""


class PortInUse(RuntimeError):
    """The port picked for a server was taken between picking and binding; pick another."""


class RedisTarget(Protocol):
    """What a test needs of a Redis backend, whether this suite started it or not."""

    @property
    def url(self) -> str: ...

    def flush(self) -> None: ...


class ClusterTarget(RedisTarget, Protocol):
    @property
    def startup_nodes(self) -> list[Address]: ...

    def masters(self) -> list[Address]: ...


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RedisUnavailable("redis-server is not on PATH (Debian: apt-get install redis-server)")
    return path


def retry_on_port_in_use(start: Callable[[], T], attempts: int = START_ATTEMPTS) -> T:
    for _ in range(attempts - 1):
        with contextlib.suppress(PortInUse):
            return start()
    return start()


class RedisServer:
    """A `redis-server` child process on 127.0.0.1; running from construction until `stop()`."""

    port: int

    def __init__(self, extra_args: Sequence[str] = (), *, port: int | None = None, startup_timeout: float = 10.0):
        self._dir = Path(tempfile.mkdtemp(prefix="fastdtm-redis-"))
        self._extra_args = tuple(extra_args)
        self._final_log: str | None = None
        start = functools.partial(self._launch, port, startup_timeout)
        try:
            self._process = retry_on_port_in_use(start, attempts=START_ATTEMPTS if port is None else 1)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def pid(self) -> int:
        return self._process.pid

    def log_text(self) -> str:
        return self._final_log if self._final_log is not None else self._process.log_text()

    def flush(self) -> None:
        flush(self.url)

    def stop(self) -> None:
        if self._final_log is not None:
            return
        self._process.stop(grace=5.0)
        self._final_log = self._process.log_text()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _launch(self, port: int | None, timeout: float) -> LoggedProcess:
        port = free_port() if port is None else port
        argv = [redis_server_binary(), "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self._dir), "--logfile", "", *self._extra_args]
        process = LoggedProcess(argv, log_path=self._dir / f"redis-{port}.log", cwd=self._dir)
        try:
            _wait_for_ping(process, port, timeout)
        except BaseException:
            process.stop(grace=2.0)
            raise
        self.port = port
        return process


class RedisCluster:
    """Three (by default) `redis-server --cluster-enabled yes` masters with all 16384 slots, no replicas."""

    def __init__(self, masters: int = 3, *, startup_timeout: float = 20.0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="fastdtm-cluster-"))
        self._nodes: list[RedisServer] = []
        self._bus_ports: list[int] = []
        try:
            for index in range(masters):
                retry_on_port_in_use(functools.partial(self._start_node, index))
            _form_cluster(self.startup_nodes, self._bus_ports)
            _wait_cluster_ok(self.startup_nodes, startup_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return CLUSTER_SCHEME + ",".join(f"{host}:{port}" for host, port in self.startup_nodes)

    @property
    def startup_nodes(self) -> list[Address]:
        return [(HOST, node.port) for node in self._nodes]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self._nodes]

    def masters(self) -> list[Address]:
        return cluster_masters(self.startup_nodes)

    def flush(self) -> None:
        for host, port in self.masters():
            _flushall(host, port)

    def log_text(self) -> str:
        return "\n".join(f"--- node {node.port} ---\n{node.log_text()}" for node in self._nodes)

    def stop(self) -> None:
        for node in self._nodes:
            node.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _start_node(self, index: int) -> None:
        config = self._dir / f"nodes-{index}.conf"
        # A failed attempt may have written this file with other ports; a new attempt must start blank.
        config.unlink(missing_ok=True)
        # An explicit bus port (instead of port + 10000) lets both ports come from the kernel's free list.
        bus_port = free_port()
        args = ["--cluster-enabled", "yes", "--cluster-config-file", str(config), "--cluster-node-timeout", "2000"]
        args += ["--cluster-port", str(bus_port), "--cluster-announce-ip", HOST]
        self._nodes.append(RedisServer(args, port=free_port()))
        self._bus_ports.append(bus_port)


class ExternalRedis:
    """A standalone server this suite did not start (`--redis-url`): flushed, never stopped."""

    def __init__(self, url: str) -> None:
        self.url = url

    def flush(self) -> None:
        flush(self.url)


class ExternalRedisCluster:
    """A cluster this suite did not start (`--redis-cluster-url`): flushed, never stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.startup_nodes = parse_cluster_url(url)

    def masters(self) -> list[Address]:
        return cluster_masters(self.startup_nodes)

    def flush(self) -> None:
        flush(self.url)


def flush(url: str) -> None:
    """Empty the backend a store URL names: FLUSHALL on every cluster master, or FLUSHDB on the URL's db."""
    if url.startswith(CLUSTER_SCHEME):
        for host, port in cluster_masters(parse_cluster_url(url)):
            _flushall(host, port)
        return
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.flushdb()


def parse_cluster_url(url: str) -> list[Address]:
    if not url.startswith(CLUSTER_SCHEME):
        raise ValueError(f"not a {CLUSTER_SCHEME} URL: {url!r}")
    nodes = url.removeprefix(CLUSTER_SCHEME).split("/", 1)[0]
    return [_address(item) for item in nodes.split(",") if item]


def cluster_masters(startup_nodes: Sequence[Address]) -> list[Address]:
    """The masters that serve slots, as the first reachable startup node sees them."""
    host, port = startup_nodes[0]
    with _client(host, port) as client:
        view = _cluster_nodes_view(str(client.execute_command("CLUSTER", "NODES")))
    return sorted(_address(address) for address, _ in view)


def _flushall(host: str, port: int) -> None:
    with _client(host, port) as client:
        client.flushall()


def _client(host: str, port: int) -> redis.Redis:
    # No retries: these loopback calls either work or the caller's own loop retries with a deadline.
    return redis.Redis(
        host=host,
        port=port,
        decode_responses=True,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(NoBackoff(), 0),
    )


def _address(text: str) -> Address:
    host, _, port = text.strip().rpartition(":")
    return host, int(port)


def _wait_for_ping(process: LoggedProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with _client(HOST, port) as client:
        while True:
            if not process.alive():
                log = process.log_text()
                if "Address already in use" in log:
                    raise PortInUse(f"port {port} or its bus port is taken")
                raise RuntimeError(f"redis-server on port {port} exited with {process.returncode}; log:\n{log}")
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            if time.monotonic() > deadline:
                log = process.log_text()
                raise RuntimeError(f"redis-server on port {port} gave no PING reply in {timeout}s; log:\n{log}")
            time.sleep(0.05)


def _form_cluster(nodes: Sequence[Address], bus_ports: Sequence[int]) -> None:
    count = len(nodes)
    for index, (host, port) in enumerate(nodes):
        with _client(host, port) as client:
            first, last = index * CLUSTER_SLOTS // count, (index + 1) * CLUSTER_SLOTS // count - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            # Distinct epochs up front (as `redis-cli --cluster create` does) spare the epoch-collision round.
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
    host, port = nodes[0]
    with _client(host, port) as client:
        for (other_host, other_port), bus_port in zip(nodes[1:], bus_ports[1:], strict=True):
            client.execute_command("CLUSTER", "MEET", other_host, other_port, bus_port)


def _wait_cluster_ok(nodes: Sequence[Address], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    views: list[object] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            views = [_node_view(host, port, len(nodes)) for host, port in nodes]
            if None not in views and all(view == views[0] for view in views):
                return
        time.sleep(0.1)
    raise RuntimeError(f"cluster on {list(nodes)} did not converge in {timeout}s; last views: {views}")


def _node_view(host: str, port: int, expected_nodes: int) -> frozenset[tuple[str, tuple[str, ...]]] | None:
    """This node's picture of the masters and their slots, or None while it is not `cluster_state:ok`."""
    with _client(host, port) as client:
        info = str(client.execute_command("CLUSTER", "INFO"))
        if "cluster_state:ok" not in info or f"cluster_known_nodes:{expected_nodes}" not in info:
            return None
        view = _cluster_nodes_view(str(client.execute_command("CLUSTER", "NODES")))
    covered = sum(_slot_count(slots) for _, slots in view)
    return view if covered == CLUSTER_SLOTS else None


def _cluster_nodes_view(text: str) -> frozenset[tuple[str, tuple[str, ...]]]:
    """(host:port, slot ranges) of each healthy master with slots, from CLUSTER NODES output."""
    view: set[tuple[str, tuple[str, ...]]] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = set(fields[2].split(","))
        slots = tuple(sorted(item for item in fields[8:] if not item.startswith("[")))
        if "master" in flags and not flags & {"fail", "fail?", "handshake", "noaddr"} and slots:
            view.add((fields[1].split("@", 1)[0], slots))
    return frozenset(view)


def _slot_count(ranges: Sequence[str]) -> int:
    total = 0
    for item in ranges:
        first, _, last = item.partition("-")
        total += int(last or first) - int(first) + 1
    return total
