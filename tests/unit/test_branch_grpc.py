"""fastdtm.branch_grpc and the gRPC half of the invoker: the pure rules, then `GrpcClient` against real grpc.aio
servers on loopback (`tests/support/grpc_busi.py`), each started by its test in the suite's event loop.

The pure part: which URLs are gRPC targets (`parse_target`, `is_http_url`, `check_call_url`), which branch
headers can be metadata (`check_metadata`), the `WorkflowData` bytes of a gRPC workflow's resume call (checked
against google.protobuf with the message built at run time, and against hand-computed varints), and how a status
maps to an outcome (`classify_grpc`). Against servers: the status and details come back as the server set them,
bytes and metadata arrive unchanged, a silent server costs the call's deadline, a refused port fails at once, a
server that comes back is reached again within the 2 s reconnect backoff cap, one connection serves many calls, a
reply over the cap is RESOURCE_EXHAUSTED, a passed send deadline or a denied address sends nothing, metadata gRPC
cannot send is a branch error (an OSError) rather than grpc's own exception, an IPv6 server is reached, and idle
channels (and all of them on close) are closed; the same calls on uvloop, the node's loop. Connections are counted
with `tests/support/tcp_proxy.py`'s proxy in front of the server, or by the peers the server saw.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc
import pytest
import uvloop
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from fastdtm.branch_grpc import BranchGrpcError, GrpcClient, parse_target
from fastdtm.branch_http import BranchDenied, BranchHttpError, HttpClient, NotSent
from fastdtm.branch_policy import BranchPolicy
from fastdtm.errors import Invalid
from fastdtm.grpc_syntax import GrpcSyntaxError, GrpcTarget, check_metadata, is_http_url
from fastdtm.invoker import UNKNOWN_RESULT, Invoker, classify_grpc, grpc_metadata
from fastdtm.kinds.base import Call
from fastdtm.kinds.workflow import resume_body, workflow_data, workflow_input
from fastdtm.models import Options, Transaction, body_bytes, check_call_url, convert_body, stored_body
from fastdtm.states import GRPC, HTTP, Outcome, TransStatus, TransType
from tests.support.grpc_busi import GrpcBusi, GrpcReply
from tests.support.redis_servers import HOST
from tests.support.tcp_proxy import HoldingProxy

METHOD = "/busi.Busi/TransOut"
#: Every byte value, zeros at both ends: what a serialized protobuf message may hold.
BINARY = b"\x00" + bytes(range(256)) * 3 + b"\x00\x00"
#: Bounds on waits; none of them is a claim about speed.
SLACK = 2.0


@pytest.fixture
async def server() -> AsyncIterator[GrpcBusi]:
    async with GrpcBusi() as busi:
        yield busi
    assert not busi.errors


@pytest.fixture
async def client() -> AsyncIterator[GrpcClient]:
    grpc_client = GrpcClient()
    try:
        yield grpc_client
    finally:
        await grpc_client.close()


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, never listened, then released)."""
    with socket.socket() as bound:
        bound.bind((HOST, 0))
        return int(bound.getsockname()[1])


# --- URLs -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("127.0.0.1:50051/busi.Busi/TransOut", GrpcTarget("127.0.0.1", 50051, "/busi.Busi/TransOut")),
        ("localhost:1/Svc/M", GrpcTarget("localhost", 1, "/Svc/M")),
        (
            "Busi-Host.Example.com:65535/a.b.c.Svc/Do_It2",
            GrpcTarget("busi-host.example.com", 65535, "/a.b.c.Svc/Do_It2"),
        ),
        ("busi_1:0080/_p.S/m", GrpcTarget("busi_1", 80, "/_p.S/m")),
        ("[::1]:50051/busi.Busi/TransOut", GrpcTarget("::1", 50051, "/busi.Busi/TransOut")),
        ("[2001:DB8::a]:443/workflow.Workflow/Execute", GrpcTarget("2001:db8::a", 443, "/workflow.Workflow/Execute")),
        ("[::ffff:127.0.0.1]:9/a.B/C", GrpcTarget("::ffff:127.0.0.1", 9, "/a.B/C")),
    ],
)
def test_parse_target(url: str, target: GrpcTarget) -> None:
    assert parse_target(url) == target
    assert not is_http_url(url)


