"""Bad input gets a clear 4xx with a message, and changes nothing (`query` shows no transaction)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.node import FastdtmNode, query

GOOD_STEP = {"action": "http://127.0.0.1:9/a", "compensate": "http://127.0.0.1:9/c"}


@pytest.fixture
def client(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.dtm, timeout=10) as c:
        yield c


def saga(gid: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"gid": gid, "trans_type": "saga", "steps": [GOOD_STEP], "payloads": ["{}"]}
    body.update(fields)
    return body


def assert_refused(reply: httpx.Response, status: int, words: str) -> None:
    assert reply.status_code == status, reply.text
    message = reply.json()["message"]
    assert words in message, message
    assert "FAILURE" not in reply.text or status == 409


@pytest.mark.parametrize("endpoint", ["submit", "prepare"])
@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"trans_type": "sagaa"}, "unknown trans_type 'sagaa'"),
        ({"trans_type": 7}, "field 'trans_type' must be a string"),
        ({"steps": {"action": "x"}}, "field 'steps' must be an array"),
        ({"steps": [["http://x"]]}, "field 'steps[0]' must be an object of strings"),
        ({"payloads": [1]}, "field 'payloads' must be an array of strings"),
        ({"payloads": []}, "steps[0] has no payload"),
        ({"wait_result": "yes"}, "field 'wait_result' must be a boolean"),
        ({"timeout_to_fail": -1}, "field 'timeout_to_fail' must be >= 0"),
        ({"retry_interval": 1.5}, "field 'retry_interval' must be an integer"),
        ({"branch_headers": {"x": 1}}, "field 'branch_headers' must be an object of strings"),
        ({"steps": [{"action": "ftp://host/a"}]}, "is not an http:// or https:// URL"),
        ({"steps": [{"action": "localhost:50051/busi.Busi/TransOut"}]}, "is not an http:// or https:// URL"),
        ({"steps": [{"action": "http://"}]}, "is not an http:// or https:// URL"),
        ({"steps": [{"action": "http://[::1/a"}]}, "is not an http:// or https:// URL"),
        ({"steps": [{"action": "http://host:99999/a"}]}, "is not an http:// or https:// URL"),
        ({"custom_data": "{not json"}, "custom_data must be a JSON object"),
        ({"custom_data": '{"orders": {"0": [0]}}'}, "cycle"),
        ({"custom_data": '{"orders": {"3": [0]}}'}, "has step '3'"),
        ({"protocol": "soap"}, "protocol 'soap' is not supported"),
        ({"protocol": "grpc", "steps": [{"action": "localhost/busi.Busi/TransOut"}]}, "nor a gRPC target"),
        ({"steps": [GOOD_STEP] * 1001, "payloads": ["{}"] * 1001}, "at most 1000 steps"),
    ],
)
def test_bad_trans_bodies_are_refused_with_422(
    client: httpx.Client, node: FastdtmNode, endpoint: str, fields: dict[str, Any], words: str
) -> None:
    gid = f"bad-{endpoint}-{abs(hash(words))}"
    assert_refused(client.post(f"/{endpoint}", json=saga(gid, **fields)), 422, words)
    assert query(node, gid) == {"transaction": None, "branches": []}


@pytest.mark.parametrize(
    ("gid", "words"),
    [("", "gid is required"), ("has space", "is invalid"), ("a;b", "is invalid"), ("x" * 129, "is invalid")],
)
def test_bad_gids_are_refused(client: httpx.Client, gid: str, words: str) -> None:
    assert_refused(client.post("/submit", json=saga(gid)), 422, words)


def test_missing_gid_is_refused(client: httpx.Client) -> None:
    body = saga("x")
    del body["gid"]
    assert_refused(client.post("/submit", json=body), 422, "gid is required")


@pytest.mark.parametrize(
    ("content", "words"), [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b"", "not valid")]
)
def test_malformed_bodies_get_400(client: httpx.Client, content: bytes, words: str) -> None:
    reply = client.post("/submit", content=content, headers={"content-type": "application/json"})
    assert_refused(reply, 400, words)


def test_an_oversize_body_gets_413_and_writes_nothing(client: httpx.Client, node: FastdtmNode) -> None:
    body = saga("too-big", payloads=["x" * (2 << 20)])
    assert_refused(client.post("/submit", json=body), 413, "over the limit")
    assert query(node, "too-big")["transaction"] is None


def test_an_oversize_body_without_content_length_gets_413(client: httpx.Client, node: FastdtmNode) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"gid":"chunked","trans_type":"saga","payloads":["'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"]}'

    reply = client.post("/submit", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(reply, 413, "over the limit")
    assert query(node, "chunked")["transaction"] is None


def test_msg_prepare_needs_a_check_back_url(client: httpx.Client, node: FastdtmNode) -> None:
    body = {"gid": "msg-no-qp", "trans_type": "msg", "steps": [{"action": "http://127.0.0.1:9/a"}], "payloads": ["{}"]}
    assert_refused(client.post("/prepare", json=body), 422, "needs query_prepared")
    assert query(node, "msg-no-qp")["transaction"] is None


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": "0"}, "'limit' must be an integer"),
        ({"limit": "abc"}, "'limit' must be an integer"),
        ({"createTimeStart": "-5"}, "'createTimeStart' must be an integer"),
    ],
)
def test_bad_list_parameters_get_422(client: httpx.Client, params: dict[str, str], words: str) -> None:
    assert_refused(client.get("/all", params=params), 422, words)


def test_query_without_gid_is_a_400(client: httpx.Client) -> None:
    assert_refused(client.get("/query"), 400, "no gid")


def test_unknown_gids_are_404_for_operator_actions(client: httpx.Client) -> None:
    for endpoint in ("forceStop", "resetNextCronTime", "abort"):
        assert_refused(client.post(f"/{endpoint}", json={"gid": "nobody", "trans_type": "msg"}), 404, "no transaction")
