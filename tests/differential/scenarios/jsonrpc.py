"""JSON-RPC 2.0 (`POST /api/json-rpc`): each method, and the envelope errors."""

from __future__ import annotations

from typing import Any

from ..scenario import JsonBody, Request, WaitStatus, query, scenario
from .tcc_xa import branch, tcc


def rpc(method: str, params: JsonBody = None, **envelope: Any) -> Request:
    body = {"jsonrpc": "2.0", "id": "1", "method": method, "params": params if params is not None else {}}
    body.update(envelope)
    return Request("POST", "/api/json-rpc", body)


def raw(text: str) -> Request:
    return Request("POST", "/api/json-rpc", text)


SCENARIOS = (
    scenario("rpc-new-gid", "json-rpc", rpc("newGid")),
    scenario(
        "rpc-tcc",
        "json-rpc",
        rpc("prepare", tcc()),
        rpc("registerBranch", branch("01")),
        rpc("submit", tcc()),
        WaitStatus(),
        query(),
    ),
    scenario(
        "rpc-abort",
        "json-rpc",
        rpc("prepare", tcc()),
        rpc("registerBranch", branch("01")),
        rpc("abort", tcc()),
        WaitStatus(),
    ),
    scenario("rpc-failure", "json-rpc", rpc("registerBranch", branch("01"))),
    scenario("rpc-unknown-method", "json-rpc", rpc("nope")),
    scenario("rpc-bad-version", "json-rpc", rpc("newGid", jsonrpc="1.0")),
    scenario("rpc-empty-id", "json-rpc", rpc("newGid", id="")),
    scenario("rpc-invalid-json", "json-rpc", raw("{not json")),
)