def test_an_ipv6_target_keeps_its_brackets_in_the_authority() -> None:
    assert parse_target("[::1]:50051/a.B/C").authority == "[::1]:50051"
    assert parse_target("127.0.0.1:50051/a.B/C").authority == "127.0.0.1:50051"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "127.0.0.1/busi.Busi/TransOut",  # no port
        "127.0.0.1:/busi.Busi/TransOut",  # empty port
        "127.0.0.1:0/busi.Busi/TransOut",
        "127.0.0.1:65536/busi.Busi/TransOut",
        "127.0.0.1:5x/busi.Busi/TransOut",
        "127.0.0.1:-1/busi.Busi/TransOut",
        "127.0.0.1:\u0665\u0660/busi.Busi/TransOut",  # Arabic-Indic digits: isdigit() but not a port
        ":50051/busi.Busi/TransOut",  # no host
        "-busi:50051/busi.Busi/TransOut",
        "bad host:50051/busi.Busi/TransOut",
        "127.0.0.1:50051",  # no method
        "127.0.0.1:50051/",
        "127.0.0.1:50051/busi.Busi",
        "127.0.0.1:50051/busi.Busi/",
        "127.0.0.1:50051//TransOut",
        "127.0.0.1:50051/busi.Busi/Trans/Out",
        "127.0.0.1:50051/busi..Busi/TransOut",
        "127.0.0.1:50051/1busi.Busi/TransOut",
        "127.0.0.1:50051/busi.Busi/Trans-Out",
        "127.0.0.1:50051/busi.Busi/TransOut?x=1",
        "::1:50051/busi.Busi/TransOut",  # IPv6 without brackets
        "[::1]/busi.Busi/TransOut",  # brackets, no port
        "[::1:50051/busi.Busi/TransOut",  # unclosed bracket
        "[127.0.0.1]:50051/busi.Busi/TransOut",  # brackets are for IPv6
        "[::1::2]:50051/busi.Busi/TransOut",  # not an IPv6 address
        "[12345::1]:50051/busi.Busi/TransOut",
        "[::g]:50051/busi.Busi/TransOut",
        "http://127.0.0.1:50051/busi.Busi/TransOut",  # an HTTP URL is no target
        "https://busi:443/busi.Busi/TransOut",
        "grpc://127.0.0.1:50051/busi.Busi/TransOut",
    ],
)
def test_parse_target_refuses(url: str) -> None:
    with pytest.raises(BranchGrpcError) as caught:
        parse_target(url)
    assert isinstance(caught.value, BranchHttpError)  # an OSError: a branch error to the invoker


@pytest.mark.parametrize(
    ("url", "http"),
    [
        ("http://127.0.0.1:8080/api/busi", True),
        ("https://busi/api", True),
        ("HTTP://busi/api", True),
        ("HttpS://busi/api", True),
        ("127.0.0.1:50051/busi.Busi/TransOut", False),
        ("http:127.0.0.1:50051/busi.Busi/TransOut", False),
        ("httpbusi:80/a.B/C", False),
        ("grpc://busi/a.B/C", False),
        ("", False),
    ],
)
def test_is_http_url(url: str, http: bool) -> None:
    assert is_http_url(url) is http


def test_check_call_url_takes_grpc_targets_only_in_a_grpc_transaction() -> None:
    check_call_url("127.0.0.1:50051/busi.Busi/TransOut", "action", GRPC)
    check_call_url("http://127.0.0.1:8080/api/busi", "action", GRPC)  # DTM calls it over HTTP
    check_call_url("http://127.0.0.1:8080/api/busi", "action", HTTP)
    with pytest.raises(Invalid, match="not an http:// or https:// URL"):
        check_call_url("127.0.0.1:50051/busi.Busi/TransOut", "action", HTTP)
    with pytest.raises(Invalid, match="neither an http:// or https:// URL nor a gRPC target"):
        check_call_url("127.0.0.1/busi.Busi/TransOut", "action", GRPC)


