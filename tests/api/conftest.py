"""API tests share one node per store and module: they use distinct gids and need no fresh state,
and starting a node per test would dominate their run time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import STORES
from tests.support.node import FastdtmNode, NodeFactory
from tests.support.redis_servers import RedisTarget


@pytest.fixture(scope="module", params=STORES)
def store_url(request: pytest.FixtureRequest) -> str:
    name = "redis_standalone" if request.param == "redis" else "redis_cluster"
    backend: RedisTarget = request.getfixturevalue(name)
    backend.flush()
    return backend.url


@pytest.fixture(scope="module")
def node(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastdtmNode]:
    factory = NodeFactory(lambda: tmp_path_factory.mktemp("node"))
    try:
        yield factory(store_url)
    finally:
        factory.stop_all()
