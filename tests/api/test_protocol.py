"""The HTTP protocol a node serves with (fastdtm.api.protocol): DTM's fixed routes skip ASGI, and
everything HTTP/1.1 promises still holds, on raw sockets so that nothing smooths the bytes over.

The store does not matter here: one embedded-store node for the module.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from fastdtm.api.protocol_choice import PROTOCOL, uvicorn_http
from tests.support.node import FastdtmNode, NodeFactory, query

LIMIT = 256 * 1024  # the node's max body, set small to test both sides of it


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastdtmNode]:
    factory = NodeFactory(lambda: tmp_path_factory.mktemp("node"))
    store = tmp_path_factory.mktemp("store") / "fastdtm.db"
    try:
        yield factory(f"sqlite:///{store}", env={"FASTDTM_MAX_BODY_BYTES": str(LIMIT)})
    finally:
        factory.stop_all()


def connect(node: FastdtmNode) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(method: str, path: str, body: bytes = b"", headers: tuple[str, ...] = (), version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test", *headers]
    if body and not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> object:
        return orjson.loads(self.body)


def read_replies(sock: socket.socket, count: int) -> tuple[list[Reply], bytes]:
    """`count` replies (Content-Length framed, as every reply of a node is), and what follows them."""
    buffer = b""
    replies: list[Reply] = []
    while len(replies) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head, rest = buffer[:head_end].decode(), buffer[head_end + 4 :]
            status_line, *header_lines = head.split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
            size = int(headers["content-length"])
            if len(rest) >= size:
                replies.append(Reply(int(status_line.split(" ")[1]), headers, rest[:size]))
                buffer = rest[size:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(replies)} of {count} replies: {buffer[:200]!r}")
        buffer += chunk
    return replies, buffer


def is_closed(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def saga(gid: str, payload: str = "") -> bytes:
    return orjson.dumps(
        {"gid": gid, "trans_type": "saga", "steps": [{"action": "", "compensate": ""}], "payloads": [payload]}
    )


def gid() -> str:
    return f"proto-{uuid.uuid4().hex}"


def wait_succeed(node: FastdtmNode, gid: str) -> None:
    deadline = time.monotonic() + 10
    while query(node, gid)["transaction"]["status"] != "succeed":
        assert time.monotonic() < deadline, f"{gid} did not succeed"
        time.sleep(0.05)


def test_pipelined_requests_mixing_direct_and_asgi_routes_answer_in_order(node: FastdtmNode) -> None:
    g = gid()
    with connect(node) as sock:
        sock.sendall(
            request("POST", "/api/dtmsvr/submit", saga(g))
            + request("GET", "/api/nope")  # Starlette's 404, through ASGI
            + request("GET", f"/api/dtmsvr/query?gid={g}")
            + request("GET", "/api/dtmsvr/version")
            + request("POST", "/api/dtmsvr/submit", b"{not json")
        )
        (submit, missing, found, version, bad), rest = read_replies(sock, 5)
    assert (submit.status, submit.json()) == (200, {"dtm_result": "SUCCESS"})
    assert missing.status == 404
    assert found.status == 200 and found.json()["transaction"]["gid"] == g  # type: ignore[index]
    assert version.status == 200 and "version" in version.json()  # type: ignore[operator]
    assert bad.status == 400 and "not valid JSON" in bad.json()["message"]  # type: ignore[index]
    assert rest == b""


def test_a_direct_reply_matches_the_asgi_reply_of_the_same_request(node: FastdtmNode) -> None:
    # A percent-encoded path takes uvicorn's ASGI path to the same endpoint: same status, same
    # headers (date aside), same body.
    g = gid()
    with connect(node) as sock:
        sock.sendall(request("POST", "/api/dtmsvr/submit", saga(g)))
        read_replies(sock, 1)
        wait_succeed(node, g)
        sock.sendall(request("GET", f"/api/dtmsvr/query?gid={g}") + request("GET", f"/api/dtmsvr/%71uery?gid={g}"))
        (direct, asgi), _ = read_replies(sock, 2)
    direct.headers.pop("date")
    asgi.headers.pop("date")
    assert (direct.status, direct.headers, direct.body) == (asgi.status, asgi.headers, asgi.body)


def test_keep_alive_ends_on_connection_close_and_on_http_1_0(node: FastdtmNode) -> None:
    for version, headers in (("1.1", ("Connection: close",)), ("1.0", ())):
        with connect(node) as sock:
            sock.sendall(request("GET", "/api/dtmsvr/version", headers=headers, version=version))
            (reply,), rest = read_replies(sock, 1)
            assert reply.status == 200
            assert reply.headers.get("connection") == "close"
            assert rest == b"" and is_closed(sock)


@pytest.mark.parametrize(
    ("version", "headers"),
    [("1.1", ("Connection: keep-alive, close",)), ("1.1", ("Connection: close",)), ("1.0", ())],
)
def test_a_request_that_ends_keep_alive_gets_the_same_reply_direct_and_through_asgi(
    node: FastdtmNode, version: str, headers: tuple[str, ...]
) -> None:
    # uvicorn before 0.53 missed the `close` token after another one, and said nothing on HTTP/1.0 replies.
    replies = []
    for path in ("/api/dtmsvr/version", "/api/dtmsvr/%76ersion"):  # the direct path, then ASGI's
        with connect(node) as sock:
            sock.sendall(request("GET", path, headers=headers, version=version))
            (reply,), rest = read_replies(sock, 1)
            assert rest == b"" and is_closed(sock)
        reply.headers.pop("date")
        replies.append((reply.status, reply.headers, reply.body))
    direct, asgi = replies
    assert direct == asgi
    assert direct[1]["connection"] == "close"


def test_keep_alive_serves_many_requests_on_one_connection(node: FastdtmNode) -> None:
    gids = [gid() for _ in range(20)]
    with connect(node) as sock:
        for g in gids:
            sock.sendall(request("POST", "/api/dtmsvr/submit", saga(g)))
            (reply,), _ = read_replies(sock, 1)
            assert reply.status == 200 and "connection" not in reply.headers
    for g in gids:
        wait_succeed(node, g)


def test_a_body_sent_in_pieces_is_read_whole(node: FastdtmNode) -> None:
    g = gid()
    whole = request("POST", "/api/dtmsvr/submit", saga(g))
    with connect(node) as sock:
        for i in range(0, len(whole), 7):
            sock.sendall(whole[i : i + 7])
            time.sleep(0.002)
        (reply,), _ = read_replies(sock, 1)
    assert reply.status == 200
    wait_succeed(node, g)


def test_a_body_over_the_flow_control_mark_but_within_the_limit_is_served(node: FastdtmNode) -> None:
    # uvicorn stops reading past 64 KiB of unread body until the app reads: the direct path must
    # read on, or this request would hang.
    g = gid()
    payload = "x" * (200 * 1024)
    with connect(node) as sock:
        sock.sendall(request("POST", "/api/dtmsvr/submit", saga(g, payload)))
        (reply,), _ = read_replies(sock, 1)
    assert reply.status == 200
    wait_succeed(node, g)


def test_bodies_over_the_limit_are_refused_and_store_nothing(node: FastdtmNode) -> None:
    big = saga(gid(), "x" * LIMIT)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
    with connect(node) as sock:
        sock.sendall(request("POST", "/api/dtmsvr/submit", big))
        (by_length,), _ = read_replies(sock, 1)
    with connect(node) as sock:
        sock.sendall(request("POST", "/api/dtmsvr/submit", chunked, headers=("Transfer-Encoding: chunked",)))
        (by_chunks,), _ = read_replies(sock, 1)
    assert by_length.status == by_chunks.status == 413
    assert query(node, orjson.loads(big)["gid"])["transaction"] is None


def test_chunked_and_expect_continue_requests_are_served(node: FastdtmNode) -> None:
    g1, g2 = gid(), gid()
    body = saga(g1)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    with connect(node) as sock:
        sock.sendall(request("POST", "/api/dtmsvr/submit", chunked, headers=("Transfer-Encoding: chunked",)))
        (reply,), _ = read_replies(sock, 1)
        assert reply.status == 200
        body = saga(g2)
        sock.sendall(
            request("POST", "/api/dtmsvr/submit", headers=("Expect: 100-continue", f"Content-Length: {len(body)}"))
        )
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        (reply,), _ = read_replies(sock, 1)
        assert reply.status == 200
    wait_succeed(node, g1)
    wait_succeed(node, g2)


def test_a_client_gone_mid_body_leaves_the_node_serving(node: FastdtmNode) -> None:
    g = gid()
    whole = request("POST", "/api/dtmsvr/submit", saga(g))
    with connect(node) as sock:
        sock.sendall(whole[: len(whole) - 10])
    with connect(node) as sock:
        sock.sendall(request("GET", "/api/dtmsvr/version"))
        (reply,), _ = read_replies(sock, 1)
    assert reply.status == 200
    assert query(node, g)["transaction"] is None  # half a request did nothing
    assert re.search(r"Traceback|failed", node.log_text()) is None


def test_fastdtm_serve_uses_the_direct_protocol_with_this_uvicorn() -> None:
    # If uvicorn's internals move, serve falls back to plain httptools (correct, slower): this says so.
    assert uvicorn_http() == PROTOCOL
