"""Issue 12's hostile requests, one test per item, on every store: each gets a clear 4xx (never a 5xx) and
changes nothing, and nothing stored afterwards makes a read fail.

Item 1: a request of another trans_type than the gid's never touches that transaction. Item 2: numeric options
and times within documented ranges (docs/compatibility.md, "Limits"). Item 3: only ASCII digits are numbers.
Item 4: a cursor the server did not issue is a 400. Item 5: JSON-RPC answers stay JSON-RPC errors. Item 6:
branch_headers the branch client could not send are refused at submit. Item 7: a msg delay that could never be
scheduled is refused. Item 8: identical submits at once each get one outcome, never a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fastdtm.models import OPTION_LIMITS
from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode, query, wait_status


@pytest.fixture
def client(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.dtm, timeout=10) as c:
        yield c


def saga(busi: BusiServer, gid: str, **fields: Any) -> dict[str, Any]:
    step = {"action": busi.url("/Action"), "compensate": busi.url("/Compensate")}
    return {"gid": gid, "trans_type": "saga", "steps": [step], "payloads": ["{}"], **fields}


def refused(reply: httpx.Response, status: int, words: str) -> None:
    assert reply.status_code == status, reply.text
    assert words in reply.json()["message"], reply.text


def tcc_with_a_branch(client: httpx.Client, busi: BusiServer, gid: str) -> None:
    assert client.post("/prepare", json={"gid": gid, "trans_type": "tcc"}).status_code == 200
    branch = {
        "gid": gid,
        "trans_type": "tcc",
        "branch_id": "01",
        "confirm": busi.url("/Confirm"),
        "cancel": busi.url("/Cancel"),
        "data": "{}",
    }
    assert client.post("/registerBranch", json=branch).status_code == 200


# ----------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("trans_type", ["tcc", "xa"])
def test_a_workflow_verdict_cannot_finish_a_tcc_or_xa(
    node: FastdtmNode, client: httpx.Client, busi: BusiServer, trans_type: str
) -> None:
    gid = f"type-wf-{trans_type}"
    assert client.post("/prepare", json={"gid": gid, "trans_type": trans_type}).status_code == 200
    before = query(node, gid)

    verdict = {"gid": gid, "trans_type": "workflow", "req_extra": {"status": "succeed"}}
    refused(client.post("/submit", json=verdict), 409, f"is a {trans_type}, not a workflow")

    assert query(node, gid) == before


def test_no_request_of_another_type_touches_a_prepared_tcc(
    node: FastdtmNode, client: httpx.Client, busi: BusiServer
) -> None:
    gid = "type-tcc"
    tcc_with_a_branch(client, busi, gid)
    before = query(node, gid)

    refused(client.post("/submit", json=saga(busi, gid)), 409, "is a tcc, not a saga")
    refused(client.post("/submit", json={"gid": gid, "trans_type": "xa"}), 409, "is a tcc, not a xa")
    refused(client.post("/submit", json={"gid": gid, "trans_type": "msg", "steps": []}), 409, "is a tcc, not a msg")
    refused(client.post("/prepare", json={"gid": gid, "trans_type": "xa"}), 409, "is a tcc, not a xa")
    refused(client.post("/abort", json={"gid": gid, "trans_type": "xa"}), 409, "is a tcc, not a xa")
    branch = {"gid": gid, "trans_type": "xa", "branch_id": "02", "url": busi.url("/Xa"), "data": "{}"}
    refused(client.post("/registerBranch", json=branch), 409, "is a tcc, not a xa")

    assert query(node, gid) == before
    assert busi.calls() == []
    # Its own type still works: the second phase runs.
    assert client.post("/submit", json={"gid": gid, "trans_type": "tcc"}).status_code == 200
    busi.wait_calls("/Confirm", 1)


# ----------------------------------------------------------------------------- items 2 and 7


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        *[({name: limit + 1}, f"field '{name}' must be within 0..{limit}") for name, limit in OPTION_LIMITS.items()],
        ({"retry_interval": 10**12}, "field 'retry_interval' must be within"),
        ({"retry_interval": 1e300}, "field 'retry_interval' must be"),
        ({"timeout_to_fail": 1e308}, "field 'timeout_to_fail' must be"),
        ({"request_timeout": 1e20}, "field 'request_timeout' must be"),
        ({"retry_limit": 2**63 - 1}, "field 'retry_limit' must be within"),
    ],
)
def test_numeric_options_beyond_their_range_are_refused(
    node: FastdtmNode, client: httpx.Client, busi: BusiServer, fields: dict[str, Any], words: str
) -> None:
    gid = f"range-{next(iter(fields))}-{abs(hash(str(fields))) % 10**6}"
    refused(client.post("/submit", json=saga(busi, gid, **fields)), 422, words)
    assert query(node, gid)["transaction"] is None


@pytest.mark.parametrize("delay", [1e20, 1e308, 365 * 86_400 + 1, -1])
def test_a_msg_delay_that_could_never_be_scheduled_is_refused(
    node: FastdtmNode, client: httpx.Client, busi: BusiServer, delay: float
) -> None:
    gid = f"delay-{abs(hash(delay)) % 10**6}"
    body = {
        "gid": gid,
        "trans_type": "msg",
        "steps": [{"action": busi.url("/Deliver")}],
        "payloads": ["{}"],
        "query_prepared": busi.url("/Query"),
    }
    assert client.post("/prepare", json=body).status_code == 200
    refused(client.post("/submit", json={**body, "custom_data": f'{{"delay":{delay}}}'}), 422, "custom_data.delay")
    # Nothing changed: still prepared, still readable, by /query and /all.
    assert query(node, gid)["transaction"]["status"] == "prepared"
    assert client.get("/all", params={"limit": 1000}).status_code == 200


# ----------------------------------------------------------------------------- items 3 and 4


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/all", {"limit": "²"}),
        ("/all", {"createTimeStart": "²"}),
        ("/all", {"createTimeEnd": "١٢"}),
        ("/all", {"createTimeStart": str(10**20)}),
        ("/resetCronTime", {"limit": "²"}),
        ("/resetCronTime", {"timeout": str(10**15)}),
    ],
)
def test_numbers_are_ascii_digits_within_range(client: httpx.Client, path: str, params: dict[str, str]) -> None:
    refused(client.get(path, params=params), 422, "must be an integer within")


def test_orders_keys_are_ascii_digits(client: httpx.Client, busi: BusiServer) -> None:
    body = saga(busi, "orders-sup", custom_data='{"orders": {"²": [0]}}')
    refused(client.post("/submit", json=body), 422, "custom_data.orders has step '²'")


@pytest.mark.parametrize("position", ["-300:0:x", "garbage", "99999:0:g", "0:-5:g", "0:1:", "²:0:g", "0:1:a;b"])
def test_a_cursor_the_server_did_not_issue_is_a_400(client: httpx.Client, position: str) -> None:
    refused(client.get("/all", params={"position": position}), 400, "is not a cursor this server returned")


# ----------------------------------------------------------------------------- item 5


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"jsonrpc": "2.0", "id": "1", "method": [], "params": {}}, -32600),
        ({"jsonrpc": "2.0", "id": "1", "method": {}, "params": {}}, -32600),
        ({"jsonrpc": "2.0", "id": "1", "method": None, "params": {}}, -32600),
        ([{"jsonrpc": "2.0", "id": "1", "method": "newGid"}], -32600),
        (7, -32600),
    ],
)
def test_json_rpc_answers_stay_json_rpc_errors(node: FastdtmNode, body: Any, code: int) -> None:
    reply = httpx.post(f"{node.base}/api/json-rpc", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["error"]["code"] == code, reply.text


def test_json_rpc_bad_json_is_a_parse_error(node: FastdtmNode) -> None:
    reply = httpx.post(f"{node.base}/api/json-rpc", content=b'{"jsonrpc": "2.0",', timeout=10)
    assert reply.json()["error"]["code"] == -32700


# ----------------------------------------------------------------------------- item 6


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Token": "a\r\nX-Evil: 1"},
        {"X-Token": "a\nb"},
        {"": "v"},
        {"X Token": "v"},
        {"X-Token": "nul\x00here"},
        {"X-Tok:en": "v"},
    ],
)
def test_branch_headers_the_client_cannot_send_are_refused_at_submit(
    node: FastdtmNode, client: httpx.Client, busi: BusiServer, headers: dict[str, str]
) -> None:
    gid = f"headers-{abs(hash(str(headers))) % 10**6}"
    refused(client.post("/submit", json=saga(busi, gid, branch_headers=headers)), 422, "branch_headers")
    assert query(node, gid)["transaction"] is None


# ----------------------------------------------------------------------------- item 8


@pytest.mark.parametrize("wait_result", [False, True])
def test_identical_submits_at_once_each_get_one_outcome(node: FastdtmNode, busi: BusiServer, wait_result: bool) -> None:
    gid = f"twins-{wait_result}"
    body = saga(busi, gid, wait_result=wait_result)

    async def all_at_once() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=node.dtm, timeout=20) as client:
            return await asyncio.gather(*(client.post("/submit", json=body) for _ in range(40)))

    replies = asyncio.run(all_at_once())

    statuses = sorted({reply.status_code for reply in replies})
    # 200; 425 for a wait_result submit whose twin's round was still running; 409 for one that came after
    # the saga had finished (DTM's answer to submitting a finished transaction). Never a 500 nor a lie.
    assert set(statuses) <= {200, 409, 425}, [r.text for r in replies if r.status_code not in (200, 409, 425)]
    assert all("current status 'succeed'" in r.text for r in replies if r.status_code == 409)
    assert 200 in statuses
    wait_status(node, gid, {"succeed"})
    # One transaction, driven by one round at a time: each branch called once here (no failure, no retry).
    assert len(busi.calls("/Action")) == 1
