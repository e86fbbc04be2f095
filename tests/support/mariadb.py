"""A private MariaDB for the barrier tests: this module owns initialising a throw-away data directory with
`mariadb-install-db`, starting `mariadbd` on a free loopback port as a child of the suite (never the system
service), waiting until it accepts a connection, handing out pymysql connections as root with an empty
password (what dtmcli's sample uses), recreating the two schemas of `mariadb_schema.sql`, and stopping the
server by its pid. It also owns the few SQL readers the tests assert with."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Self

import pymysql
from pymysql.connections import Connection
from pymysql.cursors import Cursor

from .processes import LoggedProcess, tail
from .redis_servers import HOST, START_ATTEMPTS, PortInUse, free_port, retry_on_port_in_use

SCHEMA_PATH = Path(__file__).with_name("mariadb_schema.sql")
#: The balance `mariadb_schema.sql` gives users 1 and 2.
INITIAL_BALANCE = Decimal("1000.00")
# Debian installs the server in /usr/sbin, which a non-root PATH often lacks.
EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin")
# Small InnoDB files keep the data directory at ~25 MB and its creation under two seconds.
INNODB_ARGS = ("--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M")
INSTALL_TIMEOUT = 60.0


class MariaDBUnavailable(RuntimeError):
    """`mariadbd` (or `mariadb-install-db`) is not installed on this machine."""


def find_binary(*names: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), *EXTRA_BIN_DIRS])
    for name in names:
        path = shutil.which(name, path=search)
        if path is not None:
            return path
    raise MariaDBUnavailable(f"none of {', '.join(names)} found (Debian: apt-get install mariadb-server)")


def run_as_args() -> list[str]:
    # mariadbd refuses to run as root unless told to; this suite runs as root in CI.
    return ["--user=root"] if os.geteuid() == 0 else []


class MariaDBServer:
    """A `mariadbd` child process on 127.0.0.1 with its own data directory; running from construction until
    `stop()`. Root has an empty password over TCP."""

    port: int

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        self._server_binary = find_binary("mariadbd", "mysqld")
        install_binary = find_binary("mariadb-install-db", "mysql_install_db")
        self._dir = Path(tempfile.mkdtemp(prefix="fastdtm-mariadb-"))
        self._datadir = self._dir / "data"
        self._final_log: str | None = None
        try:
            self._install(install_binary)
            start = functools.partial(self._launch, startup_timeout)
            self._process = retry_on_port_in_use(start, attempts=START_ATTEMPTS)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    @property
    def pid(self) -> int:
        return self._process.pid

    def log_text(self) -> str:
        return self._final_log if self._final_log is not None else self._process.log_text()

    def connect(self, db: str | None = None) -> Connection[Cursor]:
        """A new connection as root (autocommit off, as dtmcli's barrier expects: it commits itself)."""
        # Bounded reads and writes: a stuck lock must fail the test, not hang it until pytest's timeout.
        return pymysql.connect(
            host=HOST,
            port=self.port,
            user="root",
            password="",
            database=db,
            autocommit=False,
            connect_timeout=5,
            read_timeout=30,
            write_timeout=30,
        )

    def stop(self) -> None:
        """SIGTERM (mariadbd shuts down cleanly), a bounded wait, then SIGKILL; then the data is deleted."""
        if self._final_log is not None:
            return
        self._process.stop(grace=15.0)
        self._final_log = self._process.log_text()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _install(self, binary: str) -> None:
        # `normal` authentication gives root@localhost/127.0.0.1 an empty password instead of unix_socket,
        # so pymysql (TCP only) can log in as the SDK's sample does.
        argv = [binary, "--no-defaults", f"--datadir={self._datadir}", "--auth-root-authentication-method=normal"]
        argv += ["--skip-test-db", "--skip-name-resolve", *INNODB_ARGS, *run_as_args()]
        log_path = self._dir / "install.log"
        with log_path.open("wb") as log:
            # Its own session, so a timeout can end the bootstrap server it spawns along with the script.
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                code = process.wait(INSTALL_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                code = None
        if code != 0:
            output = tail(log_path.read_text(encoding="utf-8", errors="replace"))
            raise RuntimeError(f"{' '.join(argv)} ended with {code} within {INSTALL_TIMEOUT}s; output:\n{output}")

    def _launch(self, timeout: float) -> LoggedProcess:
        port = free_port()
        argv = [self._server_binary, "--no-defaults", f"--datadir={self._datadir}", f"--port={port}"]
        argv += [f"--bind-address={HOST}", f"--socket={self._dir / 'sock'}", f"--pid-file={self._dir / 'pid'}"]
        argv += [f"--tmpdir={self._dir}", "--skip-log-bin", "--skip-name-resolve", *INNODB_ARGS, *run_as_args()]
        # No fsync per commit: the data dies with the test run anyway, and commits get much faster.
        argv += ["--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0"]
        process = LoggedProcess(argv, log_path=self._dir / f"mariadbd-{port}.log", cwd=self._dir)
        try:
            _wait_for_connection(process, port, timeout)
        except BaseException:
            process.stop(grace=5.0)
            raise
        self.port = port
        return process


def _wait_for_connection(process: LoggedProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not process.alive():
            log = process.log_text()
            if "Address already in use" in log:
                raise PortInUse(f"port {port} is taken")
            raise RuntimeError(f"mariadbd on port {port} exited with {process.returncode}; log:\n{tail(log)}")
        with contextlib.suppress(pymysql.err.OperationalError):
            pymysql.connect(host=HOST, port=port, user="root", password="", connect_timeout=1).close()
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"mariadbd on port {port} took no connection in {timeout}s; log:\n{process.log_tail()}")
        time.sleep(0.05)


def schema_statements(text: str | None = None) -> list[str]:
    """The statements of `mariadb_schema.sql`: comment lines dropped, split where a line ends with ';'."""
    source = SCHEMA_PATH.read_text(encoding="utf-8") if text is None else text
    statements: list[str] = []
    current: list[str] = []
    for line in source.splitlines():
        if not line.strip() or line.lstrip().startswith("--"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().removesuffix(";"))
            current = []
    if current:
        raise ValueError(f"schema ends inside a statement: {' '.join(current)[:200]}")
    return statements


def reset_schemas(server: MariaDBServer) -> None:
    """Drop and recreate `dtm_barrier` and `dtm_busi` with users 1 and 2 at `INITIAL_BALANCE`."""
    conn = server.connect()
    try:
        with conn.cursor() as cursor:
            # A connection left open by a previous test would block DROP DATABASE on its metadata lock.
            cursor.execute("SET SESSION lock_wait_timeout = 10")
            for statement in schema_statements():
                cursor.execute(statement)
        conn.commit()
    finally:
        conn.close()


Balances = dict[int, tuple[Decimal, Decimal]]


def balances(server: MariaDBServer) -> Balances:
    """user_id -> (balance, trading_balance)."""
    conn = server.connect()
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT user_id, balance, trading_balance FROM dtm_busi.user_account ORDER BY user_id")
            return {int(user): (Decimal(balance), Decimal(trading)) for user, balance, trading in cursor.fetchall()}
    finally:
        conn.close()


BarrierRow = tuple[str, str, str, str, str]


def barrier_rows(server: MariaDBServer, gid: str) -> list[BarrierRow]:
    """(trans_type, branch_id, op, barrier_id, reason) of every barrier row of `gid`, in insertion order."""
    conn = server.connect()
    try:
        with conn.cursor() as cursor:
            columns = "trans_type, branch_id, op, barrier_id, reason"
            cursor.execute(f"SELECT {columns} FROM dtm_barrier.barrier WHERE gid = %s ORDER BY id", (gid,))
            return [(str(a), str(b), str(c), str(d), str(e)) for a, b, c, d, e in cursor.fetchall()]
    finally:
        conn.close()
