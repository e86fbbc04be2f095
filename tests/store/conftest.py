"""Fixtures of the store tests: `subject`, the contract's store under test, over the embedded store, standalone
Redis and Redis Cluster (the Redis ones use the suite's servers, flushed first, and are skipped locally without
`redis-server`), and `store`, an open embedded store on a fresh file for the embedded-only tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from fastdtm.store.embedded import EmbeddedStore
from tests.conftest import start_or_give_up
from tests.store.contract.support import FINISHED_TTL_MS, Subject
from tests.store.subjects import EmbeddedSubject, RedisSubject
from tests.support.redis_servers import RedisCluster, RedisTarget

SUBJECTS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("redis", id="redis"),
    pytest.param("cluster", id="cluster", marks=pytest.mark.cluster),
]


@pytest.fixture(params=SUBJECTS)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    if request.param == "embedded":
        return EmbeddedSubject(tmp_path / "data" / "fastdtm.db")
    backend: RedisTarget = request.getfixturevalue("redis_standalone" if request.param == "redis" else "redis_cluster")
    backend.flush()
    return RedisSubject(backend.url)


@pytest.fixture(scope="module")
def replicated_cluster() -> Iterator[RedisCluster]:
    """A private 3 masters + 3 replicas cluster for one module's fault tests (they kill and freeze its nodes, so
    it cannot be the suite's shared one)."""
    with start_or_give_up(lambda: RedisCluster(replicas=1)) as started:
        yield started


@pytest.fixture
def cluster(replicated_cluster: RedisCluster) -> Iterator[RedisCluster]:
    """`replicated_cluster`, emptied for the test and healed after it (nodes resumed, restarted, in sync)."""
    replicated_cluster.flush()
    yield replicated_cluster
    replicated_cluster.heal()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    store = await EmbeddedStore.open(str(tmp_path / "fastdtm.db"), FINISHED_TTL_MS)
    try:
        yield store
    finally:
        await store.close()
