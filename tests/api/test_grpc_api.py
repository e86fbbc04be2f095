"""DTM's gRPC API on a real node (issue 17, item 1): dtmgimp.Dtm, reflection and health; every refusal a clear
status with the HTTP API's message that changes nothing; topics and workflow progress; gRPC metrics."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2, empty_pb2
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fastdtm.proto import dtmgimp_pb2 as pb
from tests.support.node import FastdtmNode, query

#: A gRPC branch nothing answers: refusals never get as far as calling it.
BRANCH = "127.0.0.1:9/busi.Busi/"
STEPS = json.dumps([{"action": BRANCH + "TransOut", "compensate": BRANCH + "TransOutRevert"}])


@pytest.fixture
async def channel(node: FastdtmNode) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(node.grpc) as ch:
        yield ch


def gid() -> str:
    return f"grpc-{uuid.uuid4().hex[:12]}"


async def call(channel: aio.Channel, method: str, request: Message | bytes, reply: type[Message] | None = None) -> Any:
    """One unary call of dtmgimp.Dtm; the reply decoded as `reply` (default Empty)."""
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    parse = (reply or empty_pb2.Empty).FromString
    stub: aio.UnaryUnaryMultiCallable[bytes, Any] = channel.unary_unary(
        f"/dtmgimp.Dtm/{method}", response_deserializer=parse
    )
    return await stub(raw, timeout=10)


async def refused(channel: aio.Channel, method: str, request: Message | bytes) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, method, request)
    return caught.value


def saga(the_gid: str, **fields: Any) -> pb.DtmRequest:
    request = pb.DtmRequest(Gid=the_gid, TransType="saga", Steps=STEPS, BinPayloads=[b"\x00\x01"])
    for name, value in fields.items():
        if name == "TransOptions":
            request.TransOptions.CopyFrom(value)
        elif name == "BinPayloads":
            del request.BinPayloads[:]
            request.BinPayloads.extend(value)
        else:
            setattr(request, name, value)
    return request


async def test_new_gid(channel: aio.Channel) -> None:
    first = await call(channel, "NewGid", empty_pb2.Empty(), pb.DtmGidReply)
    second = await call(channel, "NewGid", empty_pb2.Empty(), pb.DtmGidReply)
    assert len(first.Gid) == 22 and first.Gid != second.Gid


async def test_reflection_lists_the_services_and_describes_dtmgimp(channel: aio.Channel) -> None:
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(cast(grpc.Channel, channel))
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="dtmgimp.Dtm"),
    ]
    replies = [reply async for reply in stub.ServerReflectionInfo(iter(requests))]
    names = {service.name for service in replies[0].list_services_response.service}
    assert {"dtmgimp.Dtm", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    dtm = next(f for f in files if f.package == "dtmgimp")
    methods = {m.name for m in dtm.service[0].method}
    assert methods == {
        "NewGid",
        "Submit",
        "Prepare",
        "Abort",
        "RegisterBranch",
        "PrepareWorkflow",
        "Subscribe",
        "Unsubscribe",
        "DeleteTopic",
    }


@pytest.mark.parametrize("service", ["", "dtmgimp.Dtm"])
async def test_health_says_serving(channel: aio.Channel, service: str) -> None:
    stub: Any = health_pb2_grpc.HealthStub(cast(grpc.Channel, channel))
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


BAD_SUBMITS: list[tuple[dict[str, Any], str]] = [
    ({"Gid": "bad gid"}, "is invalid"),
    ({"TransType": "sagaa"}, "unknown trans_type 'sagaa'"),
    ({"Steps": "{not json"}, "Steps must be the JSON text"),
    ({"Steps": '[["x"]]'}, "must be an object of strings"),
    ({"BinPayloads": []}, "steps[0] has no payload"),
    ({"Steps": json.dumps([{"action": "ftp://h/a"}])}, "nor a gRPC target"),
    ({"Steps": json.dumps([{"action": "127.0.0.1:9/NoService"}])}, "nor a gRPC target"),
    ({"Steps": json.dumps([{"action": "127.0.0.1/busi.Busi/TransOut"}])}, "nor a gRPC target"),
    ({"Steps": json.dumps([{"action": "169.254.169.254:80/busi.Busi/TransOut"}])}, "is refused"),
    ({"TransOptions": pb.DtmTransOptions(TimeoutToFail=-1)}, "must be >= 0"),
    ({"TransOptions": pb.DtmTransOptions(RequestTimeout=99_999)}, "within 0..3600"),
    ({"TransOptions": pb.DtmTransOptions(BranchHeaders={"bad header": "v"})}, "branch_headers"),
    ({"TransOptions": pb.DtmTransOptions(BranchHeaders={"x-name": "caf\u00e9"})}, "printable ASCII"),
    ({"TransOptions": pb.DtmTransOptions(BranchHeaders={"grpc-timeout": "1S"})}, "cannot be gRPC metadata"),
]


@pytest.mark.parametrize("method", ["Submit", "Prepare"])
@pytest.mark.parametrize(("fields", "words"), BAD_SUBMITS)
async def test_bad_requests_are_invalid_and_change_nothing(
    channel: aio.Channel, node: FastdtmNode, method: str, fields: dict[str, Any], words: str
) -> None:
    the_gid = gid()
    error = await refused(channel, method, saga(the_gid, **fields))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert words in (error.details() or "")
    assert query(node, the_gid)["transaction"] is None


@pytest.mark.parametrize("method", ["Submit", "Prepare", "Abort", "RegisterBranch", "PrepareWorkflow", "Subscribe"])
async def test_bytes_that_are_not_the_message_are_invalid(channel: aio.Channel, method: str) -> None:
    error = await refused(channel, method, b"\xff\xff\xff\xff")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a dtmgimp." in (error.details() or "")


async def test_a_message_over_the_body_limit_is_refused_unread(channel: aio.Channel, node: FastdtmNode) -> None:
    the_gid = gid()
    error = await refused(channel, "Submit", saga(the_gid, BinPayloads=[b"x" * (2 << 20)]))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert query(node, the_gid)["transaction"] is None


async def test_metadata_over_the_head_limit_is_refused(channel: aio.Channel, node: FastdtmNode) -> None:
    the_gid = gid()
    stub: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/dtmgimp.Dtm/Submit")
    with pytest.raises(aio.AioRpcError) as caught:
        await stub(saga(the_gid).SerializeToString(), metadata=(("x-big", "v" * (80 << 10)),), timeout=10)
    assert caught.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
    assert query(node, the_gid)["transaction"] is None
    await call(channel, "NewGid", empty_pb2.Empty(), pb.DtmGidReply)  # the connection still serves


async def test_the_state_forbids_it_is_aborted_with_failure(channel: aio.Channel) -> None:
    the_gid = gid()
    await call(channel, "Prepare", pb.DtmRequest(Gid=the_gid, TransType="tcc"))
    await call(channel, "Abort", pb.DtmRequest(Gid=the_gid, TransType="tcc"))
    # A tcc that was aborted cannot be submitted; a saga cannot be aborted (DTM's FAILURE).
    error = await refused(channel, "Submit", pb.DtmRequest(Gid=the_gid, TransType="tcc"))
    assert error.code() is grpc.StatusCode.ABORTED
    assert (error.details() or "").endswith("FAILURE")
    error = await refused(channel, "Prepare", pb.DtmRequest(Gid=the_gid, TransType="saga"))
    assert error.code() is grpc.StatusCode.ABORTED


async def test_unknown_gids(channel: aio.Channel) -> None:
    error = await refused(channel, "Abort", pb.DtmRequest(Gid=gid(), TransType="tcc"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    branch = pb.DtmBranchRequest(Gid=gid(), TransType="tcc", BranchID="01", Data={"confirm": BRANCH + "Confirm"})
    error = await refused(channel, "RegisterBranch", branch)
    assert error.code() is grpc.StatusCode.ABORTED
    assert "no trans with gid" in (error.details() or "")


@pytest.mark.parametrize(
    ("data", "branch_id", "words"),
    [
        ({"confirm": "ftp://x/y"}, "01", "nor a gRPC target"),
        ({"confirm": BRANCH + "Confirm"}, "bad id", "branch_id"),
    ],
)
async def test_bad_branch_registrations_are_invalid(
    channel: aio.Channel, node: FastdtmNode, data: dict[str, str], branch_id: str, words: str
) -> None:
    the_gid = gid()
    await call(channel, "Prepare", pb.DtmRequest(Gid=the_gid, TransType="tcc"))
    branch = pb.DtmBranchRequest(Gid=the_gid, TransType="tcc", BranchID=branch_id, Data=data, BusiPayload=b"\x01")
    error = await refused(channel, "RegisterBranch", branch)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert words in (error.details() or "")
    assert query(node, the_gid)["branches"] == []


async def test_tcc_registration_is_shown_with_its_bytes(channel: aio.Channel, node: FastdtmNode) -> None:
    the_gid = gid()
    await call(channel, "Prepare", pb.DtmRequest(Gid=the_gid, TransType="tcc"))
    data = {"confirm": BRANCH + "Confirm", "cancel": BRANCH + "Cancel"}
    branch = pb.DtmBranchRequest(Gid=the_gid, TransType="tcc", BranchID="01", Data=data, BusiPayload=b"\x00\xffpb")
    await call(channel, "RegisterBranch", branch)
    shown = query(node, the_gid)
    assert shown["transaction"]["protocol"] == "grpc"
    assert [(b["op"], b["url"], b["bin_data"]) for b in shown["branches"]] == [
        ("cancel", BRANCH + "Cancel", "AP9wYg=="),
        ("confirm", BRANCH + "Confirm", "AP9wYg=="),
    ]


async def test_workflow_progress_comes_back_as_bytes(channel: aio.Channel, node: FastdtmNode) -> None:
    the_gid = gid()
    custom = json.dumps({"name": "wf", "data": "aW5wdXQ="})
    request = pb.DtmRequest(Gid=the_gid, TransType="workflow", CustomedData=custom, QueryPrepared=BRANCH + "Execute")
    first = await call(channel, "PrepareWorkflow", request, pb.DtmProgressesReply)
    assert (first.Transaction.Gid, first.Transaction.Status, list(first.Progresses)) == (the_gid, "prepared", [])
    step = pb.DtmBranchRequest(
        Gid=the_gid,
        TransType="workflow",
        BranchID="01",
        Data={"status": "succeed", "op": "action"},
        BusiPayload=b"\x08\x96\x01",
    )
    await call(channel, "RegisterBranch", step)
    again = await call(channel, "PrepareWorkflow", request, pb.DtmProgressesReply)
    assert [(p.BranchID, p.Op, p.Status, p.BinData) for p in again.Progresses] == [
        ("01", "action", "succeed", b"\x08\x96\x01")
    ]
    done = pb.DtmRequest(Gid=the_gid, TransType="workflow", ReqExtra={"status": "succeed", "result": "b2s="})
    await call(channel, "Submit", done)
    assert query(node, the_gid)["transaction"]["status"] == "succeed"
    final = await call(channel, "PrepareWorkflow", request, pb.DtmProgressesReply)
    assert (final.Transaction.Status, final.Transaction.Result) == ("succeed", "b2s=")


async def test_topics(channel: aio.Channel, node: FastdtmNode) -> None:
    topic = f"topic-{uuid.uuid4().hex[:8]}"
    await call(channel, "Subscribe", pb.DtmTopicRequest(Topic=topic, URL=BRANCH + "TransIn", Remark="grpc"))
    await call(channel, "Subscribe", pb.DtmTopicRequest(Topic=topic, URL="http://127.0.0.1:9/in"))
    kv = httpx.get(f"{node.dtm}/queryKV", params={"cat": "topics", "key": topic}, timeout=5).json()
    urls = [s["url"] for s in json.loads(kv["kv"][0]["v"])]
    assert urls == [BRANCH + "TransIn", "http://127.0.0.1:9/in"]
    error = await refused(channel, "Subscribe", pb.DtmTopicRequest(Topic=topic, URL="nowhere"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    await call(channel, "Unsubscribe", pb.DtmTopicRequest(Topic=topic, URL=BRANCH + "TransIn"))
    await call(channel, "DeleteTopic", pb.DtmTopicRequest(Topic=topic))
    error = await refused(channel, "DeleteTopic", pb.DtmTopicRequest(Topic=topic))
    assert error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ABORTED)


async def test_grpc_calls_are_counted_as_grpc(channel: aio.Channel, node: FastdtmNode) -> None:
    await call(channel, "NewGid", empty_pb2.Empty(), pb.DtmGidReply)
    await refused(channel, "Submit", b"\xff")
    text = httpx.get(f"{node.base}/api/metrics", timeout=5).text
    assert 'dtm_server_process_total{type="grpc",api="newgid",status="ok"}' in text
    assert 'dtm_server_process_total{type="grpc",api="submit",status="fail"}' in text
    assert 'dtm_server_response_duration_count{type="grpc",api="newgid"}' in text
