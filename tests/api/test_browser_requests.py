"""What a web page could make a browser send: no CORS header is ever answered, and a POST with a body a
browser sends without a preflight (a form, multipart, text/plain) is a 415 that writes nothing. What the
SDKs send (application/json, or no Content-Type at all) is served as before.

The rule does not depend on the store: these tests run on the embedded store only.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.node import FastdtmNode, NodeFactory

SIMPLE_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/plain",
    "text/plain;charset=UTF-8",
    "Text/Plain",
]
POSTS = [
    "/api/dtmsvr/prepare",
    "/api/dtmsvr/submit",
    "/api/dtmsvr/abort",
    "/api/dtmsvr/registerBranch",
    "/api/dtmsvr/prepareWorkflow",
    "/api/dtmsvr/forceStop",
    "/api/dtmsvr/resetNextCronTime",
    "/api/dtmsvr/resetCronTime",
    "/api/dtmsvr/newGid",
    "/api/json-rpc",
]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastdtmNode]:
    factory = NodeFactory(lambda: tmp_path_factory.mktemp("node"))
    try:
        yield factory(f"sqlite:///{tmp_path_factory.mktemp('store') / 'fastdtm.db'}")
    finally:
        factory.stop_all()


@pytest.fixture
def api(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.base, timeout=10) as client:
        yield client


def saga(gid: str) -> bytes:
    return b'{"gid":"%s","trans_type":"saga","steps":[],"payloads":[]}' % gid.encode()


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
def test_a_post_a_browser_sends_unasked_is_415(api: httpx.Client, path: str, content_type: str) -> None:
    reply = api.post(path, content=saga("browser"), headers={"Content-Type": content_type})
    assert reply.status_code == 415, reply.text
    message = reply.json()["message"]
    assert "must be JSON" in message
    assert "FAILURE" not in message


def test_nothing_is_written_by_a_refused_post(api: httpx.Client) -> None:
    for content_type in SIMPLE_TYPES:
        api.post("/api/dtmsvr/submit", content=saga("browser-submit"), headers={"Content-Type": content_type})
        api.post("/api/dtmsvr/prepare", content=saga("browser-prepare"), headers={"Content-Type": content_type})
    for gid in ("browser-submit", "browser-prepare"):
        assert api.get("/api/dtmsvr/query", params={"gid": gid}).json()["transaction"] is None


@pytest.mark.parametrize(
    ("gid", "headers"),
    [
        pytest.param("sdk-json", {"Content-Type": "application/json"}, id="json"),  # requests, resty, Feign, axios
        pytest.param("sdk-charset", {"Content-Type": "application/json; charset=utf-8"}, id="json-charset"),  # C#
        pytest.param("sdk-octets", {"Content-Type": "application/octet-stream"}, id="octet-stream"),  # preflighted
        pytest.param("sdk-none", {}, id="none"),
    ],
)
def test_what_sdks_send_is_served(api: httpx.Client, gid: str, headers: dict[str, str]) -> None:
    reply = api.post("/api/dtmsvr/submit", content=saga(gid), headers=headers)
    assert reply.status_code == 200, reply.text
    assert api.post("/api/dtmsvr/newGid", headers=headers).status_code == 200


def test_an_empty_post_without_a_type_is_served(api: httpx.Client) -> None:
    assert api.post("/api/dtmsvr/newGid").status_code == 200
    assert api.post("/api/dtmsvr/resetCronTime").status_code == 200
    assert api.post("/api/ping", headers={"Content-Type": "text/plain"}).status_code == 200  # a health check


@pytest.mark.parametrize(
    ("method", "path"),
    [("OPTIONS", "/api/dtmsvr/submit"), ("OPTIONS", "/api/json-rpc"), ("GET", "/api/dtmsvr/newGid")],
)
def test_no_cors_header_is_sent(api: httpx.Client, method: str, path: str) -> None:
    headers = {
        "Origin": "http://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    reply = api.request(method, path, headers=headers)
    assert not [name for name in reply.headers if name.lower().startswith("access-control-")]
    if method == "OPTIONS":
        assert reply.status_code == 405  # no preflight is ever answered
