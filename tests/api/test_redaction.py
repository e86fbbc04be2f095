"""Secrets a client hands the coordinator (issue 14, item 3): branch header values of Authorization, Cookie,
Proxy-Authorization and of `--redact-headers`, and URL passwords, are sent to the branches unchanged but
never shown by `/query`, `/all`, `prepareWorkflow` or the node's log, unless an operator asks with `?reveal=1`."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.busi import BusiServer, Reply
from tests.support.node import FastdtmNode, NodeFactory, wait_status

HEADERS = {"Authorization": "Bearer tok-s3cret", "Cookie": "session=c00kie", "X-Api-Key": "k3y", "test_header": "test"}
SHOWN = {"Authorization": "***", "Cookie": "***", "X-Api-Key": "***", "test_header": "test"}
SECRETS = ("tok-s3cret", "c00kie", "k3y", "pa55w0rd")


@pytest.fixture(scope="module")
def node(store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastdtmNode]:
    factory = NodeFactory(lambda: tmp_path_factory.mktemp("node"))
    try:
        yield factory(store_url, "--redact-headers", "x-api-key, X-Other")
    finally:
        factory.stop_all()


def with_password(busi: BusiServer, path: str) -> str:
    return busi.url(path).replace("http://", "http://svc:pa55w0rd@")


def submit_saga(node: FastdtmNode, busi: BusiServer) -> str:
    gid = f"red-{uuid.uuid4().hex}"
    body: dict[str, Any] = {
        "gid": gid,
        "trans_type": "saga",
        "steps": [{"action": with_password(busi, "/A"), "compensate": with_password(busi, "/C")}],
        "payloads": ['{"amount":30}'],
        "branch_headers": HEADERS,
    }
    reply = httpx.post(f"{node.dtm}/submit", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    return gid


def test_query_and_all_mask_header_values_and_url_passwords(node: FastdtmNode, busi: BusiServer) -> None:
    busi.script("/A", [Reply(500), Reply(200)])  # one failure: its error text carries the URL
    gid = submit_saga(node, busi)
    wait_status(node, gid, "succeed")

    shown = httpx.get(f"{node.dtm}/query", params={"gid": gid}, timeout=10)
    listed = httpx.get(f"{node.dtm}/all", params={"gid": gid}, timeout=10)

    trans = shown.json()["transaction"]
    assert trans["branch_headers"] == SHOWN
    assert all(b["url"].startswith("http://svc:***@") for b in shown.json()["branches"] if b.get("url"))
    assert listed.json()["transactions"][0]["branch_headers"] == SHOWN
    for text in (shown.text, listed.text, node.log_text()):
        assert not any(secret in text for secret in SECRETS), text
    assert "svc:***@" in node.log_text()  # the failed call was logged, without the password


def test_the_branches_get_the_real_values(node: FastdtmNode, busi: BusiServer) -> None:
    gid = submit_saga(node, busi)
    wait_status(node, gid, "succeed")

    call = next(c for c in busi.calls("/A") if c.query.get("gid") == gid)
    assert call.headers["authorization"] == "Bearer tok-s3cret"  # branch_headers win over the URL's userinfo
    assert call.headers["cookie"] == "session=c00kie" and call.headers["x-api-key"] == "k3y"


def test_reveal_shows_them(node: FastdtmNode, busi: BusiServer) -> None:
    gid = submit_saga(node, busi)
    wait_status(node, gid, "succeed")

    revealed = httpx.get(f"{node.dtm}/query", params={"gid": gid, "reveal": "1"}, timeout=10).json()

    assert revealed["transaction"]["branch_headers"] == HEADERS
    assert revealed["branches"][0]["url"] == with_password(busi, "/C") or any(
        b.get("url") == with_password(busi, "/A") for b in revealed["branches"]
    )


def test_a_basic_password_in_a_branch_url_is_masked_but_used(node: FastdtmNode, busi: BusiServer) -> None:
    gid = f"red-{uuid.uuid4().hex}"
    body = {
        "gid": gid,
        "trans_type": "saga",
        "steps": [{"action": with_password(busi, "/B"), "compensate": ""}],
        "payloads": ["{}"],
    }
    assert httpx.post(f"{node.dtm}/submit", json=body, timeout=10).status_code == 200
    wait_status(node, gid, "succeed")

    call = next(c for c in busi.calls("/B") if c.query.get("gid") == gid)
    assert call.headers["authorization"] == "Basic " + base64.b64encode(b"svc:pa55w0rd").decode()
    assert "pa55w0rd" not in httpx.get(f"{node.dtm}/query", params={"gid": gid}, timeout=10).text


def test_only_an_operator_may_reveal(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("client-token-0123456789 client\noperator-token-0123456789 operator\n")
    factory = NodeFactory(lambda: tmp_path)
    try:
        node = factory(f"sqlite:///{tmp_path / 'own.db'}", "--auth-file", str(tokens))
        gid = f"red-{uuid.uuid4().hex}"
        body = {"gid": gid, "trans_type": "saga", "steps": [], "payloads": [], "branch_headers": HEADERS}
        client = {"Authorization": "Bearer client-token-0123456789"}
        operator = {"Authorization": "Bearer operator-token-0123456789"}
        assert httpx.post(f"{node.dtm}/submit", json=body, headers=client, timeout=10).status_code == 200

        def headers_shown(who: dict[str, str]) -> Any:
            reply = httpx.get(f"{node.dtm}/query", params={"gid": gid, "reveal": "1"}, headers=who, timeout=10)
            return reply.json()["transaction"]["branch_headers"]

        assert headers_shown(client)["Authorization"] == "***"
        assert headers_shown(operator) == HEADERS
    finally:
        factory.stop_all()