# --- metadata -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-token", "abc"),
        ("X-Token", "Bearer abc.def"),  # lowered when sent
        ("AUTHORIZATION", "Basic dXNlcjpwYXNz"),
        ("a.b_c-d0", " ~!printable ASCII~ "),
        ("x-empty", ""),
        ("trace-bin", "caf\u00e9 \u2603"),  # a -bin key's value is sent as its UTF-8 bytes
        ("Trace-Bin", "\t\n any text"),
    ],
)
def test_check_metadata_accepts(name: str, value: str) -> None:
    check_metadata(name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("content-type", "application/grpc"),
        ("Content-Type", "text/plain"),
        ("te", "trailers"),
        ("TE", "trailers"),
        ("user-agent", "x"),
        ("host", "x"),
        ("connection", "close"),
        ("grpc-timeout", "1S"),
        ("Grpc-Status", "0"),
        (":authority", "x"),
        ("", "x"),
        ("bad key", "x"),
        ("x/y", "x"),
        ("ключ", "x"),
        ("x-token", "caf\u00e9"),  # non-ASCII in a text key
        ("x-token", "a\tb"),
        ("x-token", "a\r\nx-injected: 1"),
        ("x-token", "\x7f"),
    ],
)
def test_check_metadata_refuses(name: str, value: str) -> None:
    with pytest.raises(GrpcSyntaxError):
        check_metadata(name, value)


def test_grpc_metadata_is_dtms_keys_then_the_branch_headers_lowered() -> None:
    headers = {"X-Token": "t", "Trace-Bin": "caf\u00e9"}
    saga = Transaction("g-1", TransType.SAGA, TransStatus.SUBMITTED, Options(branch_headers=headers), 0, 0)
    call = Call(0, "01", "action", "127.0.0.1:1/a.B/C", "")
    assert list(grpc_metadata(saga, call)) == [
        ("dtm-gid", "g-1"),
        ("dtm-trans_type", "saga"),
        ("dtm-branch_id", "01"),
        ("dtm-op", "action"),
        ("dtm-dtm", ""),
        ("x-token", "t"),
        ("trace-bin", "caf\u00e9".encode()),
    ]
    xa = Transaction("g-2", TransType.XA, TransStatus.SUBMITTED, Options(), 0, 0)
    commit = Call(0, "01", "commit", "127.0.0.1:1/busi.Busi/XaPhase2", "", post=True)
    assert ("dtm-phase2_url", "127.0.0.1:1/busi.Busi/XaPhase2") in grpc_metadata(xa, commit)


def test_a_body_is_kept_as_base64_for_grpc_and_as_text_for_http() -> None:
    assert body_bytes(base64.b64encode(BINARY).decode(), GRPC) == BINARY
    assert body_bytes("", GRPC) == b""
    assert body_bytes('{"a":"\u00e9"}', HTTP) == '{"a":"\u00e9"}'.encode()
    assert body_bytes(b"\xff\x00".decode("utf-8", "surrogateescape"), HTTP) == b"\xff\x00"
    assert stored_body(BINARY, GRPC) == base64.b64encode(BINARY).decode()
    assert body_bytes(stored_body(b"{}", HTTP), HTTP) == b"{}"
    assert convert_body("{}", HTTP, GRPC) == "e30=" and convert_body("e30=", GRPC, HTTP) == "{}"
    with pytest.raises(Invalid, match="not UTF-8"):
        convert_body(base64.b64encode(b"\xff").decode(), GRPC, HTTP)


# --- the workflow callback's message ---------------------------------------------------------------------------


