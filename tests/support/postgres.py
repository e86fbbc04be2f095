"""A private PostgreSQL for the Python SDK's tests and the bank-transfer example: this module owns initialising
a throw-away cluster with `initdb` in a temporary directory, starting `postgres` on a free loopback port as a
child of the caller (as the `postgres` user when running as root: the server refuses root), waiting until it
accepts a connection, creating databases, and stopping the server by its pid. Authentication is `trust` for
the superuser `postgres` over TCP; `max_prepared_transactions` is on for XA."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Self

import psycopg
from psycopg import sql

from .processes import tail
from .redis_servers import HOST, START_ATTEMPTS, PortInUse, free_port, retry_on_port_in_use

SUPERUSER = "postgres"
# Debian keeps the server binaries outside PATH.
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
INITDB_TIMEOUT = 60.0
# The data dies with the test run: no fsync, and a small footprint; XA needs prepared transactions.
SERVER_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "shared_buffers=32MB",
    "max_connections=200",
    "max_prepared_transactions=100",
)


class PostgresUnavailable(RuntimeError):
    """`initdb` / `postgres` are not installed on this machine."""


def find_bin_dir() -> Path:
    candidates = sorted(glob.glob(DEBIAN_BIN_GLOB), reverse=True)
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(str(Path(on_path).resolve().parent))
    for directory in candidates:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "postgres").exists():
            return Path(directory)
    raise PostgresUnavailable("initdb and postgres not found (Debian: apt-get install postgresql)")


def run_as_user() -> str | None:
    """The user the server runs as: itself unless root, which the server refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailable("running as root and there is no postgres (or nobody) user to run the server as")


class PostgresServer:
    """A `postgres` child process on 127.0.0.1 with its own cluster; running from construction until `stop()`."""

    port: int

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        self._bin = find_bin_dir()
        self._user = run_as_user()
        self._dir = Path(tempfile.mkdtemp(prefix="fastdtm-postgres-"))
        self._datadir = self._dir / "data"
        self._log_path = self._dir / "postgres.log"
        self._final_log: str | None = None
        self._log: IO[bytes] | None = None
        try:
            if self._user is not None:
                record = pwd.getpwnam(self._user)
                os.chown(self._dir, record.pw_uid, record.pw_gid)
            self._initdb()
            self._process = retry_on_port_in_use(lambda: self._launch(startup_timeout), attempts=START_ATTEMPTS)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{db}"

    def log_text(self) -> str:
        if self._final_log is not None:
            return self._final_log
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def create_database(self, name: str) -> None:
        """Drop `name` if it exists (closing its sessions) and create it empty."""
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def execute(self, db: str, statements: str) -> None:
        """Run a script (several statements, no parameters) in `db`, autocommit."""
        with psycopg.connect(self.dsn(db), autocommit=True, connect_timeout=5) as conn:
            conn.execute(statements.encode())

    def stop(self) -> None:
        """SIGTERM (a "smart" shutdown), a bounded wait, then SIGKILL; then the cluster is deleted."""
        if self._final_log is not None:
            return
        if self._process.poll() is None:
            # SIGINT is the "fast" shutdown: it does not wait for clients (a leaked pool) to disconnect.
            self._process.send_signal(2)
            try:
                self._process.wait(15.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
        self._final_log = self._log_path.read_text(encoding="utf-8", errors="replace")
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _initdb(self) -> None:
        argv = [str(self._bin / "initdb"), "-D", str(self._datadir), "-U", SUPERUSER, "--auth=trust"]
        argv += ["-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=INITDB_TIMEOUT, user=self._user, cwd=self._dir
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb ended with {done.returncode}:\n{tail(done.stdout + done.stderr)}")

    def _launch(self, timeout: float) -> subprocess.Popen[bytes]:
        port = free_port()
        argv = [str(self._bin / "postgres"), "-D", str(self._datadir), "-p", str(port), "-h", HOST]
        argv += ["-k", str(self._dir)]
        for setting in SERVER_SETTINGS:
            argv += ["-c", setting]
        self._log = self._log_path.open("wb")
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, user=self._user, cwd=self._dir
        )
        try:
            _wait_for_connection(process, port, self._log_path, timeout)
        except BaseException:
            process.kill()
            process.wait()
            self._log.close()
            raise
        self.port = port
        return process


def _wait_for_connection(process: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log = log_path.read_text(encoding="utf-8", errors="replace")
            if "Address already in use" in log or "could not create any TCP/IP sockets" in log:
                raise PortInUse(f"port {port} is taken")
            raise RuntimeError(f"postgres on port {port} exited with {process.returncode}; log:\n{tail(log)}")
        with contextlib.suppress(psycopg.OperationalError):
            psycopg.connect(f"postgresql://{SUPERUSER}@{HOST}:{port}/postgres", connect_timeout=1).close()
            return
        if time.monotonic() > deadline:
            log = log_path.read_text(encoding="utf-8", errors="replace")
            raise RuntimeError(f"postgres on port {port} took no connection in {timeout}s; log:\n{tail(log)}")
        time.sleep(0.05)
