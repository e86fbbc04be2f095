"""The SDK without a coordinator: the exact bodies it sends (DTM's field names, omitted empty options, the
concurrent saga's custom_data, the msg delay on submit only), the Authorization header for a Bearer token and
for Basic, branch replies mapped by DTM's rule, sub-branch ids, the public names, and the Starlette / FastAPI
glue (query parsing, 200 / 409 / 425 replies)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import fastdtm_client
import httpx
import pytest
from fastapi import Depends, FastAPI
from fastdtm_client import (
    BranchError,
    BranchInfo,
    DtmClient,
    DtmError,
    Failure,
    Msg,
    Ongoing,
    Saga,
    Tcc,
    TransOptions,
)
from fastdtm_client.options import BranchIdGenerator
from fastdtm_client.starlette import SUCCESS_REPLY, branch_endpoint, branch_info, exception_handlers
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .harness import serve

Sent = list[tuple[str, str, dict[str, str], Any]]


def recording_app(sent: Sent) -> Starlette:
    """Answers as a coordinator and as branches would, recording every request: /newGid a gid, a path ending in
    /refuse 409 FAILURE, /status/<n>?body=... that status and body, anything else 200 SUCCESS."""

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        path = request.url.path
        sent.append((request.method, path, dict(request.headers), json.loads(raw) if raw else None))
        if path.endswith("/newGid"):
            return JSONResponse({"gid": "g1", "dtm_result": "SUCCESS"})
        if path.endswith("/refuse"):
            return JSONResponse({"dtm_result": "FAILURE", "message": "no"}, status_code=409)
        if path.startswith("/status/"):
            return PlainTextResponse(request.query_params.get("body", ""), status_code=int(path.rsplit("/", 1)[1]))
        return JSONResponse({"dtm_result": "SUCCESS"})

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Sent]]:
    sent: Sent = []
    async with serve(recording_app(sent)) as base:
        yield base, sent


@pytest.fixture
async def recorded(server: tuple[str, Sent]) -> AsyncIterator[tuple[DtmClient, str, Sent]]:
    base, sent = server
    async with DtmClient(f"{base}/api/dtmsvr", auth="tok-123") as client:
        yield client, base, sent


async def test_saga_body(recorded: tuple[DtmClient, str, Sent]) -> None:
    client, _base, sent = recorded
    options = TransOptions(wait_result=True, timeout_to_fail=60, retry_limit=2, branch_headers={"h": "v"})
    saga = Saga(client, "g1", options=options, concurrent=True).add("http://a/out", "http://a/outR", {"amount": 30})
    await saga.add("http://a/in", "http://a/inR", b'{"raw":1}').add_branch_order(1, [0]).submit()
    method, path, headers, body = sent[0]
    assert (method, path, headers["authorization"]) == ("POST", "/api/dtmsvr/submit", "Bearer tok-123")
    assert body == {
        "gid": "g1",
        "trans_type": "saga",
        "protocol": "http",
        "wait_result": True,
        "timeout_to_fail": 60,
        "retry_limit": 2,
        "branch_headers": {"h": "v"},
        "concurrent": False,
        "steps": [
            {"action": "http://a/out", "compensate": "http://a/outR"},
            {"action": "http://a/in", "compensate": "http://a/inR"},
        ],
        "payloads": ['{"amount":30}', '{"raw":1}'],
        "custom_data": '{"orders": {"1": [0]}, "concurrent": true}',
    }


async def test_msg_bodies(recorded: tuple[DtmClient, str, Sent]) -> None:
    client, _base, sent = recorded
    msg = Msg(client, "g1", delay=5, concurrent=True).add("http://a/in", {"amount": 1}).add_topic("orders", {})
    await msg.prepare("http://a/qp")
    await msg.submit()
    prepare, submit = sent[0][3], sent[1][3]
    assert prepare["query_prepared"] == "http://a/qp" and "custom_data" not in prepare
    assert prepare["steps"] == [{"action": "http://a/in"}, {"action": "topic://orders"}]
    assert prepare["concurrent"] is True
    assert json.loads(submit["custom_data"]) == {"delay": 5}


async def test_tcc_registers_then_tries(recorded: tuple[DtmClient, str, Sent]) -> None:
    client, b, sent = recorded
    with pytest.raises(Failure):
        async with Tcc(client, "g1") as tcc:
            await tcc.call_branch({"amount": 1}, f"{b}/try", "http://b/confirm", "http://b/cancel")
            await tcc.call_branch({"amount": 1}, f"{b}/refuse", "http://b/confirm", "http://b/cancel")
    paths = [path for _method, path, _headers, _body in sent]
    assert paths == [
        "/api/dtmsvr/prepare",
        "/api/dtmsvr/registerBranch",
        "/try",
        "/api/dtmsvr/registerBranch",
        "/refuse",
        "/api/dtmsvr/abort",
    ]
    assert sent[1][3] == {
        "gid": "g1",
        "trans_type": "tcc",
        "branch_id": "01",
        "data": '{"amount":1}',
        "confirm": "http://b/confirm",
        "cancel": "http://b/cancel",
    }
    assert "no" in sent[5][3]["rollback_reason"]


async def test_basic_auth_and_errors(server: tuple[str, Sent]) -> None:
    base, sent = server
    async with DtmClient(f"{base}/status/500", auth=("app", "secret")) as client:
        with pytest.raises(DtmError) as raised:
            await client.call("x", {})
    assert sent[0][2]["authorization"] == "Basic YXBwOnNlY3JldA=="
    assert raised.value.status == 500 and not raised.value.is_failure


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (425, "", Ongoing),
        (200, '{"dtm_result":"ONGOING"}', Ongoing),
        (409, "", Failure),
        (200, '{"dtm_result":"FAILURE"}', Failure),
        (500, "", BranchError),
        (201, "", BranchError),
    ],
)
async def test_branch_reply_rule(
    recorded: tuple[DtmClient, str, Sent], status: int, body: str, expected: type[Exception]
) -> None:
    client, base, _sent = recorded
    with pytest.raises(expected):
        await client.call_branch("POST", f"{base}/status/{status}", query={"body": body}, payload="{}")


def test_sub_branch_ids() -> None:
    ids = BranchIdGenerator("02")
    assert [ids.next(), ids.next()] == ["0201", "0202"]
    top = BranchIdGenerator()
    assert [top.next() for _ in range(99)][-1] == "99"
    with pytest.raises(fastdtm_client.DtmClientError):
        top.next()


def test_public_names() -> None:
    assert fastdtm_client.__all__ == sorted(fastdtm_client.__all__)
    assert all(hasattr(fastdtm_client, name) for name in fastdtm_client.__all__)


def test_branch_info_from_query() -> None:
    info = BranchInfo.from_query({"gid": "g;1\n", "trans_type": "tcc", "branch_id": "01", "op": "try", "dtm": "d"})
    assert (info.gid, info.dtm, info.phase2_url) == ("g1", "d", "")
    with pytest.raises(fastdtm_client.InvalidBranchQuery):
        BranchInfo.from_query({"gid": "g"})


async def outcome(branch: BranchInfo, request: Request) -> None:
    wanted = request.query_params.get("want")
    if wanted == "failure":
        raise Failure("refused")
    if wanted == "ongoing":
        raise Ongoing("later")
    if wanted == "error":
        raise RuntimeError("bug")


def fastapi_app() -> FastAPI:
    app = FastAPI(exception_handlers=exception_handlers())

    @app.post("/branch")
    async def branch(request: Request, info: Annotated[BranchInfo, Depends(branch_info)]) -> dict[str, str]:
        await outcome(info, request)
        return dict(SUCCESS_REPLY)

    return app


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_glue_replies(framework: str) -> None:
    app: Any = (
        fastapi_app()
        if framework == "fastapi"
        else Starlette(routes=[Route("/branch", branch_endpoint(outcome), methods=["POST"])])
    )
    query = "gid=g1&trans_type=saga&branch_id=01&op=action"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        ok = await http.post(f"/branch?{query}")
        failure = await http.post(f"/branch?{query}&want=failure")
        ongoing = await http.post(f"/branch?{query}&want=ongoing")
        missing = await http.post("/branch?gid=g1")
    assert (ok.status_code, ok.json()) == (200, {"dtm_result": "SUCCESS"})
    assert (failure.status_code, failure.json()["dtm_result"]) == (409, "FAILURE")
    assert (ongoing.status_code, ongoing.json()["dtm_result"]) == (425, "ONGOING")
    assert missing.status_code == 400
