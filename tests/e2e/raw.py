"""Raw DTM protocol for the SDK-replay scenarios: request bodies are written as literal JSON text (so the key order,
the `null`s and the always-present keys are exactly an SDK's), sent over plain `httpx`, and the replies are kept as
they came, so a test can check the bytes an SDK checks (`"dtm_result":"SUCCESS"`) and not just a decoded value."""

from __future__ import annotations

import json
from string import Template
from typing import Any, Final

import httpx

from tests.support.node import FastdtmNode

#: What DTM answers on prepare/submit/abort/registerBranch/subscribe, byte for byte (reference dtm-clients §0.1).
SUCCESS_TEXT: Final = '{"dtm_result":"SUCCESS"}'
JSON_HEADERS: Final = {"Content-Type": "application/json"}
TIMEOUT: Final = 10.0


def lit(template: str, **values: object) -> str:
    """`template` (a JSON text with `$name` holes) with each hole replaced by the compact JSON of `values[name]`.

    The template fixes which keys are sent and in which order, and any literal `null`; the values are quoted
    safely (URLs, gids, nested step lists)."""
    return Template(template).substitute({name: compact(value) for name, value in values.items()})


def compact(value: object) -> str:
    """JSON without spaces, as Go's json.Marshal, JS's JSON.stringify and Jackson write it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Raw:
    """The DTM API of one node (`.../api/dtmsvr`), spoken with literal bodies; thread-safe (no shared client),
    so busi hooks that play an SDK from the branch server's threads can use it too."""

    def __init__(self, dtm: str) -> None:
        self.dtm = dtm.rstrip("/")

    @classmethod
    def of(cls, node: FastdtmNode) -> Raw:
        return cls(node.dtm)

    def post(self, path: str, body: str) -> httpx.Response:
        return httpx.post(self.dtm + path, content=body.encode(), headers=JSON_HEADERS, timeout=TIMEOUT)

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(self.dtm + path, params=params, timeout=TIMEOUT)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(self.dtm + path, timeout=TIMEOUT)

    def new_gid(self) -> str:
        reply = self.get("/newGid")
        assert reply.status_code == 200, reply.text
        gid = reply.json()["gid"]
        assert isinstance(gid, str) and gid
        return gid


def ok(reply: httpx.Response) -> None:
    """The reply is DTM's plain success: 200 with exactly `{"dtm_result":"SUCCESS"}`."""
    assert (reply.status_code, reply.text) == (200, SUCCESS_TEXT), f"HTTP {reply.status_code} {reply.text}"


def failure(reply: httpx.Response) -> dict[str, Any]:
    """The reply is DTM's FAILURE: 409 with `dtm_result` FAILURE and a message ending in the word (SDKs look
    for it); returns the body."""
    assert reply.status_code == 409, f"wanted 409 FAILURE, got HTTP {reply.status_code} {reply.text}"
    body: dict[str, Any] = reply.json()
    assert body["dtm_result"] == "FAILURE"
    assert body["message"].endswith("FAILURE"), body
    return body