def workflow_data_class() -> type[Message]:
    """`package workflow; message WorkflowData { bytes Data = 1; }`, built at run time (DTM's workflow.proto)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="fastdtm_test_workflow.proto", package="fastdtm_test_workflow", syntax="proto3"
    )
    message = file.message_type.add(name="WorkflowData")
    message.field.add(
        name="Data",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("fastdtm_test_workflow.WorkflowData"))


@pytest.mark.parametrize("size", [0, 1, 2, 127, 128, 129, 300, 16383, 16384, 70000, (1 << 21) + 3])
def test_workflow_data_is_what_protobuf_serializes(size: int) -> None:
    raw = (BINARY * (size // len(BINARY) + 1))[:size]
    message = workflow_data_class()
    assert workflow_data(raw) == message(Data=raw).SerializeToString()
    parsed = message.FromString(workflow_data(raw))
    assert parsed.Data == raw  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", b""),  # an empty bytes field is left out
        (b"\x00", b"\x0a\x01\x00"),
        (b"abc", b"\x0a\x03abc"),
        (b"x" * 127, b"\x0a\x7f" + b"x" * 127),
        (b"x" * 128, b"\x0a\x80\x01" + b"x" * 128),
        (b"x" * 300, b"\x0a\xac\x02" + b"x" * 300),
        (b"x" * 16384, b"\x0a\x80\x80\x01" + b"x" * 16384),
    ],
)
def test_workflow_data_by_hand(raw: bytes, encoded: bytes) -> None:
    assert workflow_data(raw) == encoded


def test_resume_body_wraps_the_input_in_workflow_data_for_grpc_only() -> None:
    raw = b'\xff\x00{"amount":30}\x80'
    custom_data = f'{{"name":"transfer","data":"{base64.b64encode(raw).decode()}"}}'
    name, data = workflow_input(custom_data)
    assert name == "transfer"
    assert base64.b64decode(resume_body(GRPC, data)) == workflow_data(raw)
    assert resume_body(HTTP, data) == data
    assert data.encode("utf-8", "surrogateescape") == raw


# --- statuses -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "outcome"),
    [
        (grpc.StatusCode.OK, "", Outcome.SUCCESS),
        (grpc.StatusCode.ABORTED, "", Outcome.FAILURE),
        (grpc.StatusCode.ABORTED, "FAILURE", Outcome.FAILURE),
        (grpc.StatusCode.ABORTED, "no money", Outcome.FAILURE),
        (grpc.StatusCode.ABORTED, "ONGOING", Outcome.ONGOING),  # SDKs before v1.10
        (grpc.StatusCode.ABORTED, "ongoing", Outcome.FAILURE),
        (grpc.StatusCode.ABORTED, "ONGOING!", Outcome.FAILURE),
        (grpc.StatusCode.FAILED_PRECONDITION, "", Outcome.ONGOING),
        (grpc.StatusCode.FAILED_PRECONDITION, "ONGOING", Outcome.ONGOING),
        (grpc.StatusCode.UNAVAILABLE, "ONGOING", Outcome.ERROR),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", Outcome.ERROR),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "", Outcome.ERROR),
        (grpc.StatusCode.INTERNAL, "FAILURE", Outcome.ERROR),
        (grpc.StatusCode.UNKNOWN, "", Outcome.ERROR),
        (grpc.StatusCode.UNIMPLEMENTED, "", Outcome.ERROR),
        (grpc.StatusCode.CANCELLED, "", Outcome.ERROR),
        (grpc.StatusCode.INVALID_ARGUMENT, "", Outcome.ERROR),
        (grpc.StatusCode.NOT_FOUND, "", Outcome.ERROR),
        (grpc.StatusCode.PERMISSION_DENIED, "", Outcome.ERROR),
        (grpc.StatusCode.UNAUTHENTICATED, "", Outcome.ERROR),
    ],
)
def test_classify_grpc(code: grpc.StatusCode, message: str, outcome: Outcome) -> None:
    assert classify_grpc(code, message) is outcome


# --- GrpcClient against real servers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (GrpcReply(body=b"ignored reply"), (grpc.StatusCode.OK, "")),
        (GrpcReply(grpc.StatusCode.ABORTED, "FAILURE"), (grpc.StatusCode.ABORTED, "FAILURE")),
        (GrpcReply(grpc.StatusCode.ABORTED, "ONGOING"), (grpc.StatusCode.ABORTED, "ONGOING")),
        (GrpcReply(grpc.StatusCode.FAILED_PRECONDITION, "ONGOING"), (grpc.StatusCode.FAILED_PRECONDITION, "ONGOING")),
        (GrpcReply(grpc.StatusCode.UNAVAILABLE, "busy, later"), (grpc.StatusCode.UNAVAILABLE, "busy, later")),
        (GrpcReply(grpc.StatusCode.INTERNAL, "caf\u00e9"), (grpc.StatusCode.INTERNAL, "caf\u00e9")),
    ],
)
async def test_the_status_and_details_come_back(
    server: GrpcBusi, client: GrpcClient, reply: GrpcReply, expected: tuple[grpc.StatusCode, str]
) -> None:
    server.script(METHOD, [reply])
    assert await client.call(server.url(METHOD), b"{}", (), 5.0) == expected
    assert len(server.calls(METHOD)) == 1


@pytest.mark.parametrize("payload", [BINARY, b"", b"\x00", b'{"amount":30}', bytes(range(256)) * 4096])
async def test_the_payload_arrives_byte_for_byte(server: GrpcBusi, client: GrpcClient, payload: bytes) -> None:
    assert await client.call(server.url(METHOD), payload, (), 5.0) == (grpc.StatusCode.OK, "")
    (call,) = server.calls(METHOD)
    assert call.payload == payload


async def test_metadata_arrives(server: GrpcBusi, client: GrpcClient) -> None:
    metadata: list[tuple[str, str | bytes]] = [
        ("dtm-gid", "g-meta"),
        ("dtm-trans_type", "saga"),
        ("dtm-branch_id", "01"),
        ("dtm-op", "action"),
        ("dtm-dtm", ""),
        ("x-token", "Bearer t"),
        ("trace-bin", b"\x00\xff\x01"),
    ]
    await client.call(server.url(METHOD), b"x", metadata, 5.0)
    (call,) = server.calls(METHOD)
    assert call.dtm() == {
        "dtm-gid": "g-meta",
        "dtm-trans_type": "saga",
        "dtm-branch_id": "01",
        "dtm-op": "action",
        "dtm-dtm": "",
    }
    assert (call.meta("x-token"), call.meta("trace-bin")) == ("Bearer t", b"\x00\xff\x01")


@pytest.mark.parametrize(
    "metadata",
    [[("x-note", "caf\u00e9")], [("x-note", "a\nb")], [("x!note", "v")]],
    ids=["non-ascii-value", "line-break", "not-a-grpc-key"],
)
async def test_metadata_grpc_cannot_send_is_a_branch_error(
    server: GrpcBusi, client: GrpcClient, metadata: list[tuple[str, str | bytes]]
) -> None:
    """No call can be made: a BranchHttpError, as the client promises, never grpc's own exception. Such headers
    are refused at submit for a gRPC transaction, but an HTTP msg reaches gRPC subscribers of its topics."""
    with pytest.raises(BranchHttpError):
        await client.call(server.url(METHOD), b"", metadata, 5.0)
    assert server.calls() == []


async def test_the_invoker_reports_headers_grpc_cannot_send_as_an_error(server: GrpcBusi) -> None:
    # An HTTP msg (its headers checked for HTTP only) whose topic has a gRPC subscriber.
    options = Options(branch_headers={"X-Note": "caf\u00e9"})
    trans = Transaction("g-topic", TransType.MSG, TransStatus.SUBMITTED, options, 0, 0)
    http = HttpClient()
    invoker = Invoker(http, 3.0, GrpcClient())
    try:
        done = await invoker.call(trans, Call(0, "01", "action", server.url(METHOD), '{"amount":30}'))
    finally:
        await invoker.grpc.close()
        await http.close()
    assert done.outcome is Outcome.ERROR


async def test_the_invoker_calls_a_grpc_branch_the_dtm_way(server: GrpcBusi) -> None:
    server.script("/busi.Busi/No", [(grpc.StatusCode.ABORTED, "no money")])
    headers = {"Authorization": "Bearer b", "Trace-Bin": "\u2603"}
    trans = grpc_transaction(headers)
    data = base64.b64encode(BINARY).decode()
    http = HttpClient()
    invoker = Invoker(http, 3.0, GrpcClient())
    try:
        done = await invoker.call(trans, Call(0, "01", "action", server.url(METHOD), data))
        failed = await invoker.call(trans, Call(1, "02", "action", server.url("/busi.Busi/No"), data))
        compensated = await invoker.call(trans, Call(1, "02", "compensate", server.url("/busi.Busi/No"), ""))
    finally:
        await invoker.grpc.close()
        await http.close()
    assert (done.outcome, done.detail) == (Outcome.SUCCESS, "")
    url = server.url("/busi.Busi/No")
    assert (failed.outcome, failed.detail) == (
        Outcome.FAILURE,
        f"url:{url} return failed: rpc error: code = Aborted desc = no money FAILURE",
    )
    assert (compensated.outcome, compensated.detail) == (
        Outcome.FAILURE,
        f"{UNKNOWN_RESULT}rpc error: code = Aborted desc = no money FAILURE",
    )
    action, _, compensate = server.calls()
    assert action.payload == BINARY
    assert compensate.payload == b""
    assert action.dtm() == {
        "dtm-gid": "g-grpc",
        "dtm-trans_type": "saga",
        "dtm-branch_id": "01",
        "dtm-op": "action",
        "dtm-dtm": "",
    }
    assert (action.meta("authorization"), action.meta("trace-bin")) == ("Bearer b", "\u2603".encode())


def grpc_transaction(branch_headers: dict[str, str]) -> Transaction:
    options = Options(branch_headers=branch_headers)
    return Transaction("g-grpc", TransType.SAGA, TransStatus.SUBMITTED, options, 0, 0, protocol=GRPC)


async def test_the_invoker_reports_no_call_as_an_error() -> None:
    url = f"{HOST}:{closed_port()}{METHOD}"
    http = HttpClient()
    invoker = Invoker(http, 3.0, GrpcClient())
    try:
        done = await invoker.call(grpc_transaction({}), Call(0, "01", "action", url, ""))
    finally:
        await invoker.grpc.close()
        await http.close()
    assert done.outcome is Outcome.ERROR
    assert done.detail.startswith(f"{UNKNOWN_RESULT}url:{url} error: BranchGrpcError: cannot connect to ")


async def test_a_server_that_never_answers_costs_the_deadline(server: GrpcBusi, client: GrpcClient) -> None:
    server.script(METHOD, [GrpcReply(delay=float("inf"))])
    await client.call(server.url("/busi.Busi/Warm"), b"", (), 5.0)  # connected: the deadline is the call's alone
    started = time.monotonic()
    code, _ = await client.call(server.url(METHOD), b"", (), 0.5)
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 0.5 + SLACK
    assert classify_grpc(code, "") is Outcome.ERROR


async def test_a_refused_port_fails_at_once(client: GrpcClient) -> None:
    started = time.monotonic()
    with pytest.raises(BranchHttpError, match="cannot connect"):
        await client.call(f"{HOST}:{closed_port()}{METHOD}", b"", (), 30.0)
    assert time.monotonic() - started < SLACK  # not the call's 30 s timeout


async def test_a_bad_url_is_a_branch_error(client: GrpcClient) -> None:
    with pytest.raises(BranchHttpError, match="not a gRPC branch URL"):
        await client.call("127.0.0.1:1", b"", (), 1.0)


async def test_a_server_that_comes_back_is_reached_again(client: GrpcClient) -> None:
    busi = await GrpcBusi().start()
    try:
        url = busi.url(METHOD)
        assert await client.call(url, b"", (), 5.0) == (grpc.StatusCode.OK, "")
        await busi.stop()
        # Down for 3 s: gRPC's own backoff would have grown past 2 s by then.
        down_until = time.monotonic() + 3.0
        while time.monotonic() < down_until:
            # No connection (BranchHttpError), or a channel that has not noticed yet: UNAVAILABLE.
            try:
                code, _ = await client.call(url, b"", (), 1.0)
            except BranchHttpError:
                code = grpc.StatusCode.UNAVAILABLE
            assert code is not grpc.StatusCode.OK
            await asyncio.sleep(0.1)
        await busi.start()
        back = time.monotonic()
        while True:
            try:
                if await client.call(url, b"", (), 1.0) == (grpc.StatusCode.OK, ""):
                    break
            except BranchHttpError:
                pass
            assert time.monotonic() - back < 2.0 + SLACK, "not reconnected within the 2 s backoff cap"
            await asyncio.sleep(0.05)
        assert len(busi.calls(METHOD)) == 2
    finally:
        await busi.stop()


async def test_one_connection_serves_many_calls(server: GrpcBusi, client: GrpcClient) -> None:
    for i in range(10):
        await client.call(server.url(METHOD), str(i).encode(), (), 5.0)
    results = await asyncio.gather(*(client.call(server.url(f"/busi.Busi/M{i}"), b"", (), 5.0) for i in range(50)))
    assert set(results) == {(grpc.StatusCode.OK, "")}
    assert len(server.calls()) == 60
    assert len({call.peer for call in server.calls()}) == 1


async def test_each_server_has_its_own_connection(client: GrpcClient) -> None:
    async with GrpcBusi() as a, GrpcBusi() as b:
        for _ in range(3):
            await client.call(a.url(METHOD), b"", (), 5.0)
            await client.call(b.url(METHOD), b"", (), 5.0)
        assert len({call.peer for call in a.calls()}) == 1
        assert len({call.peer for call in b.calls()}) == 1


async def test_connections_counted_through_a_proxy(server: GrpcBusi, client: GrpcClient) -> None:
    with HoldingProxy((HOST, server.port)) as proxy:
        url = f"{HOST}:{proxy.port}{METHOD}"
        await asyncio.gather(*(client.call(url, b"", (), 5.0) for _ in range(20)))
        for _ in range(20):
            await client.call(url, b"", (), 5.0)
        assert proxy.connection_count == 1
        assert len(server.calls(METHOD)) == 40


async def test_a_reply_over_the_cap_is_resource_exhausted(server: GrpcBusi) -> None:
    server.script("/busi.Busi/Big", [GrpcReply(body=b"x" * 2048)])
    server.script("/busi.Busi/Small", [GrpcReply(body=b"x" * 1000)])
    capped = GrpcClient(max_reply_bytes=1024)
    try:
        code, _ = await capped.call(server.url("/busi.Busi/Big"), b"", (), 5.0)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert classify_grpc(code, "") is Outcome.ERROR
        assert await capped.call(server.url("/busi.Busi/Small"), b"", (), 5.0) == (grpc.StatusCode.OK, "")
    finally:
        await capped.close()


async def test_a_passed_send_deadline_sends_nothing(server: GrpcBusi, client: GrpcClient) -> None:
    url = server.url(METHOD)
    with pytest.raises(NotSent):  # on a channel not connected yet
        await client.call(url, b"", (), 5.0, send_by=time.monotonic() - 0.001)
    assert server.calls() == []
    with pytest.raises(NotSent):  # on a connected one
        await client.call(url, b"", (), 5.0, send_by=time.monotonic())
    assert server.calls() == []
    assert await client.call(url, b"sent", (), 5.0, send_by=time.monotonic() + 5.0) == (grpc.StatusCode.OK, "")
    assert [call.payload for call in server.calls()] == [b"sent"]


@asynccontextmanager
async def slow_to_answer(upstream_port: int, delay: float) -> AsyncIterator[int]:
    """A loopback proxy to `upstream_port` that forwards the server's bytes only `delay` seconds after a
    connection opens: gRPC counts a channel as connected once the server's HTTP/2 settings arrive. Yields the
    proxy's port."""
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wait: float) -> None:
        await asyncio.sleep(wait)
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        writers.append(client_writer)
        server_reader, server_writer = await asyncio.open_connection(HOST, upstream_port)
        writers.append(server_writer)
        for task in (pump(client_reader, server_writer, 0), pump(server_reader, client_writer, delay)):
            tasks.add(asyncio.create_task(task))

    proxy = await asyncio.start_server(serve, HOST, 0)
    try:
        yield int(proxy.sockets[0].getsockname()[1])
    finally:
        proxy.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_a_send_deadline_passing_while_connecting_sends_nothing(server: GrpcBusi) -> None:
    fresh = GrpcClient()
    try:
        async with slow_to_answer(server.port, 0.5) as port:
            with pytest.raises(NotSent):
                await fresh.call(f"{HOST}:{port}{METHOD}", b"", (), 5.0, send_by=time.monotonic() + 0.1)
            # Connected now: a later send deadline lets the call go.
            assert await fresh.call(f"{HOST}:{port}{METHOD}", b"late", (), 5.0, send_by=time.monotonic() + 5.0) == (
                grpc.StatusCode.OK,
                "",
            )
    finally:
        await fresh.close()
    assert [call.payload for call in server.calls()] == [b"late"]


