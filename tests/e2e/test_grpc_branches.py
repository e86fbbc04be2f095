"""gRPC branches end to end: a real `fastdtm serve` node, driven through its gRPC API (`dtmgimp.Dtm` on
`node.grpc`, with the generated messages and a grpc.aio client, as a DTM SDK speaks it), calls a real gRPC branch
server (`tests/support/grpc_busi.py`: any method, bytes in and out, scripted per method).

Proves, per transaction type: a saga succeeds (`wait_result`) or rolls back (ABORTED -> compensations in reverse,
`failed`), with `/query` showing protocol grpc and each branch's exact bytes as bin_data; UNAVAILABLE is retried,
FAILED_PRECONDITION and ABORTED "ONGOING" are ONGOING (retried); a msg is delivered after prepare and submit, and a
prepared msg past its timeout is checked back over gRPC (OK -> delivered, ABORTED -> failed, FAILED_PRECONDITION ->
asked again); a branch that never answers is cut at the request timeout and called again; TCC confirms or
cancels with the registered payload; XA commits or rolls back with `dtm-phase2_url`; a workflow left prepared is
resumed by the cron through `workflow.Workflow/Execute` with its input wrapped in WorkflowData; HTTP and gRPC
sagas run side by side on one node; a gRPC transaction's http:// branch is called over HTTP with its raw bytes; an
HTTP msg reaches a topic's gRPC subscriber, and is refused at submit when its branch headers cannot be gRPC
metadata; a branch body is the same bytes whichever API (HTTP or gRPC) registered it into whichever transaction.
The common cases run on every store (`store_url`); the retry, check-back and mixed-API ones on standalone Redis.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from grpc import aio

from fastdtm.proto import dtmgimp_pb2 as pb
from tests.conftest import fresh_store_url
from tests.support.busi import BusiServer
from tests.support.grpc_busi import WORKFLOW_EXECUTE, GrpcBusi, GrpcCall, GrpcReply
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

OUT, OUT_BACK = "/busi.Busi/TransOut", "/busi.Busi/TransOutRevert"
IN, IN_BACK = "/busi.Busi/TransIn", "/busi.Busi/TransInRevert"
#: Serialized request messages as an SDK would send them; zero bytes and bytes that are not UTF-8 included.
PAYLOAD_OUT = b"\x08\x1e\x12\x00\xff\x00"
PAYLOAD_IN = b"\x00\x01\x02\x80\xfe\xff" * 30
FINISHED = ("succeed", "failed")
WAIT = 15.0


@pytest.fixture
async def branches() -> AsyncIterator[GrpcBusi]:
    async with GrpcBusi() as server:
        yield server
    assert not server.errors


@pytest.fixture
def redis_node(node_factory: NodeFactory, request: pytest.FixtureRequest, tmp_path: Path) -> FastdtmNode:
    """A node on standalone Redis, for scenarios that need only one store."""
    return node_factory(fresh_store_url(request, "redis", tmp_path))


class Dtm:
    """DTM's gRPC API of one node, called as the SDKs call it."""

    def __init__(self, channel: aio.Channel) -> None:
        self.channel = channel

    async def call(self, method: str, request: Message) -> bytes:
        rpc: aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(f"/dtmgimp.Dtm/{method}")
        reply: bytes = await rpc(request.SerializeToString(), timeout=WAIT)
        return reply

    async def new_gid(self) -> str:
        return str(pb.DtmGidReply.FromString(await self.call("NewGid", empty_pb2.Empty())).Gid)

    async def submit(self, request: pb.DtmRequest) -> None:
        await self.call("Submit", request)

    async def prepare(self, request: pb.DtmRequest) -> None:
        await self.call("Prepare", request)

    async def abort(self, request: pb.DtmRequest) -> None:
        await self.call("Abort", request)

    async def register_branch(self, request: pb.DtmBranchRequest) -> None:
        await self.call("RegisterBranch", request)

    async def prepare_workflow(self, request: pb.DtmRequest) -> pb.DtmProgressesReply:
        return pb.DtmProgressesReply.FromString(await self.call("PrepareWorkflow", request))


