"""The branch-URL policy at the door: with the default deny list (link-local, unspecified), every URL a client
hands over (saga steps, a msg's steps and query_prepared, a workflow's query_prepared, TCC and XA branches
registered, a topic subscriber) is refused with 422 when its host is an address in a denied range, however it
is spelled, and nothing is written. Loopback stays allowed. The policy does not depend on the store: one
store (the embedded one) is enough."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import fresh_store_url
from tests.support.node import FastdtmNode, query

#: 169.254.169.254 (the cloud metadata address), as a client might spell it.
METADATA = [
    "http://169.254.169.254/latest/meta-data",
    "http://2852039166/latest/meta-data",
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",
    "http://[::ffff:169.254.169.254]/",
    "http://169.254.43518/",
]
GOOD = "http://127.0.0.1:9/ok"


@pytest.fixture(scope="module")
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return fresh_store_url(request, "sqlite", Path(tmp_path_factory.mktemp("store")))


@pytest.fixture
def client(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.dtm, timeout=10) as c:
        yield c


def assert_refused(reply: httpx.Response, *words: str) -> None:
    assert reply.status_code == 422, reply.text
    message = reply.json()["message"]
    assert all(word in message for word in words), message


@pytest.mark.parametrize("endpoint", ["submit", "prepare"])
@pytest.mark.parametrize("url", METADATA)
def test_a_saga_step_in_a_denied_range_is_refused_and_nothing_written(
    client: httpx.Client, node: FastdtmNode, endpoint: str, url: str
) -> None:
    gid = f"deny-{endpoint}-{METADATA.index(url)}"
    body = {"gid": gid, "trans_type": "saga", "steps": [{"action": GOOD, "compensate": url}], "payloads": ["{}"]}
    reply = client.post(f"/{endpoint}", json=body)
    assert_refused(
        reply, "the URL of branch 01 (compensate)", f"'{url}' is refused", "in 169.254.0.0/16 on --branch-deny"
    )
    assert query(node, gid)["transaction"] is None


@pytest.mark.parametrize(
    ("step", "words"),
    [
        ({"action": "http://0.0.0.0:8080/a"}, "0.0.0.0 is in 0.0.0.0/32"),
        ({"action": "http://[::]:8080/a"}, ":: is in ::/128"),
        ({"action": "http://[fe80::1]/a"}, "fe80::1 is in fe80::/10"),
    ],
)
def test_unspecified_and_ipv6_link_local_are_refused(
    client: httpx.Client, node: FastdtmNode, step: dict[str, str], words: str
) -> None:
    gid = f"deny-unspecified-{len(words)}"
    reply = client.post("/submit", json={"gid": gid, "trans_type": "msg", "steps": [step], "payloads": ["{}"]})
    assert_refused(reply, words)
    assert query(node, gid)["transaction"] is None


@pytest.mark.parametrize("trans_type", ["msg", "workflow"])
def test_a_denied_query_prepared_is_refused(client: httpx.Client, node: FastdtmNode, trans_type: str) -> None:
    gid = f"deny-qp-{trans_type}"
    body: dict[str, Any] = {"gid": gid, "trans_type": trans_type, "query_prepared": METADATA[1]}
    if trans_type == "msg":
        body |= {"steps": [{"action": GOOD}], "payloads": ["{}"]}
    else:
        body |= {"custom_data": '{"name": "wf", "data": ""}'}
    assert_refused(client.post("/prepare", json=body), f"query_prepared '{METADATA[1]}' is refused")
    assert query(node, gid)["transaction"] is None


@pytest.mark.parametrize(
    ("trans_type", "fields", "words"),
    [
        ("tcc", {"confirm": GOOD, "cancel": METADATA[2], "data": "{}"}, "the URL of branch 01 (cancel)"),
        ("tcc", {"confirm": METADATA[3], "cancel": GOOD, "data": "{}"}, "the URL of branch 01 (confirm)"),
        ("xa", {"url": METADATA[4]}, "the URL of branch 01 (rollback)"),
    ],
)
def test_a_denied_registered_branch_is_refused_and_nothing_appended(
    client: httpx.Client, node: FastdtmNode, trans_type: str, fields: dict[str, str], words: str
) -> None:
    gid = f"deny-register-{trans_type}-{len(fields)}-{words[-8:-1]}"
    assert client.post("/prepare", json={"gid": gid, "trans_type": trans_type}).status_code == 200
    reply = client.post("/registerBranch", json={"gid": gid, "trans_type": trans_type, "branch_id": "01", **fields})
    assert_refused(reply, words, "in 169.254.0.0/16 on --branch-deny")
    stored = query(node, gid)
    assert stored["transaction"]["status"] == "prepared"
    assert stored["branches"] == []


def test_a_denied_subscriber_is_refused_and_the_topic_not_created(client: httpx.Client) -> None:
    reply = client.get("/subscribe", params={"topic": "deny-topic", "url": METADATA[5], "remark": ""})
    assert_refused(reply, f"url '{METADATA[5]}' is refused", "169.254.43518 (169.254.169.254) is in 169.254.0.0/16")
    assert client.get("/queryKV", params={"cat": "topics", "key": "deny-topic"}).json()["kv"] in (None, [])


def test_loopback_and_empty_urls_stay_allowed(client: httpx.Client, node: FastdtmNode) -> None:
    steps = [{"action": "", "compensate": ""}, {"action": "http://localhost:9/a", "compensate": "http://[::1]:9/c"}]
    body = {"gid": "allow-loopback", "trans_type": "saga", "steps": steps, "payloads": ["{}", "{}"]}
    assert client.post("/prepare", json=body).status_code == 200
    assert query(node, "allow-loopback")["transaction"]["status"] == "prepared"