async def test_not_connected_within_the_timeout_is_a_branch_error(server: GrpcBusi, client: GrpcClient) -> None:
    async with slow_to_answer(server.port, 30.0) as port:
        started = time.monotonic()
        with pytest.raises(BranchHttpError, match="not connected"):
            await client.call(f"{HOST}:{port}{METHOD}", b"", (), 0.5)
        assert time.monotonic() - started < 0.5 + SLACK
    assert server.calls() == []


async def test_a_denied_address_is_refused_before_any_call(server: GrpcBusi) -> None:
    denying = GrpcClient(policy=BranchPolicy(deny="127.0.0.0/8"))
    try:
        with pytest.raises(BranchDenied, match="refused by the branch policy"):
            await denying.call(server.url(METHOD), b"", (), 5.0)
        with pytest.raises(BranchDenied):  # a name that resolves into the range
            await denying.call(f"localhost:{server.port}{METHOD}", b"", (), 5.0)
    finally:
        await denying.close()
    assert server.calls() == []


async def test_an_allowed_name_is_called_at_its_checked_address(server: GrpcBusi) -> None:
    allowing = GrpcClient(policy=BranchPolicy())
    try:
        assert await allowing.call(f"localhost:{server.port}{METHOD}", b"", (), 5.0) == (grpc.StatusCode.OK, "")
    finally:
        await allowing.close()
    (call,) = server.calls()
    assert call.peer.startswith("ipv4:127.0.0.1:")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_an_ipv6_server_is_reached_with_and_without_a_policy(client: GrpcClient) -> None:
    async with GrpcBusi(host="::1") as v6:
        url = v6.url(METHOD)
        assert url.startswith("[::1]:")
        assert await client.call(url, b"a", (), 5.0) == (grpc.StatusCode.OK, "")
        checked = GrpcClient(policy=BranchPolicy())
        denying = GrpcClient(policy=BranchPolicy(deny="::1/128"))
        try:
            assert await checked.call(url, b"b", (), 5.0) == (grpc.StatusCode.OK, "")
            with pytest.raises(BranchDenied):
                await denying.call(url, b"c", (), 5.0)
        finally:
            await checked.close()
            await denying.close()
        assert [call.payload for call in v6.calls()] == [b"a", b"b"]
        assert {call.peer.partition(":")[0] for call in v6.calls()} == {"ipv6"}


