"""API tests share one node per store and module: they use distinct gids and need no fresh state,
and starting a node per test would dominate their run time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import STORES, fresh_store_url
from tests.support.node import FastdtmNode, NodeFactory


@pytest.fixture(scope="module", params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return fresh_store_url(request, request.param, tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def node(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastdtmNode]:
    factory = NodeFactory(lambda: tmp_path_factory.mktemp("node"))
    try:
        yield factory(store_url)
    finally:
        factory.stop_all()
