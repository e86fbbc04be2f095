"""The gRPC server as a node runs it (issue 17, item 1): tokens and roles in the metadata, TLS with the node's
certificate, `--grpc-port 0`, a taken port, several workers on one port, and the drain on SIGTERM (calls
under way finish, new calls are refused)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

import grpc
import httpx
import pytest
from google.protobuf import empty_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fastdtm.proto import dtmgimp_pb2 as pb
from tests.support.busi import BusiServer, Call, Reply
from tests.support.node import FastdtmNode, NodeFactory, node_env
from tests.support.redis_servers import HOST, RedisServer, free_port
from tests.support.tls import Pki

CLIENT = "grpc-client-token-5c1d0e7a"
OPERATOR = "grpc-operator-token-9b2f44aa"
TOPIC = pb.DtmTopicRequest(Topic="t", URL="127.0.0.1:9/busi.Busi/TransIn")


async def new_gid(channel: aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    stub: aio.UnaryUnaryMultiCallable[bytes, pb.DtmGidReply] = channel.unary_unary(
        "/dtmgimp.Dtm/NewGid", response_deserializer=pb.DtmGidReply.FromString
    )
    reply = await stub(empty_pb2.Empty().SerializeToString(), metadata=metadata, timeout=10)
    return reply.Gid


async def subscribe(channel: aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
    stub: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/dtmgimp.Dtm/Subscribe")
    await stub(TOPIC.SerializeToString(), metadata=metadata, timeout=10)


async def health(channel: aio.Channel, service: str = "") -> Any:
    stub: Any = health_pb2_grpc.HealthStub(cast(grpc.Channel, channel))
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return reply.status


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def expect_code(awaitable: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(aio.AioRpcError) as caught:
        await awaitable
    assert caught.value.code() is code, caught.value.details()
    return caught.value.details() or ""


async def test_tokens_and_roles_in_the_metadata(node_factory: NodeFactory, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{CLIENT} client\n{OPERATOR} operator\n")
    tokens.chmod(0o600)
    node = node_factory(f"sqlite:///{tmp_path / 'fastdtm.db'}", "--auth-file", str(tokens))
    async with aio.insecure_channel(node.grpc) as channel:
        words = await expect_code(new_gid(channel), grpc.StatusCode.UNAUTHENTICATED)
        assert "authorization: Bearer" in words
        await expect_code(new_gid(channel, bearer("not-a-token-at-all-0000")), grpc.StatusCode.UNAUTHENTICATED)
        assert await new_gid(channel, bearer(CLIENT))
        basic = (("authorization", "Basic " + base64.b64encode(f"app:{CLIENT}".encode()).decode()),)
        assert await new_gid(channel, basic)
        words = await expect_code(subscribe(channel, bearer(CLIENT)), grpc.StatusCode.PERMISSION_DENIED)
        assert "needs an operator token" in words
        await subscribe(channel, bearer(OPERATOR))
        # Probes and tools have no token: health and reflection stay open.
        assert await health(channel) == health_pb2.HealthCheckResponse.SERVING
        stub: Any = reflection_pb2_grpc.ServerReflectionStub(cast(grpc.Channel, channel))
        replies = [
            r async for r in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        ]
        assert "dtmgimp.Dtm" in {s.name for s in replies[0].list_services_response.service}
    assert CLIENT not in node.log_text() and OPERATOR not in node.log_text()


async def test_grpc_port_zero_serves_no_grpc(node_factory: NodeFactory, tmp_path: Path) -> None:
    node = node_factory(f"sqlite:///{tmp_path / 'fastdtm.db'}", "--grpc-port", "0")
    assert httpx.get(f"{node.base}/api/ready", timeout=5).status_code == 200
    assert node.grpc_port == 0
    assert "gRPC" not in node.log_text()


def test_a_taken_grpc_port_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [sys.executable, "-m", "fastdtm", "serve", "--store", f"sqlite:///{tmp_path / 'f.db'}", "--host", HOST]
        argv += ["--port", str(free_port()), "--grpc-port", str(port)]
        ran = subprocess.run(argv, env=node_env(), capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert ran.returncode != 0
    assert f"cannot listen for gRPC on {HOST}:{port} (--grpc-port)" in ran.stdout + ran.stderr


def test_the_same_port_for_http_and_grpc_is_refused(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "fastdtm", "serve", "--store", f"sqlite:///{tmp_path / 'f.db'}"]
    ran = subprocess.run(
        [*argv, "--port", "40001", "--grpc-port", "40001"], env=node_env(), capture_output=True, text=True, timeout=30
    )
    assert ran.returncode == 2
    assert "give gRPC a port of its own" in ran.stderr


async def test_a_store_that_does_not_answer_is_unavailable(node_factory: NodeFactory) -> None:
    redis_server = RedisServer()
    try:
        node = node_factory(redis_server.url, "--redis-retry-time", "0.2")
        async with aio.insecure_channel(node.grpc) as channel:
            assert await new_gid(channel)  # no store needed
            redis_server.stop()
            request = pb.DtmRequest(Gid=f"grpc-{uuid.uuid4().hex[:8]}", TransType="tcc")
            prepare: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/dtmgimp.Dtm/Prepare")
            words = await expect_code(prepare(request.SerializeToString(), timeout=20), grpc.StatusCode.UNAVAILABLE)
            assert "store error" in words
    finally:
        redis_server.stop()


async def test_grpc_over_tls_with_the_node_certificate(node_factory: NodeFactory, tmp_path: Path, pki: Pki) -> None:
    tls = (
        "--ssl-certfile",
        str(pki.server.cert),
        "--ssl-keyfile",
        str(pki.server.key),
        "--ssl-ca-certs",
        str(pki.ca.cert),
    )
    node = FastdtmNode(f"sqlite:///{tmp_path / 'fastdtm.db'}", tls, tls=pki.client_context(with_certificate=True))
    try:
        ca = pki.ca.cert.read_bytes()
        mutual = grpc.ssl_channel_credentials(ca, pki.client.key.read_bytes(), pki.client.cert.read_bytes())
        async with aio.secure_channel(node.grpc, mutual) as channel:
            assert await new_gid(channel)
        # Without a client certificate the CA signed, no call gets through; nor in plaintext.
        async with aio.secure_channel(node.grpc, grpc.ssl_channel_credentials(ca)) as channel:
            await expect_code(new_gid(channel), grpc.StatusCode.UNAVAILABLE)
        async with aio.insecure_channel(node.grpc) as channel:
            await expect_code(new_gid(channel), grpc.StatusCode.UNAVAILABLE)
    finally:
        node.stop()


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)
async def test_two_workers_share_the_grpc_port(node_factory: NodeFactory, redis_url: str) -> None:
    node = node_factory(redis_url, "--workers", "2")
    # The node answers once one worker does: wait for the other to listen too.
    deadline = time.monotonic() + 20
    while node.log_text().count("listening on") < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    gids = set()
    for _ in range(8):  # a new connection each time: the kernel spreads them over both processes
        async with aio.insecure_channel(node.grpc, options=(("grpc.use_local_subchannel_pool", 1),)) as channel:
            gids.add(await new_gid(channel))
    assert len(gids) == 8
    assert node.log_text().count("listening on") == 2


async def test_sigterm_lets_a_running_call_finish_and_refuses_new_ones(
    node_factory: NodeFactory, busi: BusiServer, tmp_path: Path
) -> None:
    node = node_factory(f"sqlite:///{tmp_path / 'fastdtm.db'}", "--drain-timeout", "5")
    called = threading.Event()

    def slow(call: Call) -> Reply:
        called.set()
        return Reply(200, delay=1.5)

    busi.on("/slow", slow)
    the_gid = f"grpc-drain-{uuid.uuid4().hex[:8]}"
    steps = json.dumps([{"action": busi.url("/slow"), "compensate": busi.url("/undo")}])
    request = pb.DtmRequest(
        Gid=the_gid,
        TransType="saga",
        Steps=steps,
        BinPayloads=[b"{}"],
        TransOptions=pb.DtmTransOptions(WaitResult=True),
    )
    async with aio.insecure_channel(node.grpc) as channel:
        submit: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/dtmgimp.Dtm/Submit")
        running = asyncio.ensure_future(submit(request.SerializeToString(), timeout=20))
        await asyncio.to_thread(called.wait, 10)
        started = time.monotonic()
        os.kill(node.pid, signal.SIGTERM)  # the drain, without waiting for the process to end
        await asyncio.sleep(0.3)
        await expect_code(new_gid(channel), grpc.StatusCode.UNAVAILABLE)
        await running  # the wait_result call under way when the signal came answers OK
        assert time.monotonic() - started < 5
    deadline = time.monotonic() + 10
    while node.alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not node.alive()
    assert node.returncode in (0, -signal.SIGTERM), node.log_text()[-3000:]