async def test_idle_channels_are_closed(server: GrpcBusi) -> None:
    idle = GrpcClient(idle_timeout=0.4)
    try:
        with HoldingProxy((HOST, server.port)) as proxy:
            url = f"{HOST}:{proxy.port}{METHOD}"
            # A channel counts as used until its last call's deadline (the call might still run): 0.5 s here.
            await idle.call(url, b"", (), 0.5)
            assert proxy.connection_count == 1
            await eventually(lambda: proxy.connection_count == 0, 0.5 + 0.4 * 2 + SLACK, "the idle channel closed")
            assert await idle.call(url, b"", (), 0.5) == (grpc.StatusCode.OK, "")  # a new channel
            await eventually(lambda: proxy.connection_count == 1, SLACK, "a new connection")
    finally:
        await idle.close()
    peers = [call.peer for call in server.calls()]
    assert len(set(peers)) == 2


async def test_past_max_channels_the_least_recently_used_is_closed() -> None:
    capped = GrpcClient(max_channels=1)
    try:
        async with GrpcBusi() as a, GrpcBusi() as b:
            with HoldingProxy((HOST, a.port)) as proxy_a:
                await capped.call(f"{HOST}:{proxy_a.port}{METHOD}", b"", (), 5.0)
                assert proxy_a.connection_count == 1
                await capped.call(b.url(METHOD), b"", (), 5.0)
                await eventually(lambda: proxy_a.connection_count == 0, SLACK, "the older channel closed")
    finally:
        await capped.close()


