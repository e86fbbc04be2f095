"""Suite-wide fixtures: this module owns which Redis the tests run against (a `redis-server` the suite starts
on first use, or one named by `--redis-url` / `--redis-cluster-url`), the `store_url` parametrization over
standalone and cluster, the branch server `busi`, and the fastdtm nodes, and it guarantees that every process
a test starts is stopped at teardown. Without `redis-server` a test is skipped locally and fails under CI."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

from tests.support import compiled
from tests.support.busi import BusiServer
from tests.support.mariadb import MariaDBServer, MariaDBUnavailable, reset_schemas
from tests.support.node import FastdtmNode, NodeFactory
from tests.support.processes import tail
from tests.support.redis_servers import (
    ClusterTarget,
    ExternalRedis,
    ExternalRedisCluster,
    RedisCluster,
    RedisServer,
    RedisTarget,
    RedisUnavailable,
)
from tests.support.tls import OpensslUnavailable, Pki, make_pki

T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastdtm")
    group.addoption("--redis-url", default=None, help="use this standalone Redis instead of starting one")
    group.addoption(
        "--redis-cluster-url",
        default=None,
        help="use this Redis Cluster (redis+cluster://host:port,...) instead of starting one",
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    why = compiled.stale(Path(__file__).resolve().parent.parent)
    if why is not None:
        pytest.exit(f"stale compiled modules: {why}; run `make compiled` again, or `make pure`", returncode=4)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_toolchain(reason: str) -> NoReturn:
    """Skip locally; under CI a missing tool is a broken machine, so fail loudly instead."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def start_or_give_up(start: Callable[[], T]) -> T:
    try:
        return start()
    except RedisUnavailable as exc:
        reason = str(exc)
    missing_toolchain(reason)


@pytest.fixture(scope="session")
def redis_standalone(pytestconfig: pytest.Config) -> Iterator[RedisTarget]:
    url: str | None = pytestconfig.getoption("--redis-url")
    if url:
        yield ExternalRedis(url)
        return
    with start_or_give_up(RedisServer) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(pytestconfig: pytest.Config) -> Iterator[ClusterTarget]:
    url: str | None = pytestconfig.getoption("--redis-cluster-url")
    if url:
        yield ExternalRedisCluster(url)
        return
    with start_or_give_up(RedisCluster) as cluster:
        yield cluster


REDIS_STORES = [pytest.param("redis", id="redis"), pytest.param("cluster", id="cluster", marks=pytest.mark.cluster)]
#: Every store a node can run on: the conformance suite runs each scenario on all of them.
STORES = [*REDIS_STORES, pytest.param("sqlite", id="sqlite")]


def fresh_store_url(request: pytest.FixtureRequest, kind: str, directory: Path) -> str:
    """A flushed Redis (standalone or cluster), or a new embedded store file in `directory`."""
    if kind == "sqlite":
        return f"sqlite:///{directory / 'fastdtm.db'}"
    name = "redis_standalone" if kind == "redis" else "redis_cluster"
    backend: RedisTarget = request.getfixturevalue(name)
    backend.flush()
    return backend.url


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store of every kind: standalone Redis, Redis Cluster, the embedded SQLite file."""
    return fresh_store_url(request, request.param, tmp_path)


@pytest.fixture(params=REDIS_STORES)
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A flushed Redis store, for what only Redis has: several nodes on one store, Lua scripts, keys."""
    return fresh_store_url(request, request.param, tmp_path)


@pytest.fixture
def busi() -> Iterator[BusiServer]:
    server = BusiServer()
    try:
        yield server
    finally:
        server.close()
    if server.errors:
        pytest.fail("busi hooks raised:\n" + "\n".join(server.errors), pytrace=False)


@pytest.fixture
def node_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    factory = NodeFactory(lambda: tmp_path_factory.mktemp("node"))
    try:
        yield factory
    finally:
        try:
            factory.stop_all()
        finally:
            for node in factory.nodes:
                # Shown by pytest only when the test failed: the first place to look.
                print(f"--- fastdtm node {node.base} (pid {node.pid}) log tail ---\n{tail(node.log_text(), 200)}")


@pytest.fixture
def node(node_factory: NodeFactory, store_url: str) -> FastdtmNode:
    return node_factory(store_url)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA (openssl) with a server and a client certificate for 127.0.0.1, one per test module."""
    try:
        return make_pki(tmp_path_factory.mktemp("pki"))
    except OpensslUnavailable as exc:
        missing_toolchain(str(exc))


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDBServer]:
    """A private `mariadbd` started on first use and stopped at the end of the session (barrier tests)."""
    try:
        server = MariaDBServer()
    except MariaDBUnavailable as exc:
        missing_toolchain(f"mariadbd not installed: {exc}")
    with server:
        yield server


@pytest.fixture
def barrier_db(mariadb: MariaDBServer) -> MariaDBServer:
    """The private MariaDB with `dtm_barrier` and `dtm_busi` dropped and recreated for this test."""
    reset_schemas(mariadb)
    return mariadb