@pytest.fixture
async def dtm(node: FastdtmNode) -> AsyncIterator[Dtm]:
    async with aio.insecure_channel(node.grpc) as channel:
        yield Dtm(channel)


@pytest.fixture
async def redis_dtm(redis_node: FastdtmNode) -> AsyncIterator[Dtm]:
    async with aio.insecure_channel(redis_node.grpc) as channel:
        yield Dtm(channel)


async def finished(node: FastdtmNode, gid: str, statuses: Collection[str] = FINISHED) -> dict[str, Any]:
    """/query once the transaction's status is one of `statuses` (bounded)."""
    return await asyncio.to_thread(wait_status, node, gid, statuses, WAIT)


def saga(gid: str, branches: GrpcBusi, *, wait_result: bool = False) -> pb.DtmRequest:
    steps = [
        {"action": branches.url(OUT), "compensate": branches.url(OUT_BACK)},
        {"action": branches.url(IN), "compensate": branches.url(IN_BACK)},
    ]
    return pb.DtmRequest(
        Gid=gid,
        TransType="saga",
        Steps=json.dumps(steps),
        BinPayloads=[PAYLOAD_OUT, PAYLOAD_IN],
        TransOptions=pb.DtmTransOptions(WaitResult=wait_result),
    )


def trail(calls: list[GrpcCall]) -> list[tuple[str, str, str]]:
    """(method, dtm-branch_id, dtm-op) of each call, in order."""
    return [(c.method, str(c.meta("dtm-branch_id")), str(c.meta("dtm-op"))) for c in calls]


def bin_data(reply: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(b.get("bin_data", "")) for b in reply["branches"]]


# --- saga -----------------------------------------------------------------------------------------------------


async def test_saga_succeeds(node: FastdtmNode, dtm: Dtm, branches: GrpcBusi) -> None:
    gid = await dtm.new_gid()
    await dtm.submit(saga(gid, branches, wait_result=True))  # returns once the saga has succeeded

    reply = query(node, gid)
    assert reply["transaction"]["status"] == "succeed"
    assert reply["transaction"]["protocol"] == "grpc"
    assert [(b["branch_id"], b["op"], b["status"]) for b in reply["branches"]] == [
        ("01", "compensate", "prepared"),
        ("01", "action", "succeed"),
        ("02", "compensate", "prepared"),
        ("02", "action", "succeed"),
    ]
    assert [b["bin_data"] for b in reply["branches"]] == [
        base64.b64encode(p).decode() for p in (PAYLOAD_OUT, PAYLOAD_OUT, PAYLOAD_IN, PAYLOAD_IN)
    ]
    calls = branches.of(gid)
    assert trail(calls) == [(OUT, "01", "action"), (IN, "02", "action")]
    assert [c.payload for c in calls] == [PAYLOAD_OUT, PAYLOAD_IN]
    assert calls[0].dtm() == {
        "dtm-gid": gid,
        "dtm-trans_type": "saga",
        "dtm-branch_id": "01",
        "dtm-op": "action",
        "dtm-dtm": "",
    }


