"""The store on `rediss://` against a private `redis-server` that speaks only TLS, with a CA made by the test:
the whole store contract over it, and over a 3-master cluster reached only through TLS (`rediss+cluster://`);
a client certificate when the server asks for one (`tls-auth-clients yes`); and clear failures for a CA that
did not sign the server's certificate, a missing client certificate, and a certificate that does not name the
address dialled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from fastdtm.store.redis import Script
from fastdtm.store.redis_client import connect
from fastdtm.store.resp import NotSent, Timeouts
from tests.conftest import missing_toolchain
from tests.store.contract import CHECKS, Check
from tests.store.subjects import RedisSubject
from tests.support.redis_servers import RedisUnavailable
from tests.support.tls import Pki, TlsRedisCluster, TlsRedisServer, make_pki

#: Scripts every connection loads first, as a node's client does: the client certificate is asked for then.
PRELOAD: Final = [Script("load").source]
#: Failures are "not sent": retried for `retry` seconds, then raised.
QUICK: Final = Timeouts(connect=2.0, retry=0.3)


def start(pki: Pki, auth_clients: str) -> TlsRedisServer:
    try:
        return TlsRedisServer(pki, auth_clients=auth_clients)
    except RedisUnavailable as exc:
        missing_toolchain(str(exc))


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[TlsRedisServer]:
    """TLS only, no client certificate asked for."""
    with start(pki, "no") as server:
        yield server


@pytest.fixture(scope="module")
def mutual(pki: Pki) -> Iterator[TlsRedisServer]:
    """TLS only, and a client must present a certificate the CA signed."""
    with start(pki, "yes") as server:
        yield server


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_contract_over_tls(server: TlsRedisServer, check: Check) -> None:
    server.flush()
    await check(RedisSubject(server.url))


@pytest.fixture(scope="module")
def tls_cluster(pki: Pki) -> Iterator[TlsRedisCluster]:
    try:
        cluster = TlsRedisCluster(pki)
    except RedisUnavailable as exc:
        missing_toolchain(str(exc))
    with cluster:
        yield cluster


@pytest.mark.cluster
@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_contract_over_a_tls_cluster(tls_cluster: TlsRedisCluster, check: Check) -> None:
    tls_cluster.flush()
    await check(RedisSubject(tls_cluster.url))


async def test_a_client_certificate_gets_in_where_the_server_asks_for_one(mutual: TlsRedisServer) -> None:
    client = connect(mutual.client_url(), QUICK, preload=PRELOAD)
    try:
        assert await client.execute("k", "SET", "k", "v") == "OK"
        assert await client.execute("k", "GET", "k") == "v"
    finally:
        await client.aclose()


async def test_without_a_client_certificate_the_server_refuses(mutual: TlsRedisServer) -> None:
    client = connect(mutual.url, QUICK, preload=PRELOAD)
    try:
        with pytest.raises(NotSent, match=r"cannot connect: .*certificate required"):
            await client.ready()
    finally:
        await client.aclose()


async def test_a_server_certificate_the_ca_did_not_sign_is_refused(server: TlsRedisServer, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", name="another")
    client = connect(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={other.ca.cert}", QUICK)
    started = time.monotonic()
    try:
        with pytest.raises(
            NotSent, match=f"redis 127.0.0.1:{server.port}: cannot connect: .*CERTIFICATE_VERIFY_FAILED"
        ):
            await client.ready()
    finally:
        await client.aclose()
    assert time.monotonic() - started < 2.0  # retried for QUICK.retry, like any connection that was refused
    # The system's CAs know nothing of the test's CA either.
    client = connect(f"rediss://127.0.0.1:{server.port}/0", QUICK)
    try:
        with pytest.raises(NotSent, match="CERTIFICATE_VERIFY_FAILED"):
            await client.ready()
    finally:
        await client.aclose()


async def test_the_certificate_must_name_the_address_unless_told_not_to_check(tmp_path: Path) -> None:
    # A certificate for localhost only, dialled as 127.0.0.1 (as a cluster's nodes are: by their announced IPs).
    pki = make_pki(tmp_path / "named", alt_names="DNS:localhost")
    with start(pki, "no") as server:
        url = f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={pki.ca.cert}"
        client = connect(url, QUICK)
        try:
            with pytest.raises(NotSent, match=r"CERTIFICATE_VERIFY_FAILED.*IP address mismatch"):
                await client.ready()
        finally:
            await client.aclose()
        for unchecked in (url + "&ssl_check_hostname=false", url.replace("127.0.0.1", "localhost")):
            client = connect(unchecked, QUICK)
            try:
                await client.ready()
            finally:
                await client.aclose()