async def test_close_closes_every_channel(server: GrpcBusi) -> None:
    closing = GrpcClient()
    async with GrpcBusi() as other:
        with HoldingProxy((HOST, server.port)) as one, HoldingProxy((HOST, other.port)) as two:
            await closing.call(f"{HOST}:{one.port}{METHOD}", b"", (), 5.0)
            await closing.call(f"{HOST}:{two.port}{METHOD}", b"", (), 5.0)
            assert (one.connection_count, two.connection_count) == (1, 1)
            await closing.close()
            await eventually(lambda: one.connection_count + two.connection_count == 0, SLACK, "every channel closed")
            with pytest.raises(BranchHttpError, match="closed"):
                await closing.call(f"{HOST}:{one.port}{METHOD}", b"", (), 5.0)
    assert len(server.calls()) == 1


def test_on_uvloop_as_a_node_runs_it() -> None:
    """The node's loop is uvloop: calls, statuses, the send deadline and close work on it too."""

    async def main() -> None:
        async with GrpcBusi() as busi:
            busi.script("/busi.Busi/No", [(grpc.StatusCode.ABORTED, "FAILURE")])
            on_uvloop = GrpcClient()
            try:
                assert await on_uvloop.call(busi.url(METHOD), BINARY, (), 5.0) == (grpc.StatusCode.OK, "")
                assert await on_uvloop.call(busi.url("/busi.Busi/No"), b"", (), 5.0) == (
                    grpc.StatusCode.ABORTED,
                    "FAILURE",
                )
                with pytest.raises(NotSent):
                    await on_uvloop.call(busi.url(METHOD), b"", (), 5.0, send_by=time.monotonic())
            finally:
                await on_uvloop.close()
            assert [call.payload for call in busi.calls()] == [BINARY, b""]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