async def test_saga_rolls_back_in_reverse(node: FastdtmNode, dtm: Dtm, branches: GrpcBusi) -> None:
    branches.script(IN, [(grpc.StatusCode.ABORTED, "no money")])
    gid = await dtm.new_gid()
    with pytest.raises(aio.AioRpcError) as caught:
        await dtm.submit(saga(gid, branches, wait_result=True))
    assert caught.value.code() is grpc.StatusCode.ABORTED
    assert "no money" in (caught.value.details() or "")

    reply = await finished(node, gid)
    trans = reply["transaction"]
    assert (trans["status"], trans["protocol"]) == ("failed", "grpc")
    assert (
        trans["rollback_reason"]
        == f"url:{branches.url(IN)} return failed: rpc error: code = Aborted desc = no money FAILURE"
    )
    assert [b["status"] for b in reply["branches"]] == ["succeed", "succeed", "succeed", "failed"]
    assert bin_data(reply) == [PAYLOAD_OUT, PAYLOAD_OUT, PAYLOAD_IN, PAYLOAD_IN]
    calls = branches.of(gid)
    assert trail(calls) == [
        (OUT, "01", "action"),
        (IN, "02", "action"),
        (IN_BACK, "02", "compensate"),
        (OUT_BACK, "01", "compensate"),
    ]
    assert [c.payload for c in calls] == [PAYLOAD_OUT, PAYLOAD_IN, PAYLOAD_IN, PAYLOAD_OUT]


@pytest.mark.parametrize(
    "first",
    [
        GrpcReply(grpc.StatusCode.UNAVAILABLE, "starting up"),
        GrpcReply(grpc.StatusCode.FAILED_PRECONDITION, "ONGOING"),
        GrpcReply(grpc.StatusCode.ABORTED, "ONGOING"),
    ],
    ids=["unavailable", "failed-precondition", "aborted-ongoing"],
)
async def test_a_retried_status_is_called_again_until_ok(
    redis_node: FastdtmNode, redis_dtm: Dtm, branches: GrpcBusi, first: GrpcReply
) -> None:
    branches.script(IN, [first, first, GrpcReply()])
    gid = await redis_dtm.new_gid()
    await redis_dtm.submit(saga(gid, branches))

    reply = await finished(redis_node, gid)
    assert reply["transaction"]["status"] == "succeed"
    assert trail(branches.of(gid)) == [
        (OUT, "01", "action"),
        (IN, "02", "action"),
        (IN, "02", "action"),
        (IN, "02", "action"),
    ]
    assert {c.payload for c in branches.calls(IN)} == {PAYLOAD_IN}


async def test_a_branch_that_never_answers_is_cut_at_the_request_timeout_and_retried(
    redis_node: FastdtmNode, redis_dtm: Dtm, branches: GrpcBusi
) -> None:
    branches.script(IN, [GrpcReply(delay=float("inf")), GrpcReply()])
    gid = await redis_dtm.new_gid()
    request = saga(gid, branches)
    request.TransOptions.RequestTimeout = 1  # the call's deadline, in seconds
    await redis_dtm.submit(request)

    reply = await finished(redis_node, gid)
    assert reply["transaction"]["status"] == "succeed"
    first, second = branches.calls(IN)
    assert second.at - first.at >= 1.0 - 0.1  # the first was given its whole deadline


async def test_http_and_grpc_sagas_side_by_side(
    node: FastdtmNode, dtm: Dtm, branches: GrpcBusi, busi: BusiServer
) -> None:
    grpc_gid = await dtm.new_gid()
    http_gid = grpc_gid + "-http"
    http_steps = [{"action": busi.url("/TransOut"), "compensate": busi.url("/TransOutRevert")}]
    http_saga = {"gid": http_gid, "trans_type": "saga", "steps": http_steps, "payloads": ['{"amount":30}']}
    async with httpx.AsyncClient(timeout=WAIT) as client:
        submitted, _ = await asyncio.gather(
            client.post(f"{node.dtm}/submit", json=http_saga), dtm.submit(saga(grpc_gid, branches))
        )
    assert submitted.status_code == 200, submitted.text

    grpc_reply, http_reply = await finished(node, grpc_gid), await finished(node, http_gid)
    assert (grpc_reply["transaction"]["status"], grpc_reply["transaction"]["protocol"]) == ("succeed", "grpc")
    assert (http_reply["transaction"]["status"], http_reply["transaction"]["protocol"]) == ("succeed", "http")
    assert [c.payload for c in branches.of(grpc_gid)] == [PAYLOAD_OUT, PAYLOAD_IN]
    (call,) = busi.calls("/TransOut")
    assert (call.body, call.query["gid"]) == (b'{"amount":30}', http_gid)
    assert [c for c in branches.calls() if c.meta("dtm-gid") == http_gid] == []


