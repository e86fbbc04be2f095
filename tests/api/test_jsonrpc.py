"""DTM's JSON-RPC endpoint: the same use cases as the HTTP API, errors in the envelope (reference §4.3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode, query, wait_status


@pytest.fixture
def rpc(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{node.base}/api", timeout=10) as c:
        yield c


def call(rpc: httpx.Client, method: str, params: Any, rpc_id: Any = "1") -> dict[str, Any]:
    reply = rpc.post("/json-rpc", json={"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params})
    assert reply.status_code == 200  # always: errors travel in the envelope
    body: dict[str, Any] = reply.json()
    assert body["jsonrpc"] == "2.0"
    return body


def test_new_gid(rpc: httpx.Client) -> None:
    body = call(rpc, "newGid", {})
    assert body["error"] is None
    assert len(body["result"]["gid"]) == 22


def test_saga_submit_and_a_conflict(rpc: httpx.Client, busi: BusiServer, node: FastdtmNode) -> None:
    gid = "rpc-saga"
    params = {"gid": gid, "trans_type": "saga", "steps": [{"action": busi.url("/A")}], "payloads": ["{}"]}
    body = call(rpc, "submit", {**params, "wait_result": True}, rpc_id="abc")
    assert body == {"jsonrpc": "2.0", "id": "abc", "error": None, "result": None}
    assert query(node, gid)["transaction"]["status"] == "succeed"
    again = call(rpc, "submit", params)
    assert again["error"]["code"] == -32901
    assert "cannot submit" in again["error"]["message"]


def test_tcc_over_json_rpc(rpc: httpx.Client, busi: BusiServer, node: FastdtmNode) -> None:
    gid = "rpc-tcc"
    assert call(rpc, "prepare", {"gid": gid, "trans_type": "tcc"})["error"] is None
    branch = {"gid": gid, "trans_type": "tcc", "branch_id": "01", "data": "{}", "confirm": busi.url("/Confirm")}
    assert call(rpc, "registerBranch", {**branch, "cancel": busi.url("/Cancel")})["error"] is None
    assert call(rpc, "submit", {"gid": gid, "trans_type": "tcc"})["error"] is None
    wait_status(node, gid, {"succeed"})
    assert [c.path for c in busi.calls()] == ["/Confirm"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{nope", -32700),
        (b'{"jsonrpc":"2.0","id":7,"method":"newGid","params":{}}', -32600),
        (b'{"jsonrpc":"1.0","id":"1","method":"newGid","params":{}}', -32600),
        (b'{"jsonrpc":"2.0","id":"","method":"newGid","params":{}}', -32600),
        (b'{"jsonrpc":"2.0","id":"1","method":"launch","params":{}}', -32601),
        (b'{"jsonrpc":"2.0","id":"1","method":"submit","params":[1]}', -32602),
        (b'{"jsonrpc":"2.0","id":"1","method":"submit","params":{"gid":"x","trans_type":"nope"}}', -32602),
    ],
)
def test_bad_envelopes(rpc: httpx.Client, content: bytes, code: int) -> None:
    reply = rpc.post("/json-rpc", content=content, headers={"content-type": "application/json"})
    assert reply.status_code == 200
    assert reply.json()["error"]["code"] == code
