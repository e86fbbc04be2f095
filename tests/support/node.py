"""The fastdtm server under test as a real process: this module owns launching `python -m fastdtm serve` on a
free loopback port with fast test timings, waiting until `/api/ready` answers, killing or stopping it, and
the two HTTP helpers end-to-end tests use to watch a transaction (`query`, `wait_status`)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx

from .processes import LoggedProcess, tail
from .redis_servers import HOST, START_ATTEMPTS, PortInUse, free_ports, retry_on_port_in_use

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_COMMAND = (sys.executable, "-m", "fastdtm")
# Sub-second timings so recovery paths finish within a test; any of them given in extra_args wins.
DEFAULT_TIMINGS: tuple[tuple[str, str], ...] = (
    ("--retry-interval", "0.5"),
    ("--timeout-to-fail", "3"),
    ("--request-timeout", "3"),
    ("--cron-interval", "0.1"),
    ("--lease-ttl", "1.5"),
    ("--node-heartbeat", "0.3"),
    # Holds last the retry interval (0.5 s): the default skew (0.5 s) would leave a round no time to call.
    ("--max-clock-skew", "0.1"),
    # A test node stopped while its rounds wait on a hanging branch must not hold the test up for the default 10 s.
    ("--drain-timeout", "2"),
)


def with_default_timings(extra_args: Sequence[str]) -> list[str]:
    given = {arg.split("=", 1)[0] for arg in extra_args if arg.startswith("--")}
    defaults = [item for flag, value in DEFAULT_TIMINGS if flag not in given for item in (flag, value)]
    return [*defaults, *extra_args]


def node_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    # A developer's own FASTDTM_* settings must not change what the tests see.
    env = {name: value for name, value in os.environ.items() if not name.startswith("FASTDTM_")}
    # The node runs from its own directory, and fastdtm is not installed into the venv.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides or {})
    return env


class FastdtmNode:
    """One `fastdtm serve` process; ready (answering /api/ready) from construction until `stop()`/`kill()`.

    Its gRPC API listens on a free port of its own (`grpc`) unless `extra_args` name `--grpc-port`."""

    port: int
    #: 0 when the node serves no gRPC.
    grpc_port: int

    def __init__(
        self,
        store_url: str,
        extra_args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 20.0,
        command: Sequence[str] = DEFAULT_COMMAND,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """`tls`: the node serves HTTPS (its `--ssl-*` flags are in `extra_args`); this client context, which
        trusts its certificate (and carries a client certificate if the node asks for one), waits for it."""
        self._tls = tls
        self._owns_dir = workdir is None
        self._dir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="fastdtm-node-"))
        self._final_log: str | None = None
        self.store_url = store_url
        head = [*command, "serve", "--store", store_url, "--host", HOST]
        rest = with_default_timings(extra_args)
        start = functools.partial(self._launch, port, head, rest, node_env(env), startup_timeout)
        try:
            self._process = retry_on_port_in_use(start, attempts=START_ATTEMPTS if port is None else 1)
        except BaseException:
            self._remove_dir()
            raise

    @property
    def base(self) -> str:
        return f"{'https' if self._tls else 'http'}://{HOST}:{self.port}"

    @property
    def dtm(self) -> str:
        """The server URL the DTM SDKs take."""
        return f"{self.base}/api/dtmsvr"

    @property
    def grpc(self) -> str:
        """The gRPC server address the DTM SDKs take (host:port)."""
        if not self.grpc_port:
            raise RuntimeError("this node serves no gRPC (--grpc-port 0)")
        return f"{HOST}:{self.grpc_port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def alive(self) -> bool:
        return self._process.alive()

    def log_text(self) -> str:
        return self._final_log if self._final_log is not None else self._process.log_text()

    def kill(self) -> None:
        """SIGKILL: the node dies mid-flight, as in a crash."""
        self._process.kill()
        self._finish()

    def stop(self) -> None:
        """SIGTERM, up to 10 s for a graceful shutdown, then SIGKILL."""
        self._process.stop(grace=10.0)
        self._finish()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _launch(
        self, port: int | None, head: list[str], rest: list[str], env: dict[str, str], timeout: float
    ) -> LoggedProcess:
        grpc_port = _flag_value(rest, "--grpc-port")
        if port is None or grpc_port is None:
            # Chosen together (two free_port() calls may give the same one), and never the port already given.
            spare = [p for p in free_ports(3) if p != port and str(p) != grpc_port]
            if port is None:
                port = spare.pop(0)
            if grpc_port is None:
                grpc_port = str(spare.pop(0))
                rest = [*rest, "--grpc-port", grpc_port]
        argv = [*head, "--port", str(port), *rest]
        process = LoggedProcess(argv, log_path=self._dir / f"node-{port}.log", cwd=self._dir, env=env)
        try:
            _wait_ready(process, f"{'https' if self._tls else 'http'}://{HOST}:{port}", timeout, self._tls)
        except BaseException:
            process.stop(grace=5.0)
            raise
        self.port = port
        self.grpc_port = int(grpc_port)
        return process

    def _finish(self) -> None:
        if self._final_log is None:
            self._final_log = self._process.log_text()
            self._remove_dir()

    def _remove_dir(self) -> None:
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)


class NodeFactory:
    """Builds nodes for one test and stops every one of them at teardown, whatever happened."""

    def __init__(self, workdir: Callable[[], Path] | None = None, command: Sequence[str] = DEFAULT_COMMAND) -> None:
        self._workdir = workdir
        self._command = tuple(command)
        self.nodes: list[FastdtmNode] = []

    def __call__(
        self, store_url: str, *extra_args: str, env: Mapping[str, str] | None = None, port: int | None = None
    ) -> FastdtmNode:
        workdir = self._workdir() if self._workdir is not None else None
        node = FastdtmNode(store_url, extra_args, env=env, port=port, workdir=workdir, command=self._command)
        self.nodes.append(node)
        return node

    def stop_all(self) -> None:
        errors: list[Exception] = []
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception as exc:  # one stuck node must not leave the others running
                errors.append(exc)
        if errors:
            raise errors[0]


def query(node_or_base: FastdtmNode | str, gid: str) -> dict[str, Any]:
    """GET /api/dtmsvr/query?gid=...: `{"transaction": {...} | None, "branches": [...]}`."""
    with httpx.Client(timeout=5.0) as client:
        response = client.get(f"{_base(node_or_base)}/api/dtmsvr/query", params={"gid": gid})
    if response.status_code != 200:
        raise AssertionError(f"query {gid}: HTTP {response.status_code} {response.text}")
    return _object(response)


def wait_status(
    node_or_base: FastdtmNode | str, gid: str, statuses: Collection[str], timeout: float = 10.0
) -> dict[str, Any]:
    """Poll /query until the transaction's status is one of `statuses`; return that reply."""
    url = f"{_base(node_or_base)}/api/dtmsvr/query"
    deadline = time.monotonic() + timeout
    last: object = None
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = client.get(url, params={"gid": gid})
                last = f"HTTP {response.status_code} {response.text}"
                reply = _object(response)
                if _status_of(reply) in statuses:
                    return reply
            time.sleep(0.05)
    raise AssertionError(f"{gid}: status not in {sorted(statuses)} within {timeout}s; last reply: {last}")


def _status_of(reply: dict[str, Any]) -> object:
    transaction = reply.get("transaction")
    return transaction.get("status") if isinstance(transaction, dict) else None


def _object(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {response.text}")
    return body


def _base(node_or_base: FastdtmNode | str) -> str:
    return node_or_base.base if isinstance(node_or_base, FastdtmNode) else node_or_base.rstrip("/")


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.partition("=")[2]
    return None


def _wait_ready(process: LoggedProcess, base: str, timeout: float, tls: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, verify=tls or True) as client:
        while True:
            if not process.alive():
                log = process.log_text()
                if "address already in use" in log.lower() or "cannot listen for grpc" in log.lower():
                    raise PortInUse(f"{base} or its gRPC port is taken")
                raise RuntimeError(f"fastdtm node {base} exited with {process.returncode}; log tail:\n{tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{base}/api/ready").status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"fastdtm node {base} not ready in {timeout}s; log tail:\n{process.log_tail()}")
            time.sleep(0.05)