async def test_an_http_branch_of_a_grpc_transaction_gets_the_raw_bytes(
    node: FastdtmNode, dtm: Dtm, branches: GrpcBusi, busi: BusiServer
) -> None:
    gid = await dtm.new_gid()
    steps = [{"action": busi.url("/TransOut"), "compensate": busi.url("/TransOutRevert")}, {"action": branches.url(IN)}]
    await dtm.submit(
        pb.DtmRequest(Gid=gid, TransType="saga", Steps=json.dumps(steps), BinPayloads=[PAYLOAD_OUT, PAYLOAD_IN])
    )

    reply = await finished(node, gid)
    assert reply["transaction"]["status"] == "succeed"
    (call,) = busi.calls("/TransOut")
    assert (call.method, call.body) == ("POST", PAYLOAD_OUT)
    assert call.query == {"gid": gid, "trans_type": "saga", "branch_id": "01", "op": "action"}
    assert [c.payload for c in branches.of(gid)] == [PAYLOAD_IN]


# --- msg ------------------------------------------------------------------------------------------------------


def msg(gid: str, branches: GrpcBusi, query_prepared: str, timeout_to_fail: int = 0) -> pb.DtmRequest:
    steps = [{"action": branches.url(OUT)}, {"action": branches.url(IN)}]
    return pb.DtmRequest(
        Gid=gid,
        TransType="msg",
        Steps=json.dumps(steps),
        BinPayloads=[PAYLOAD_OUT, PAYLOAD_IN],
        QueryPrepared=query_prepared,
        TransOptions=pb.DtmTransOptions(TimeoutToFail=timeout_to_fail),
    )


async def test_msg_prepare_then_submit_delivers(node: FastdtmNode, dtm: Dtm, branches: GrpcBusi) -> None:
    gid = await dtm.new_gid()
    request = msg(gid, branches, branches.url("/busi.Busi/QueryPrepared"))
    await dtm.prepare(request)
    assert query(node, gid)["transaction"]["status"] == "prepared"
    await dtm.submit(request)

    reply = await finished(node, gid)
    assert (reply["transaction"]["status"], reply["transaction"]["protocol"]) == ("succeed", "grpc")
    calls = branches.of(gid)
    assert trail(calls) == [(OUT, "01", "action"), (IN, "02", "action")]
    assert [c.payload for c in calls] == [PAYLOAD_OUT, PAYLOAD_IN]
    assert {c.meta("dtm-trans_type") for c in calls} == {"msg"}
    assert bin_data(reply) == [PAYLOAD_OUT, PAYLOAD_IN]


async def test_a_prepared_msg_is_checked_back_over_grpc(
    redis_node: FastdtmNode, redis_dtm: Dtm, branches: GrpcBusi
) -> None:
    answers = {
        "/busi.Busi/QueryYes": [GrpcReply()],
        "/busi.Busi/QueryNo": [GrpcReply(grpc.StatusCode.ABORTED, "FAILURE")],
        "/busi.Busi/QueryLater": [GrpcReply(grpc.StatusCode.FAILED_PRECONDITION, "ONGOING"), GrpcReply()],
    }
    gids = {}
    for method, script in answers.items():
        branches.script(method, script)
        gids[method] = gid = await redis_dtm.new_gid()
        await redis_dtm.prepare(msg(gid, branches, branches.url(method), timeout_to_fail=1))

    yes, no, later = [await finished(redis_node, gids[m]) for m in answers]
    assert [r["transaction"]["status"] for r in (yes, no, later)] == ["succeed", "failed", "succeed"]
    for method, gid in gids.items():
        checks = [c for c in branches.of(gid) if c.method == method]
        assert checks, method
        assert {(c.meta("dtm-branch_id"), c.meta("dtm-op"), c.meta("dtm-trans_type"), c.payload) for c in checks} == {
            ("00", "msg", "msg", b"")
        }
    assert len(branches.calls("/busi.Busi/QueryLater")) == 2
    assert [c.payload for c in branches.of(gids["/busi.Busi/QueryYes"]) if c.method in (OUT, IN)] == [
        PAYLOAD_OUT,
        PAYLOAD_IN,
    ]
    assert [c for c in branches.of(gids["/busi.Busi/QueryNo"]) if c.method in (OUT, IN)] == []


