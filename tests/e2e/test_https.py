"""HTTPS serving end to end: real nodes with `--ssl-certfile/--ssl-keyfile` (and `--ssl-ca-certs` for client
certificates, with several workers) on a store reached over `rediss://` with a client certificate, both with a
CA made by the test. A client that trusts the CA is served and its saga runs against plain-http branches; a
client that does not is refused, and so, under mutual TLS, is one without a certificate the CA signed."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import missing_toolchain
from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode
from tests.support.processes import tail
from tests.support.redis_servers import RedisUnavailable
from tests.support.tls import Pki, TlsRedisServer, make_pki


@pytest.fixture(scope="module")
def tls_redis(pki: Pki) -> Iterator[TlsRedisServer]:
    """TLS only, and it asks its clients for a certificate (`tls-auth-clients yes`)."""
    try:
        server = TlsRedisServer(pki, auth_clients="yes")
    except RedisUnavailable as exc:
        missing_toolchain(str(exc))
    with server:
        yield server


@contextmanager
def https_node(store: str, pki: Pki, *flags: str, client: ssl.SSLContext) -> Iterator[FastdtmNode]:
    files = ["--ssl-certfile", str(pki.server.cert), "--ssl-keyfile", str(pki.server.key)]
    node = FastdtmNode(store, [*files, *flags], tls=client)
    try:
        yield node
    except BaseException:
        print(f"--- fastdtm node {node.base} log tail ---\n{tail(node.log_text(), 100)}")
        raise
    finally:
        node.stop()


def run_saga(client: httpx.Client, node: FastdtmNode, busi: BusiServer) -> dict[str, object]:
    gid = client.get(f"{node.dtm}/newGid").json()["gid"]
    steps = [{"action": busi.url("/TransOut"), "compensate": busi.url("/TransOutRevert")}]
    steps.append({"action": busi.url("/TransIn"), "compensate": busi.url("/TransInRevert")})
    body = {"gid": gid, "trans_type": "saga", "steps": steps, "payloads": ["{}", "{}"], "wait_result": True}
    assert client.post(f"{node.dtm}/submit", json=body).status_code == 200
    reply: dict[str, object] = client.get(f"{node.dtm}/query", params={"gid": gid}).json()
    return reply


def refused(node: FastdtmNode, verify: ssl.SSLContext | bool, errors: Sequence[str]) -> str:
    """What a client with `verify` gets from the node: a transport error, whose text is returned."""
    with httpx.Client(verify=verify, timeout=5) as client, pytest.raises(httpx.TransportError) as caught:
        client.get(f"{node.base}/api/ready")
    text = str(caught.value)
    assert any(error in text for error in errors), text
    return text


def test_https_serves_clients_that_trust_the_ca_and_runs_a_saga(
    pki: Pki, tls_redis: TlsRedisServer, busi: BusiServer
) -> None:
    trusting = pki.client_context()
    with https_node(tls_redis.client_url(), pki, client=trusting) as node:
        assert node.base.startswith("https://")
        with httpx.Client(verify=trusting, timeout=10) as client:
            assert client.get(f"{node.base}/api/ready").status_code == 200
            reply = run_saga(client, node, busi)
        transaction = reply["transaction"]
        assert isinstance(transaction, dict) and transaction["status"] == "succeed"
        assert [call.path for call in busi.calls()] == ["/TransOut", "/TransIn"]
        # The system's trust store does not know the test's CA.
        refused(node, True, ["CERTIFICATE_VERIFY_FAILED"])


def test_client_certificates_are_required_with_a_ca_across_workers(
    pki: Pki, tls_redis: TlsRedisServer, busi: BusiServer, tmp_path: Path
) -> None:
    with_certificate = pki.client_context(with_certificate=True)
    flags = ("--ssl-ca-certs", str(pki.ca.cert), "--workers", "2")
    with https_node(tls_redis.client_url(), pki, *flags, client=with_certificate) as node:
        with httpx.Client(verify=with_certificate, timeout=10) as client:
            # New connections, so that both workers are likely to take some.
            for _ in range(6):
                response = client.get(f"{node.base}/api/ready", headers={"Connection": "close"})
                assert response.status_code == 200
            transaction = run_saga(client, node, busi)["transaction"]
            assert isinstance(transaction, dict) and transaction["status"] == "succeed"
        # TLS 1.3: the client's handshake ends before the server has seen its certificate, so the refusal
        # arrives as an alert on the first read.
        alerts = ["CERTIFICATE_REQUIRED", "certificate required", "Server disconnected", "EOF"]
        refused(node, pki.client_context(), alerts)
        stranger = make_pki(tmp_path / "stranger", name="stranger")
        foreign = pki.client_context()
        foreign.load_cert_chain(stranger.client.cert, stranger.client.key)
        refused(node, foreign, ["UNKNOWN_CA", "unknown ca", "Server disconnected", "EOF"])
