"""A node started with Go's proxy variables calls its branches through the proxy, as Go DTM does: the
branch host `busi.invalid` is known to the proxy alone, so the saga can only succeed through it."""

from __future__ import annotations

import uuid

import httpx

from tests.support.busi import BusiServer
from tests.support.forward_proxy import ForwardProxy, in_thread
from tests.support.node import NodeFactory, wait_status


def test_a_node_calls_its_branches_through_http_proxy(
    node_factory: NodeFactory, store_url: str, busi: BusiServer
) -> None:
    port = busi.base.rpartition(":")[2].partition("/")[0]
    with in_thread(ForwardProxy({"busi.invalid": "127.0.0.1"})) as proxy:
        node = node_factory(store_url, env={"HTTP_PROXY": proxy.url(), "NO_PROXY": "example.com"})
        gid = f"proxied-{uuid.uuid4().hex}"
        action = f"http://busi.invalid:{port}/TransIn"
        body = {"gid": gid, "trans_type": "saga", "steps": [{"action": action, "compensate": action + "Revert"}]}
        assert httpx.post(f"{node.dtm}/submit", json=body | {"payloads": ["{}"]}).status_code == 200
        wait_status(node, gid, {"succeed"}, timeout=15)
        assert [(s.method, s.target.partition("?")[0]) for s in proxy.seen] == [("POST", action)]
    assert len(busi.calls("/TransIn")) == 1