# --- TCC and XA -----------------------------------------------------------------------------------------------


async def test_tcc_confirms_or_cancels_with_the_payload(node: FastdtmNode, dtm: Dtm, branches: GrpcBusi) -> None:
    payloads = {"01": PAYLOAD_OUT, "02": PAYLOAD_IN}
    gids = {}
    for end in ("submit", "abort"):
        gids[end] = gid = await dtm.new_gid()
        await dtm.prepare(pb.DtmRequest(Gid=gid, TransType="tcc"))
        for branch_id, payload in payloads.items():
            data = {
                "confirm": branches.url(f"/busi.Busi/Confirm{branch_id}"),
                "cancel": branches.url(f"/busi.Busi/Cancel{branch_id}"),
            }
            await dtm.register_branch(
                pb.DtmBranchRequest(
                    Gid=gid, TransType="tcc", BranchID=branch_id, Op="try", Data=data, BusiPayload=payload
                )
            )
        end_call = dtm.submit if end == "submit" else dtm.abort
        await end_call(pb.DtmRequest(Gid=gid, TransType="tcc"))

    confirmed, cancelled = await finished(node, gids["submit"]), await finished(node, gids["abort"])
    assert confirmed["transaction"]["status"] == "succeed"
    assert cancelled["transaction"]["status"] == "failed"
    # Phase two runs over the branches in reverse, as DTM's does.
    confirms = branches.of(gids["submit"])
    assert trail(confirms) == [("/busi.Busi/Confirm02", "02", "confirm"), ("/busi.Busi/Confirm01", "01", "confirm")]
    assert [c.payload for c in confirms] == [PAYLOAD_IN, PAYLOAD_OUT]
    cancels = branches.of(gids["abort"])
    assert trail(cancels) == [("/busi.Busi/Cancel02", "02", "cancel"), ("/busi.Busi/Cancel01", "01", "cancel")]
    assert [c.payload for c in cancels] == [PAYLOAD_IN, PAYLOAD_OUT]
    assert {c.meta("dtm-trans_type") for c in confirms + cancels} == {"tcc"}
    assert bin_data(confirmed) == [PAYLOAD_OUT, PAYLOAD_OUT, PAYLOAD_IN, PAYLOAD_IN]


async def test_xa_commits_or_rolls_back_with_the_phase2_url(node: FastdtmNode, dtm: Dtm, branches: GrpcBusi) -> None:
    phase2 = branches.url("/busi.Busi/XaNotify")
    gids = {}
    for end in ("submit", "abort"):
        gids[end] = gid = await dtm.new_gid()
        await dtm.prepare(pb.DtmRequest(Gid=gid, TransType="xa"))
        for branch_id, payload in (("01", PAYLOAD_OUT), ("02", PAYLOAD_IN)):
            await dtm.register_branch(
                pb.DtmBranchRequest(
                    Gid=gid, TransType="xa", BranchID=branch_id, Data={"url": phase2}, BusiPayload=payload
                )
            )
        end_call = dtm.submit if end == "submit" else dtm.abort
        await end_call(pb.DtmRequest(Gid=gid, TransType="xa"))

    assert (await finished(node, gids["submit"]))["transaction"]["status"] == "succeed"
    assert (await finished(node, gids["abort"]))["transaction"]["status"] == "failed"
    for end, op in (("submit", "commit"), ("abort", "rollback")):
        calls = branches.of(gids[end])
        assert trail(calls) == [("/busi.Busi/XaNotify", "01", op), ("/busi.Busi/XaNotify", "02", op)]
        assert {(c.meta("dtm-phase2_url"), c.meta("dtm-trans_type")) for c in calls} == {(phase2, "xa")}
        assert [c.payload for c in calls] == [PAYLOAD_OUT, PAYLOAD_IN]


