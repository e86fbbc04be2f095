"""Fixtures of the store tests: `subject`, the contract's store under test, over the embedded store, standalone
Redis and Redis Cluster (the Redis ones use the suite's servers, flushed first, and are skipped locally without
`redis-server`), and `store`, an open embedded store on a fresh file for the embedded-only tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fastdtm.store.embedded import EmbeddedStore
from tests.store.contract.support import FINISHED_TTL_MS, Subject
from tests.store.subjects import EmbeddedSubject, RedisSubject
from tests.support.redis_servers import RedisTarget

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


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    store = await EmbeddedStore.open(str(tmp_path / "fastdtm.db"), FINISHED_TTL_MS)
    try:
        yield store
    finally:
        await store.close()
