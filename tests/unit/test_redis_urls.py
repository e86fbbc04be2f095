"""The store URL schemes the Redis client accepts, parsed without I/O: standalone or cluster, plain or TLS, with
a password or an ACL user (percent-encoded), the db number."""

from __future__ import annotations

import pytest

from fastdtm.store.redis_client import Cluster, Redis, connect


@pytest.mark.parametrize(
    ("url", "tls", "seeds"),
    [
        ("redis+cluster://a:7000,b:7001", False, ["a:7000", "b:7001"]),
        ("rediss+cluster://app:p%40ss@a:7000,b", True, ["a:7000", "b:6379"]),
    ],
)
async def test_cluster_urls(url: str, tls: bool, seeds: list[str]) -> None:
    client = connect(url)
    assert isinstance(client, Cluster)
    assert [node.address for node in client._seeds] == seeds
    assert (client._options["tls"] is not None) is tls
    if "@" in url:
        assert client._options["username"] == "app" and client._options["password"] == "p@ss"
    await client.aclose()


@pytest.mark.parametrize(
    ("url", "tls", "address", "db", "auth"),
    [
        ("redis://h:6380/2", False, "h:6380", 2, (None, None)),
        ("rediss://:secret@h", True, "h:6379", 0, (None, "secret")),
        ("redis://app:p%2Fw@127.0.0.1:1/0", False, "127.0.0.1:1", 0, ("app", "p/w")),
    ],
)
async def test_standalone_urls(url: str, tls: bool, address: str, db: int, auth: tuple[str | None, str | None]) -> None:
    client = connect(url)
    assert isinstance(client, Redis)
    node = client.node
    assert (node.address, node._tls is not None, node._db, node._auth) == (address, tls, db, auth)
    await client.aclose()
