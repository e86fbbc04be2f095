"""Real Redis for the test suite: this module owns starting `redis-server` processes on free loopback ports
(one standalone server, or a 3-master Redis Cluster formed without `redis-cli`), waiting until they answer,
flushing them between tests and stopping them. It also wraps servers the user points at with
`--redis-url`/`--redis-cluster-url` behind the same small interface, so fixtures need not care which."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
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


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports. Two `free_port()` calls can return the same port (each socket is closed
    before the next is bound; CI once gave a node the same HTTP and gRPC port): here every socket stays bound
    until all are chosen."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


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
        self._earlier_logs: list[str] = []
        self._paused = False
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

    @property
    def address(self) -> Address:
        return HOST, self.port

    def alive(self) -> bool:
        return self._final_log is None and self._process.alive()

    @property
    def paused(self) -> bool:
        return self._paused

    def log_text(self) -> str:
        current = self._final_log if self._final_log is not None else self._process.log_text()
        return "".join([*self._earlier_logs, current])

    def flush(self) -> None:
        flush(self.url)

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it had not replicated or saved; `restart()` brings it back."""
        self.resume()
        self._process.kill()

    def pause(self) -> None:
        """SIGSTOP: the server still accepts TCP connections (the kernel does) but answers nothing."""
        if self._process.alive() and not self._paused:
            os.kill(self._process.pid, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._process.alive():
                os.kill(self._process.pid, signal.SIGCONT)

    def restart(self, timeout: float = 10.0, *, wait: bool = True) -> None:
        """Starts a killed server again on the same port and directory (a cluster node keeps its nodes.conf);
        with persistence off it comes back empty, as after a crash without an AOF. `wait=False` returns once
        the process runs, before it answers (while it may still be loading a dump)."""
        if self._process.alive():
            raise RuntimeError(f"redis-server on port {self.port} is still running")
        self._earlier_logs.append(self._process.log_text())
        self._process = self._launch(self.port, timeout, attempt=len(self._earlier_logs), wait=wait)

    def stop(self) -> None:
        if self._final_log is not None:
            return
        self.resume()
        self._process.stop(grace=5.0)
        self._final_log = self._process.log_text()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _listen_args(self, port: int) -> list[str]:
        """How the server listens on `port` (a TLS server, tests/support/tls.py, overrides this and `_client`)."""
        return ["--port", str(port)]

    def _client(self, host: str, port: int) -> redis.Redis:
        """A redis-py client of this server, for the readiness check."""
        return _client(host, port)

    def _launch(self, port: int | None, timeout: float, attempt: int = 0, wait: bool = True) -> LoggedProcess:
        port = free_port() if port is None else port
        argv = [redis_server_binary(), *self._listen_args(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self._dir), "--logfile", "", *self._extra_args]
        process = LoggedProcess(argv, log_path=self._dir / f"redis-{port}.{attempt}.log", cwd=self._dir)
        try:
            if wait:
                _wait_for_ping(process, port, timeout, self._client)
        except BaseException:
            process.stop(grace=2.0)
            raise
        self.port = port
        return process


class RedisCluster:
    """`masters` (3) `redis-server --cluster-enabled yes` masters with all 16384 slots, each with `replicas`
    replicas (none by default), and the faults production sees: failover, kill -9, restart, SIGSTOP.

    Faults are addressed by a node's address; `wait_healthy()` waits until the live nodes agree on a map
    that covers every slot and every live replica is in sync, which is what a test waits for after a fault.
    """

    def __init__(self, masters: int = 3, *, replicas: int = 0, formed: bool = True, startup_timeout: float = 20.0):
        """`formed=False` starts the processes only: a cluster still being set up until `form()`."""
        self._dir = Path(tempfile.mkdtemp(prefix="fastdtm-cluster-"))
        self._nodes: list[RedisServer] = []
        self._bus_ports: list[int] = []
        self._masters = masters
        try:
            for index in range(masters * (1 + replicas)):
                retry_on_port_in_use(functools.partial(self._start_node, index))
            if formed:
                self.form(timeout=startup_timeout)
        except BaseException:
            self.stop()
            raise

    def form(self, *, skip_slots: int = 0, timeout: float = 20.0) -> None:
        """Assigns the slots, introduces the nodes, makes the replicas follow their masters, and waits until
        healthy; `skip_slots` leaves the last ones of the last master unassigned (and does not wait)."""
        masters = self._masters
        _form_cluster(self.startup_nodes[:masters], self._bus_ports[:masters], self.startup_nodes, skip_slots)
        for index in range(masters, len(self._nodes)):
            _meet(self.startup_nodes[0], self.startup_nodes[index], self._bus_ports[index])
        if len(self._nodes) > masters:
            _wait_known(self.startup_nodes, timeout)
            for index in range(masters, len(self._nodes)):
                _replicate(self.startup_nodes[index], self.startup_nodes[index % masters])
        if not skip_slots:
            self.wait_healthy(timeout)

    def add_slots(self, first: int, last: int) -> None:
        """Assigns slots first..last to the last master (the ones `form(skip_slots=...)` left out)."""
        with _client(*self.startup_nodes[self._masters - 1]) as client:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)

    @property
    def url(self) -> str:
        return CLUSTER_SCHEME + ",".join(f"{host}:{port}" for host, port in self.startup_nodes)

    @property
    def startup_nodes(self) -> list[Address]:
        return [(HOST, node.port) for node in self._nodes]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self._nodes]

    def server(self, address: Address) -> RedisServer:
        return next(node for node in self._nodes if node.address == address)

    def live_nodes(self) -> list[Address]:
        return [node.address for node in self._nodes if node.alive() and not node.paused]

    def masters(self) -> list[Address]:
        return cluster_masters(self.live_nodes())

    def replicas_of(self, master: Address) -> list[Address]:
        """The live replicas of `master`, as a live node sees them."""
        return [address for address, of in self.topology().items() if of == master]

    def topology(self) -> dict[Address, Address | None]:
        """Every node the cluster knows and is not failing: its master's address, or None for a master."""
        with _client(*self.live_nodes()[0]) as client:
            return _topology(str(client.execute_command("CLUSTER", "NODES")))

    def master_of(self, key: str) -> Address:
        with _client(*self.live_nodes()[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for first, last, master, *_ in _slot_ranges(self.live_nodes()[0]):
            if first <= slot <= last:
                return master
        raise LookupError(f"no master serves slot {slot}")

    def failover(self, master: Address, timeout: float = 20.0) -> Address:
        """A manual `CLUSTER FAILOVER` (the graceful kind an operator runs): returns the promoted replica."""
        replica = self.replicas_of(master)[0]
        with _client(*replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        self.wait_promoted(master, replica, timeout)
        return replica

    def kill(self, address: Address) -> None:
        self.server(address).kill()

    def kill_master(self, master: Address, timeout: float = 20.0) -> Address:
        """`kill -9` of a master, then waits until the cluster promotes its replica: returns the new master.
        The cluster needs node-timeout (2 s here) to mark it failed before a replica may take over."""
        replica = self.replicas_of(master)[0]
        self.kill(master)
        self.wait_promoted(master, replica, timeout)
        return replica

    def restart(self, address: Address, timeout: float = 20.0) -> None:
        """Starts a killed node again (empty: no persistence) and waits until it is part of a healthy cluster."""
        self.server(address).restart()
        deadline = time.monotonic() + timeout
        # The others still flag it `fail` for a moment: healthy only once every live node has seen it back.
        while not all(address in self._topology_of(node) for node in self.live_nodes()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not rejoin the cluster in {timeout}s")
            time.sleep(0.1)
        self.wait_healthy(max(0.1, deadline - time.monotonic()))

    def pause(self, address: Address) -> None:
        self.server(address).pause()

    def resume(self, address: Address) -> None:
        self.server(address).resume()

    def heal(self, timeout: float = 30.0) -> None:
        """Resumes paused nodes, restarts dead ones, and waits until the cluster is healthy again."""
        for node in self._nodes:
            node.resume()
        for node in self._nodes:
            if not node.alive():
                node.restart()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until every live node says `cluster_state:ok` with the same full map and the same roles, and every
        live replica's link to its master is up (a failover right after start would find no replica in sync)."""
        deadline = time.monotonic() + timeout
        views: list[object] = []
        while time.monotonic() < deadline:
            live = self.live_nodes()
            with contextlib.suppress(redis.RedisError):
                views = [_node_view(host, port, len(self._nodes)) for host, port in live]
                # Roles too: a replica that was just told to follow a master knows it before the others do.
                roles = [self._topology_of(node) for node in live]
                agreed = all(view == views[0] for view in views) and all(role == roles[0] for role in roles)
                if None not in views and agreed and _replicas_in_sync(live):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"cluster on {self.startup_nodes} not healthy in {timeout}s; last views: {views}")

    def flush(self) -> None:
        # Every node that is a master by its own account: the others' views may still flag one `fail` for a
        # moment after it was frozen, and a master left out would keep the last test's keys.
        for address in self.live_nodes():
            with _client(*address) as client:
                if client.info("replication")["role"] == "master":
                    client.flushall()

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

    def wait_promoted(self, old: Address, new: Address, timeout: float = 20.0) -> None:
        """Until every live node sees `new` as a master and `old` (if alive) as a replica, and all is healthy."""
        deadline = time.monotonic() + timeout
        old_alive = self.server(old).alive()
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if all(self._promoted_in_view_of(node, old, new, old_alive) for node in self.live_nodes()):
                    self.wait_healthy(max(0.1, deadline - time.monotonic()))
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{new} did not take over from {old} in {timeout}s; topology {self.topology()}")

    @staticmethod
    def _topology_of(node: Address) -> dict[Address, Address | None]:
        with contextlib.suppress(redis.RedisError), _client(*node) as client:
            return _topology(str(client.execute_command("CLUSTER", "NODES")))
        return {}

    @classmethod
    def _promoted_in_view_of(cls, node: Address, old: Address, new: Address, old_alive: bool) -> bool:
        topology = cls._topology_of(node)
        promoted = new in topology and topology[new] is None
        return promoted and (topology.get(old) == new or not old_alive)

    def _start_node(self, index: int) -> None:
        config = self._dir / f"nodes-{index}.conf"
        # A failed attempt may have written this file with other ports; a new attempt must start blank.
        config.unlink(missing_ok=True)
        # An explicit bus port (instead of port + 10000) lets both ports come from the kernel's free list.
        bus_port = free_port()
        args = ["--cluster-enabled", "yes", "--cluster-config-file", str(config), "--cluster-node-timeout", "2000"]
        args += ["--cluster-port", str(bus_port), "--cluster-announce-ip", HOST]
        # A replica whose master died must take over however long ago it last heard from it.
        args += ["--cluster-replica-validity-factor", "0"]
        # A replica's first sync would otherwise wait 5 s for more replicas to share the transfer.
        args += ["--repl-diskless-sync-delay", "0"]
        self._nodes.append(RedisServer([*args, *self._node_args(index)], port=free_port()))
        self._bus_ports.append(bus_port)

    def _node_args(self, index: int) -> list[str]:
        """More arguments of node `index`, picked anew on each start attempt (a TLS cluster's, tests/support/tls.py)."""
        return []


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


def _wait_for_ping(
    process: LoggedProcess, port: int, timeout: float, connect: Callable[[str, int], redis.Redis] = _client
) -> None:
    deadline = time.monotonic() + timeout
    with connect(HOST, port) as client:
        while True:
            if not process.alive():
                log = process.log_text()
                if "Address already in use" in log:
                    raise PortInUse(f"port {port} or its bus port is taken")
                raise RuntimeError(f"redis-server on port {port} exited with {process.returncode}; log:\n{log}")
            try:
                if client.ping():
                    return
            except redis.AuthenticationError:
                return  # it answers, and wants a password (`--requirepass`)
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                log = process.log_text()
                raise RuntimeError(f"redis-server on port {port} gave no PING reply in {timeout}s; log:\n{log}")
            time.sleep(0.05)


def _form_cluster(
    masters: Sequence[Address], bus_ports: Sequence[int], everyone: Sequence[Address], skip_slots: int = 0
) -> None:
    count = len(masters)
    for index, (host, port) in enumerate(masters):
        with _client(host, port) as client:
            first, last = index * CLUSTER_SLOTS // count, (index + 1) * CLUSTER_SLOTS // count - 1
            if index == count - 1:
                last -= skip_slots
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
    # Distinct epochs up front (as `redis-cli --cluster create` does) spare the epoch-collision round.
    for index, (host, port) in enumerate(everyone):
        with _client(host, port) as client:
            client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
    for other, bus_port in zip(masters[1:], bus_ports[1:], strict=True):
        _meet(masters[0], other, bus_port)


def _meet(via: Address, other: Address, bus_port: int) -> None:
    with _client(*via) as client:
        client.execute_command("CLUSTER", "MEET", other[0], other[1], bus_port)


def _wait_known(nodes: Sequence[Address], timeout: float) -> None:
    """Until every node knows every other one: CLUSTER REPLICATE refuses a master it has not met yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if all(_known_nodes(node) == len(nodes) for node in nodes):
                return
        time.sleep(0.05)
    raise RuntimeError(f"cluster nodes {list(nodes)} did not all meet in {timeout}s")


def _known_nodes(node: Address) -> int:
    with _client(*node) as client:
        text = str(client.execute_command("CLUSTER", "NODES"))
    return sum(1 for line in text.splitlines() if line and "handshake" not in line.split()[2])


def _replicate(replica: Address, master: Address) -> None:
    with _client(*master) as client:
        master_id = str(client.execute_command("CLUSTER", "MYID"))
    with _client(*replica) as client:
        client.execute_command("CLUSTER", "REPLICATE", master_id)


def _replicas_in_sync(nodes: Sequence[Address]) -> bool:
    """Every replica's link is up, seen from both ends: the replica's `master_link_status`, and its master
    counting it `online` (only then does the master's WAIT count it: a replica that has just finished its
    full sync says `up` a moment before its master moves it from `wait_bgsave`/`send_bulk` to `online`)."""
    following: dict[Address, int] = {}
    online: dict[Address, int] = {}
    for node in nodes:
        with _client(*node) as client:
            info = client.info("replication")
        if info.get("role") == "slave":
            if info.get("master_link_status") != "up":
                return False
            master = (str(info["master_host"]), int(info["master_port"]))
            following[master] = following.get(master, 0) + 1
        else:
            replicas = [value for key, value in info.items() if key.startswith("slave") and isinstance(value, dict)]
            online[node] = sum(replica.get("state") == "online" for replica in replicas)
    return all(online.get(master, 0) >= count for master, count in following.items())


def _topology(text: str) -> dict[Address, Address | None]:
    """From CLUSTER NODES: each node that is not failing, with its master's address (None for a master)."""
    by_id: dict[str, Address] = {}
    rows: list[tuple[Address, set[str], str]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        address = _address(fields[1].split("@", 1)[0])
        by_id[fields[0]] = address
        rows.append((address, set(fields[2].split(",")), fields[3]))
    return {
        address: (by_id.get(master) if "slave" in flags else None)
        for address, flags, master in rows
        if not flags & {"fail", "fail?", "handshake", "noaddr"}
    }


def _slot_ranges(node: Address) -> list[tuple[int, int, Address]]:
    with _client(*node) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    return [(int(r[0]), int(r[1]), (HOST, int(r[2][1]))) for r in ranges]


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