# --- workflow -------------------------------------------------------------------------------------------------


async def test_a_prepared_workflow_is_resumed_through_execute(node: FastdtmNode, dtm: Dtm, branches: GrpcBusi) -> None:
    # Over 127 bytes, so the length is a two-byte varint; zero bytes and bytes that are not UTF-8 included.
    workflow_input = b"\x0a\x02\x00\xff" + bytes(range(256))
    gid = await dtm.new_gid()
    custom_data = json.dumps({"name": "transfer", "data": base64.b64encode(workflow_input).decode()})
    request = pb.DtmRequest(
        Gid=gid, TransType="workflow", CustomedData=custom_data, QueryPrepared=branches.url(WORKFLOW_EXECUTE)
    )
    progresses = await dtm.prepare_workflow(request)
    assert (progresses.Transaction.Status, list(progresses.Progresses)) == ("prepared", [])

    (execute, *_) = await branches.wait_calls(WORKFLOW_EXECUTE, 1, WAIT)
    # WorkflowData { bytes Data = 1; }: tag 0x0a, the length 260 as a varint (0x84 0x02), the input.
    assert execute.payload == b"\x0a\x84\x02" + workflow_input
    assert (execute.meta("dtm-gid"), execute.meta("dtm-trans_type")) == (gid, "workflow")
    assert (execute.meta("dtm-branch_id"), execute.meta("dtm-op")) == ("00", "transfer")

    # The resumed client records its step and finishes.
    step = {"op": "action", "status": "succeed"}  # the Go SDK's Data: DTM reads op and status from it
    await dtm.register_branch(
        pb.DtmBranchRequest(
            Gid=gid, TransType="workflow", BranchID="01", Op="action", Data=step, BusiPayload=b"\x00done"
        )
    )
    await dtm.submit(pb.DtmRequest(Gid=gid, TransType="workflow", ReqExtra={"status": "succeed"}))
    reply = await finished(node, gid)
    assert reply["transaction"]["status"] == "succeed"
    assert bin_data(reply) == [b"\x00done"]


# --- one transaction, both protocols ----------------------------------------------------------------------------


async def test_an_http_msg_reaches_a_grpc_topic_subscriber(
    redis_node: FastdtmNode, redis_dtm: Dtm, branches: GrpcBusi, busi: BusiServer
) -> None:
    await redis_dtm.call("Subscribe", pb.DtmTopicRequest(Topic="paid", URL=branches.url(IN)))
    async with httpx.AsyncClient(timeout=WAIT) as client:
        gid = "grpc-topic-msg"
        steps = [{"action": busi.url("/TransOut")}, {"action": "topic://paid"}]
        body = {"gid": gid, "trans_type": "msg", "steps": steps, "payloads": ['{"amount":30}', '{"amount":31}']}
        submitted = await client.post(f"{redis_node.dtm}/submit", json=body)
        assert submitted.status_code == 200, submitted.text

    reply = await finished(redis_node, gid)
    assert (reply["transaction"]["status"], reply["transaction"]["protocol"]) == ("succeed", "http")
    (call,) = branches.of(gid)
    assert (call.method, call.payload, call.meta("dtm-trans_type"), call.meta("dtm-branch_id")) == (
        IN,
        b'{"amount":31}',
        "msg",
        "02",
    )


