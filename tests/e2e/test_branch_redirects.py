"""The branch-URL policy at call time, on a real node with loopback branch servers: a branch that redirects to
another origin is not followed (a branch error naming the Location) unless `--branch-follow-redirects`, and then
not into a denied target; a host name that resolves into a denied range is refused before any connection.

A msg submitted with `wait_result` shows a branch error in its reply (500 with the call's detail), and a refused
call stays an error of the branch: the msg remains submitted, retried by the cron like any failed call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fastdtm.branch_policy import DEFAULT_DENY
from tests.support.busi import BusiServer, Reply
from tests.support.node import FastdtmNode, NodeFactory, query


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """The policy does not depend on the store: the embedded one, the quickest to start."""
    return f"sqlite:///{tmp_path / 'fastdtm.db'}"


@pytest.fixture
def other() -> Iterator[BusiServer]:
    """A second branch server: another origin (another port) on the same loopback address."""
    server = BusiServer()
    try:
        yield server
    finally:
        server.close()


def moved_to(busi: BusiServer, path: str, location: str) -> str:
    busi.script(path, [Reply(302, "moved", headers=(("Location", location),))])
    return busi.url(path)


def submit_msg(node: FastdtmNode, gid: str, url: str) -> httpx.Response:
    body: dict[str, Any] = {"gid": gid, "trans_type": "msg", "steps": [{"action": url}], "payloads": ["{}"]}
    return httpx.post(f"{node.dtm}/submit", json=body | {"wait_result": True}, timeout=10)


def assert_branch_error(reply: httpx.Response, *words: str) -> None:
    assert reply.status_code == 500, reply.text
    message = reply.json()["message"]
    assert all(word in message for word in words), message


def test_a_redirect_to_another_origin_is_a_branch_error_by_default(
    node_factory: NodeFactory, store_url: str, busi: BusiServer, other: BusiServer
) -> None:
    node = node_factory(store_url)
    url = moved_to(busi, "/moved", other.url("/TransIn"))
    reply = submit_msg(node, "redirect-refused", url)
    assert_branch_error(
        reply,
        f"url:{url} error: BranchDenied: redirect not followed: 302 to another origin, ",
        f"Location: {other.url('/TransIn')} (--branch-follow-redirects follows it)",
    )
    assert other.calls() == []
    assert query(node, "redirect-refused")["transaction"]["status"] == "submitted"  # retried like any error


def test_with_follow_redirects_a_redirect_is_followed_unless_its_target_is_denied(
    node_factory: NodeFactory, store_url: str, busi: BusiServer, other: BusiServer
) -> None:
    node = node_factory(store_url, "--branch-follow-redirects", "--branch-deny", f"{DEFAULT_DENY},localhost")
    followed = moved_to(busi, "/moved", other.url("/TransIn"))
    assert submit_msg(node, "redirect-followed", followed).status_code == 200
    assert [c.path for c in other.calls()] == ["/TransIn"]
    assert query(node, "redirect-followed")["transaction"]["status"] == "succeed"

    denied = moved_to(busi, "/moved-local", f"http://localhost:{other.port}/TransIn")
    reply = submit_msg(node, "redirect-denied", denied)
    assert_branch_error(reply, "refused by the branch policy: host 'localhost' matches 'localhost' on --branch-deny")
    assert len(other.calls()) == 1


def test_a_name_resolving_into_a_denied_range_is_refused_at_call_time(
    node_factory: NodeFactory, store_url: str, busi: BusiServer
) -> None:
    node = node_factory(store_url, "--branch-deny", f"{DEFAULT_DENY},127.0.0.0/8")
    # The literal address is refused at submit ...
    literal = httpx.post(
        f"{node.dtm}/submit",
        json={"gid": "loopback-literal", "trans_type": "msg", "steps": [{"action": busi.url("/a")}], "payloads": [""]},
    )
    assert literal.status_code == 422, literal.text
    assert "127.0.0.1 is in 127.0.0.0/8 on --branch-deny" in literal.json()["message"]
    # ... a name that resolves there passes the submit, and its call is refused before connecting.
    reply = submit_msg(node, "loopback-name", f"http://localhost:{busi.port}/TransIn")
    assert_branch_error(
        reply, "refused by the branch policy: 'localhost' resolves to 127.0.0.1, which is in 127.0.0.0/8"
    )
    assert busi.calls() == []
    assert query(node, "loopback-name")["transaction"]["status"] == "submitted"