async def test_headers_a_grpc_topic_subscriber_cannot_take_are_refused_at_submit(
    redis_node: FastdtmNode, redis_dtm: Dtm, branches: GrpcBusi
) -> None:
    """An HTTP msg's branch headers are checked as gRPC metadata too when a topic sends it to a gRPC method:
    as for a gRPC transaction (docs/compatibility.md), every call would fail, for ever."""
    await redis_dtm.call("Subscribe", pb.DtmTopicRequest(Topic="paid", URL=branches.url(IN)))
    async with httpx.AsyncClient(timeout=WAIT) as client:
        gid = "grpc-topic-bad-header"
        body = {
            "gid": gid,
            "trans_type": "msg",
            "steps": [{"action": "topic://paid"}],
            "payloads": ['{"amount":30}'],
            "branch_headers": {"X-Note": "caf\u00e9"},  # a valid HTTP header value, not valid gRPC metadata
        }
        submitted = await client.post(f"{redis_node.dtm}/submit", json=body)
    # Accepted, every round of it would fail (its node log: "round failed; the cron will resume it").
    assert submitted.status_code == 422, f"{submitted.status_code} {submitted.text}"


async def test_a_branch_registered_over_http_into_a_grpc_transaction_gets_its_bytes(
    redis_node: FastdtmNode, redis_dtm: Dtm, busi: BusiServer
) -> None:
    """DTM keeps a branch's body as bytes whichever API registered it: an HTTP registerBranch into a
    transaction prepared over gRPC sends the body as it was given."""
    gid = await redis_dtm.new_gid()
    await redis_dtm.prepare(pb.DtmRequest(Gid=gid, TransType="tcc"))
    body = {
        "gid": gid,
        "trans_type": "tcc",
        "branch_id": "01",
        "confirm": busi.url("/Confirm"),
        "cancel": busi.url("/Cancel"),
        "data": '{"amount":30}',
    }
    async with httpx.AsyncClient(timeout=WAIT) as client:
        registered = await client.post(f"{redis_node.dtm}/registerBranch", json=body)
    assert registered.status_code == 200, registered.text
    await redis_dtm.submit(pb.DtmRequest(Gid=gid, TransType="tcc"))

    (confirm,) = await asyncio.to_thread(busi.wait_calls, "/Confirm", 1, WAIT)
    assert confirm.body == b'{"amount":30}'
    reply = await finished(redis_node, gid)
    assert reply["transaction"]["status"] == "succeed"
    assert bin_data(reply) == [b'{"amount":30}', b'{"amount":30}']


async def test_a_branch_registered_over_grpc_into_an_http_transaction_gets_its_bytes(
    redis_node: FastdtmNode, redis_dtm: Dtm, busi: BusiServer
) -> None:
    """The other way round: a gRPC RegisterBranch (BusiPayload bytes) into a TCC prepared over HTTP."""
    gid = "http-tcc-grpc-branch"
    async with httpx.AsyncClient(timeout=WAIT) as client:
        prepared = await client.post(f"{redis_node.dtm}/prepare", json={"gid": gid, "trans_type": "tcc"})
        assert prepared.status_code == 200, prepared.text
        data = {"confirm": busi.url("/Confirm"), "cancel": busi.url("/Cancel")}
        await redis_dtm.register_branch(
            pb.DtmBranchRequest(Gid=gid, TransType="tcc", BranchID="01", Data=data, BusiPayload=b'{"amount":30}')
        )
        submitted = await client.post(f"{redis_node.dtm}/submit", json={"gid": gid, "trans_type": "tcc"})
        assert submitted.status_code == 200, submitted.text

    reply = await finished(redis_node, gid)
    assert reply["transaction"]["status"] == "succeed"
    (confirm,) = busi.calls("/Confirm")
    assert confirm.body == b'{"amount":30}'
    assert bin_data(reply) == [b'{"amount":30}', b'{"amount":30}']
