"""fastdtm.branch_http against real loopback servers, each test on asyncio's own loop and on uvloop.

`RawServer` is an HTTP/1.1 server written for odd behaviours: a handler answers each request (or
not, or badly) and says whether to keep the connection; the server counts the connections it
accepted and those that ended, so a test can tell reuse from a new connection and see the client
drop one. The scripted branch server `busi` covers ordinary replies and the Invoker end to end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode

import pytest

from fastdtm.branch_http import (
    BranchDenied,
    BranchHttpError,
    HttpClient,
    NotSent,
    check_header,
    encode_request,
    parse_url,
)
from fastdtm.branch_policy import DEFAULT_DENY, BranchPolicy
from fastdtm.invoker import UNKNOWN_RESULT, Invoker, branch_url, call_headers
from fastdtm.kinds.base import Call
from fastdtm.models import Options, Transaction
from fastdtm.states import Outcome, TransStatus, TransType
from tests.support.busi import BusiServer
from tests.support.loops import Run


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    target: str
    headers: list[tuple[str, str]]  # in order, duplicates kept
    body: bytes
    connection: int  # 1 for the server's first accepted connection, and so on

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]


#: Answers one request on its connection; returns whether to keep the connection open.
Handler = Callable[[Seen, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class RawServer:
    handler: Handler
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    ended: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()

    def url(self, path: str) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.sockets[0].getsockname()[1]}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while (seen := await self._read(reader, connection)) is not None:
                self.seen.append(seen)
                if not await self.handler(seen, reader, writer):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.ended += 1
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, connection: int) -> Seen | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed the connection between requests
        request_line, *lines = head.decode().rstrip("\r\n").split("\r\n")
        method, target, _ = request_line.split(" ")
        headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines)]
        length = sum(int(value) for name, value in headers if name.lower() == "content-length")
        return Seen(method, target, headers, await reader.readexactly(length), connection)


def reply(body: bytes = b"ok", status: str = "200 OK", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


async def answer_ok(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(reply(f"ok {seen.target}".encode()))
    return True


async def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def client(
    keepalive: float = 30.0, ssl: ssl.SSLContext | None = None, **options: Any
) -> AsyncIterator[HttpClient]:
    http = HttpClient(keepalive, ssl, **options)
    try:
        yield http
    finally:
        await http.close()


async def get(http: HttpClient, url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    return await http.request("GET", url, {}, None, timeout)


# ----------------------------------------------------------------------------- keep-alive


def test_sequential_calls_share_one_connection(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, client() as http:
            for i in range(5):
                assert await get(http, server.url(f"/n{i}?a=b")) == (200, f"ok /n{i}?a=b".encode())
            assert server.connections == 1

    run(main())


def test_concurrent_calls_open_several_connections_then_reuse_them(run: Run) -> None:
    async def slow(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        return await answer_ok(seen, reader, writer)

    async def main() -> None:
        async with RawServer(slow) as server, client() as http:
            for _ in range(2):
                replies = await asyncio.gather(*(get(http, server.url("/c")) for _ in range(4)))
                assert replies == [(200, b"ok /c")] * 4
            assert server.connections == 4

    run(main())


def test_idle_connections_are_closed_after_the_keepalive_time(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, client(keepalive=0.2) as http:
            await get(http, server.url("/"))
            await wait_until(lambda: server.ended == 1)
            assert await get(http, server.url("/")) == (200, b"ok /")
            assert server.connections == 2

    run(main())


def test_close_ends_every_connection_and_later_calls_fail(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server:
            http = HttpClient()
            await get(http, server.url("/"))
            await http.close()
            await wait_until(lambda: server.ended == 1)
            with pytest.raises(BranchHttpError, match="closed"):
                await get(http, server.url("/"))

    run(main())


def test_idle_connections_beyond_the_cap_per_origin_are_closed(run: Run) -> None:
    async def slow(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.05)
        return await answer_ok(seen, reader, writer)

    async def main() -> None:
        async with RawServer(slow) as server, RawServer(slow) as other, client(max_idle=2) as http:
            replies = await asyncio.gather(*(get(http, server.url("/c")) for _ in range(5)))
            assert replies == [(200, b"ok /c")] * 5
            assert server.connections == 5
            await wait_until(lambda: server.ended == 3)  # two stay pooled
            # The cap is per origin: another one keeps its own two.
            await asyncio.gather(*(get(http, other.url("/c")) for _ in range(3)))
            await wait_until(lambda: other.ended == 1)
            await asyncio.gather(*(get(http, server.url("/c")) for _ in range(2)))
            assert (server.connections, server.ended) == (5, 3)

    run(main())


def test_no_idle_connection_is_kept_with_a_cap_of_zero(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, client(max_idle=0) as http:
            for _ in range(3):
                assert await get(http, server.url("/")) == (200, b"ok /")
            assert server.connections == 3
            await wait_until(lambda: server.ended == 3)

    run(main())


# ----------------------------------------------------------------------------- reply framing


def test_content_length_reply(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, client() as http:
            assert await http.request("POST", server.url("/p"), {}, b"x", 3) == (200, b"ok /p")

    run(main())


def test_chunked_reply_split_across_packets(run: Run) -> None:
    async def chunked(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"lo\r\n6\r\n world\r\n0\r\n\r\n")
        return True

    async def main() -> None:
        async with RawServer(chunked) as server, client() as http:
            assert await get(http, server.url("/")) == (200, b"hello world")
            assert await get(http, server.url("/")) == (200, b"hello world")
            assert server.connections == 1

    run(main())


def test_a_reply_without_length_runs_until_the_server_closes(run: Run) -> None:
    async def until_close(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"part two")
        return False

    async def main() -> None:
        async with RawServer(until_close) as server, client() as http:
            assert await get(http, server.url("/")) == (200, b"part one, part two")
            assert await get(http, server.url("/")) == (200, b"part one, part two")
            assert server.connections == 2

    run(main())


@pytest.mark.parametrize(
    "answer",
    [reply(headers="Connection: close\r\n"), b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    ids=["connection-close", "http-1.0"],
)
def test_a_reply_that_does_not_keep_alive_is_not_reused(run: Run, answer: bytes) -> None:
    async def keeps_it_open(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer)
        return True  # the server would go on: only the reply's words make the client let go

    async def main() -> None:
        async with RawServer(keeps_it_open) as server, client() as http:
            assert await get(http, server.url("/")) == (200, b"ok")
            await wait_until(lambda: server.ended == 1)
            assert await get(http, server.url("/")) == (200, b"ok")
            assert server.connections == 2

    run(main())


def test_an_interim_100_continue_is_skipped(run: Run) -> None:
    async def interim(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + reply())
        return True

    async def main() -> None:
        async with RawServer(interim) as server, client() as http:
            assert await get(http, server.url("/")) == (200, b"ok")
            assert await get(http, server.url("/")) == (200, b"ok")
            assert server.connections == 1

    run(main())


def test_a_second_reply_to_one_request_drops_the_connection(run: Run) -> None:
    async def twice(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(b"first") + reply(b"second"))
        return True

    async def main() -> None:
        async with RawServer(twice) as server, client() as http:
            assert await get(http, server.url("/")) == (200, b"first")
            assert await get(http, server.url("/")) == (200, b"first")
            assert server.connections == 2

    run(main())


def test_a_malformed_reply_is_an_error(run: Run) -> None:
    async def garbage(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        return True

    async def main() -> None:
        async with RawServer(garbage) as server, client() as http:
            with pytest.raises(BranchHttpError, match="malformed reply"):
                await get(http, server.url("/"))
            await wait_until(lambda: server.ended == 1)

    run(main())


def test_error_statuses_return_their_bodies(run: Run, busi: BusiServer) -> None:
    busi.script("/x", [(404, "not here"), (500, '{"message":"boom"}'), 409])

    async def main() -> None:
        async with client() as http:
            assert await get(http, busi.url("/x")) == (404, b"not here")
            assert await get(http, busi.url("/x")) == (500, b'{"message":"boom"}')
            assert await get(http, busi.url("/x")) == (409, b'{"dtm_result":"FAILURE"}')

    run(main())


def test_a_megabyte_each_way(run: Run) -> None:
    async def echo(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(seen.body[::-1]))
        return True

    async def main() -> None:
        body = os.urandom(1 << 20)
        async with RawServer(echo) as server, client(max_reply_bytes=1 << 20) as http:
            assert await http.request("POST", server.url("/big"), {}, body, 5) == (200, body[::-1])
            assert await get(http, server.url("/"), 5) == (200, b"")

    run(main())


CAP = 64 * 1024


@dataclass
class Endless:
    """Answers /big with a reply body that never ends (until the client goes), framed as asked; anything else ok."""

    framing: str  # "length" (a Content-Length of 256 MiB), "chunked", or "close" (no framing: until the end)
    sent: int = 0  # body bytes written to /big

    async def __call__(self, seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if seen.target != "/big":
            return await answer_ok(seen, reader, writer)
        head = {"length": "Content-Length: 268435456\r\n", "chunked": "Transfer-Encoding: chunked\r\n", "close": ""}
        writer.write(f"HTTP/1.1 200 OK\r\n{head[self.framing]}\r\n".encode())
        chunked = self.framing == "chunked"
        piece = b"10000\r\n" + b"y" * 65536 + b"\r\n" if chunked else b"FAILURE " + b"x" * 65528
        while self.sent < 256 << 20:
            writer.write(piece)
            self.sent += len(piece)
            await writer.drain()
        return False


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib * 1024


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_reply_body_is_read_up_to_the_cap_and_its_connection_closed(run: Run, framing: str) -> None:
    # Issue 12: a 256 MiB reply was read whole (RSS +518 MiB). Now: the first CAP bytes, then the connection goes.
    handler = Endless(framing)

    async def main() -> None:
        async with RawServer(handler) as server, client(max_reply_bytes=CAP) as http:
            assert await get(http, server.url("/warm")) == (200, b"ok /warm")
            before = rss_bytes()
            status, body = await get(http, server.url("/big"), timeout=10)
            grown = rss_bytes() - before
            assert status == 200 and len(body) == CAP
            assert body.startswith(b"FAILURE " if framing != "chunked" else b"yyyy")  # classified on what was read
            assert grown < 8 << 20, f"RSS grew {grown} bytes"
            await wait_until(lambda: server.ended == 1)
            assert handler.sent < 32 << 20  # the rest was never read
            assert await get(http, server.url("/after")) == (200, b"ok /after")  # on a new connection
            assert server.connections == 2

    run(main())


def test_a_reply_within_the_cap_keeps_its_connection(run: Run) -> None:
    async def exact(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(b"z" * CAP))
        return True

    async def main() -> None:
        async with RawServer(exact) as server, client(max_reply_bytes=CAP) as http:
            assert await get(http, server.url("/")) == (200, b"z" * CAP)
            assert await get(http, server.url("/")) == (200, b"z" * CAP)
            assert server.connections == 1

    run(main())


def test_reply_headers_over_the_cap_fail_the_call(run: Run) -> None:
    async def long_head(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        for _ in range(64):
            writer.write(b"p" * 4096)
            await writer.drain()
        writer.write(b"\r\nContent-Length: 2\r\n\r\nok")
        return True

    async def main() -> None:
        async with RawServer(long_head) as server, client(max_reply_bytes=CAP) as http:
            with pytest.raises(BranchHttpError, match="reply headers over 65536 bytes"):
                await get(http, server.url("/"))
            await wait_until(lambda: server.ended == 1)

    run(main())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key), made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = (tmp_path_factory.mktemp("tls") / name for name in ("cert.pem", "key.pem"))
    command = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    command += ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run([*command, "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_https_with_keep_alive_and_certificate_checks(run: Run, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def main() -> None:
        async with RawServer(answer_ok, server_tls) as server:
            async with client(ssl=ssl.create_default_context(cafile=cert)) as http:
                assert await get(http, server.url("/s")) == (200, b"ok /s")
                assert await get(http, server.url("/s")) == (200, b"ok /s")
                assert server.connections == 1
            async with client() as http:  # the system's trust store does not know this certificate
                with pytest.raises(BranchHttpError, match=r"cannot connect.*CERTIFICATE_VERIFY_FAILED"):
                    await get(http, server.url("/s"))

    run(main())


# ----------------------------------------------------------------------------- failures and the one retry


def test_a_reused_connection_closed_before_its_reply_is_retried_once_on_a_new_one(run: Run) -> None:
    async def drops_second(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if seen.connection == 1 and len(server.seen) == 2:
            return False  # the keep-alive race: the request arrived as the server closed the idle connection
        return await answer_ok(seen, reader, writer)

    async def main() -> None:
        async with server, client() as http:
            assert await get(http, server.url("/1")) == (200, b"ok /1")
            assert await get(http, server.url("/2")) == (200, b"ok /2")
            assert [(s.target, s.connection) for s in server.seen] == [("/1", 1), ("/2", 1), ("/2", 2)]

    server = RawServer(drops_second)
    run(main())


def test_no_retry_on_a_new_connection(run: Run) -> None:
    async def answers_once(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if len(server.seen) > 1:
            return False
        return await answer_ok(seen, reader, writer)

    async def main() -> None:
        async with server, client() as http:
            await get(http, server.url("/1"))
            with pytest.raises(BranchHttpError, match="closed by the server before any reply") as caught:
                await get(http, server.url("/2"))
            assert type(caught.value) is BranchHttpError
            # Once on the pooled connection, once more on a new one, and no further.
            assert [(s.target, s.connection) for s in server.seen] == [("/1", 1), ("/2", 1), ("/2", 2)]

    server = RawServer(answers_once)
    run(main())


def test_no_retry_once_the_reply_has_started(run: Run) -> None:
    async def cut(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
            return False
        return await answer_ok(seen, reader, writer)

    async def main() -> None:
        async with RawServer(cut) as server, client() as http:
            await get(http, server.url("/"))
            with pytest.raises(BranchHttpError, match="in the middle of the reply"):
                await get(http, server.url("/cut"))
            assert [s.target for s in server.seen] == ["/", "/cut"]

    run(main())


def test_a_server_that_never_answers_times_out_and_its_connection_is_dropped(run: Run) -> None:
    async def silent(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/silent":
            await reader.read()  # until the client gives up on the connection
            return False
        return await answer_ok(seen, reader, writer)

    async def main() -> None:
        async with RawServer(silent) as server, client() as http:
            await get(http, server.url("/"))
            started = time.monotonic()
            with pytest.raises(BranchHttpError, match="timeout"):
                await get(http, server.url("/silent"), timeout=0.2)
            assert 0.15 < time.monotonic() - started < 1.5
            await wait_until(lambda: server.ended == 1)
            assert await get(http, server.url("/")) == (200, b"ok /")
            assert [(s.target, s.connection) for s in server.seen] == [("/", 1), ("/silent", 1), ("/", 2)]

    run(main())


def test_a_cancelled_call_drops_its_connection(run: Run) -> None:
    async def silent(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        await reader.read()
        return False

    async def main() -> None:
        async with RawServer(silent) as server, client() as http:
            call = asyncio.ensure_future(get(http, server.url("/")))
            await wait_until(lambda: len(server.seen) == 1)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await wait_until(lambda: server.ended == 1)

    run(main())


def test_connection_refused(run: Run) -> None:
    async def main() -> None:
        with socket.socket() as bound:  # bound, never listening: the port refuses connections
            bound.bind(("127.0.0.1", 0))
            port = bound.getsockname()[1]
            async with client() as http:
                with pytest.raises(BranchHttpError, match=f"cannot connect to 127.0.0.1:{port}"):
                    await get(http, f"http://127.0.0.1:{port}/")

    run(main())


# ----------------------------------------------------------------------------- redirects


def redirecting(status: str, to: str) -> Handler:
    async def handler(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if seen.target.startswith("/from"):
            writer.write(reply(b"moved", status, f"Location: {to}\r\n"))
        else:
            writer.write(reply(f"{seen.method} {seen.body.decode()}".encode()))
        return True

    return handler


@pytest.mark.parametrize(
    ("status", "method", "body"),
    [("303 See Other", "GET", ""), ("302 Found", "GET", ""), ("307 Temporary Redirect", "POST", "payload")],
)
def test_a_redirect_is_followed(run: Run, status: str, method: str, body: str) -> None:
    async def main() -> None:
        async with RawServer(redirecting(status, "/to?x=1")) as server, client() as http:
            got = await http.request("POST", server.url("/from"), {}, b"payload", 3)
            assert got == (200, f"{method} {body}".encode())
            assert [(s.method, s.target) for s in server.seen] == [("POST", "/from"), (method, "/to?x=1")]
            assert server.seen[1].header("content-length") == ([] if method == "GET" else ["7"])
            assert server.connections == 1

    run(main())


def test_credentials_do_not_follow_a_redirect_to_another_origin(run: Run) -> None:
    async def main() -> None:
        async with (
            RawServer(answer_ok) as other,
            RawServer(redirecting("302 Found", other.url("/there"))) as server,
            client() as http,
        ):
            headers = {"Authorization": "Bearer secret", "X-Trace": "t1"}
            assert await http.request("GET", server.url("/from"), headers, None, 3) == (200, b"ok /there")
            assert server.seen[0].header("authorization") == ["Bearer secret"]
            assert other.seen[0].header("authorization") == []
            assert other.seen[0].header("x-trace") == ["t1"]

    run(main())


def test_a_redirect_loop_gives_up_after_ten(run: Run) -> None:
    async def main() -> None:
        async with RawServer(redirecting("302 Found", "/from-again")) as server, client() as http:
            with pytest.raises(BranchHttpError, match="too many redirects"):
                await get(http, server.url("/from"))
            assert len(server.seen) == 11

    run(main())


# ----------------------------------------------------------------------------- the branch-URL policy


def port_of(server: RawServer) -> int:
    return parse_url(server.url("/")).origin[2]


def test_under_a_policy_a_redirect_to_another_origin_is_not_followed(run: Run) -> None:
    async def main() -> None:
        async with (
            RawServer(answer_ok) as other,
            RawServer(redirecting("302 Found", other.url("/there"))) as server,
            client(policy=BranchPolicy()) as http,
        ):
            with pytest.raises(BranchDenied) as refused:
                await get(http, server.url("/from"))
            assert str(refused.value) == (
                f"redirect not followed: 302 to another origin, Location: {other.url('/there')} "
                "(--branch-follow-redirects follows it)"
            )
            assert other.connections == 0
            # Same origin: followed as ever.
            assert await get(http, server.url("/to")) == (200, b"GET ")

    run(main())


def test_under_a_policy_a_redirect_within_the_origin_is_followed(run: Run) -> None:
    async def main() -> None:
        async with (
            RawServer(redirecting("307 Temporary Redirect", "/to")) as server,
            client(policy=BranchPolicy()) as http,
        ):
            assert await http.request("POST", server.url("/from"), {}, b"p", 3) == (200, b"POST p")
            assert server.connections == 1

    run(main())


def test_followed_redirects_to_another_origin_are_checked_like_any_url(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as other:
            port = port_of(other)
            targets = [f"http://localhost:{port}/there", f"http://0x7f000002:{port}/there", other.url("/there")]
            servers = [RawServer(redirecting("302 Found", target)) for target in targets]
            policy = BranchPolicy(f"{DEFAULT_DENY},127.0.0.2/32,localhost", follow_redirects=True)
            async with (
                servers[0] as by_name,
                servers[1] as by_address,
                servers[2] as allowed,
                client(policy=policy) as http,
            ):
                with pytest.raises(BranchDenied, match=r"^refused by the branch policy: host 'localhost' matches"):
                    await get(http, by_name.url("/from"))
                with pytest.raises(BranchDenied, match=r"0x7f000002 \(127.0.0.2\) is in 127.0.0.2/32 on --branch-deny"):
                    await get(http, by_address.url("/from"))
                assert other.connections == 0
                assert await get(http, allowed.url("/from")) == (200, b"ok /there")

    run(main())


def test_a_name_that_resolves_into_a_denied_range_is_refused_before_connecting(run: Run) -> None:
    async def main() -> None:
        policy = BranchPolicy(f"{DEFAULT_DENY},127.0.0.0/8")
        async with RawServer(answer_ok) as server, client(policy=policy) as http:
            url = f"http://localhost:{port_of(server)}/x"
            for _ in range(2):  # the second from the cached verdict
                with pytest.raises(
                    BranchDenied, match=r"'localhost' resolves to 127\.0\.0\.1, which is in 127\.0\.0\.0/8"
                ):
                    await get(http, url)
            assert server.connections == 0

    run(main())


def test_a_denied_call_is_an_error_of_the_branch(run: Run) -> None:
    async def main() -> None:
        url = "http://localhost:9/TransIn"
        async with client(policy=BranchPolicy("localhost")) as http:
            done = await Invoker(http, 3.0).call(transaction({}), Call(0, "01", "action", url, ""))
        assert done.outcome is Outcome.ERROR
        assert done.detail.removeprefix(UNKNOWN_RESULT) == (
            f"url:{url} error: BranchDenied: refused by the branch policy: "
            "host 'localhost' matches 'localhost' on --branch-deny"
        )

    run(main())


@pytest.mark.parametrize(("ttl", "lookups"), [(30.0, 1), (0.0, 3)])
def test_the_connection_goes_to_the_checked_address_resolved_once_per_ttl(
    monkeypatch: pytest.MonkeyPatch, ttl: float, lookups: int
) -> None:
    """Three calls, each on a new connection (none kept idle): the name is looked up once per TTL, the Host
    header keeps the name. On asyncio's loop only: uvloop's getaddrinfo cannot be wrapped."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        resolve = loop.getaddrinfo
        seen: list[str] = []

        async def counting(host: str, *args: Any, **kwargs: Any) -> Any:
            seen.append(host)
            return await resolve(host, *args, **kwargs)

        monkeypatch.setattr(loop, "getaddrinfo", counting)
        async with RawServer(answer_ok) as server, client(policy=BranchPolicy(), max_idle=0, resolve_ttl=ttl) as http:
            name = f"localhost:{port_of(server)}"
            for i in range(3):
                assert await get(http, f"http://{name}/{i}") == (200, f"ok /{i}".encode())
            assert server.connections == 3
            assert [s.header("host") for s in server.seen] == [[name]] * 3
        assert seen.count("localhost") == lookups

    asyncio.run(main())


# ----------------------------------------------------------------------------- the request's bytes


def test_headers_are_sent_once_and_branch_headers_may_replace_content_type(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, client() as http:
            branch_headers = {"content-type": "text/plain", "X-Token": "t", "Content-Length": "99"}
            await http.request("POST", server.url("/h"), call_headers(branch_headers), b"abc", 3)
            seen = server.seen[0]
            assert seen.header("content-type") == ["text/plain"]
            assert seen.header("x-token") == ["t"]
            assert seen.header("content-length") == ["3"]  # framing is the client's, never a caller's
            assert seen.header("host") == [server.url("").removeprefix("http://")]
            assert seen.header("connection") == ["keep-alive"]

    run(main())


# ----------------------------------------------------------------------------- send deadline


def test_a_passed_send_deadline_sends_nothing_and_keeps_the_connection(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, client() as http:
            assert await get(http, server.url("/warm")) == (200, b"ok /warm")  # a pooled connection

            with pytest.raises(NotSent):
                await http.request("POST", server.url("/late"), {}, b"{}", 3.0, send_by=time.monotonic())
            # Not made at all: neither on the pooled connection nor a new one, which stays usable.
            assert [seen.target for seen in server.seen] == ["/warm"]
            ok = await http.request("GET", server.url("/next"), {}, None, 3.0, send_by=time.monotonic() + 5)
            assert ok == (200, b"ok /next")
            assert server.connections == 1

    run(main())


def test_a_send_deadline_that_passes_while_connecting_sends_nothing(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, client() as http:
            # A deadline that the connection set-up (tens of microseconds at least) outlives.
            with pytest.raises(NotSent):
                await http.request("GET", server.url("/late"), {}, None, 3.0, send_by=time.monotonic() + 1e-6)
            assert server.seen == []
            # The connection it made is pooled: the call made again goes out on it.
            assert await get(http, server.url("/again")) == (200, b"ok /again")
            assert server.connections == 1

    run(main())


def test_no_redirect_is_followed_past_the_send_deadline(run: Run) -> None:
    async def slow_redirect(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if seen.target == "/from":
            await asyncio.sleep(0.2)
            writer.write(reply(b"", "307 Temporary Redirect", "Location: /to\r\n"))
        else:
            writer.write(reply(b"moved"))
        return True

    async def main() -> None:
        async with RawServer(slow_redirect) as server, client() as http:
            send_by = time.monotonic() + 0.1
            with pytest.raises(NotSent):
                await http.request("GET", server.url("/from"), {}, None, 3.0, send_by=send_by)
            assert [seen.target for seen in server.seen] == ["/from"]

    run(main())


def test_encode_request() -> None:
    target = parse_url("http://Branch.example:8080/api/TransIn?gid=g1&op=action#frag")
    assert target.origin == ("http", "branch.example", 8080)
    assert encode_request("POST", target, {"Content-Type": "application/json"}, None) == (
        b"POST /api/TransIn?gid=g1&op=action HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Host: branch.example:8080\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
    )
    assert encode_request("GET", parse_url("https://h.example?q=1"), {}, None) == (
        b"GET /?q=1 HTTP/1.1\r\nHost: h.example\r\nConnection: keep-alive\r\n\r\n"
    )
    with pytest.raises(BranchHttpError, match="line break"):
        encode_request("GET", target, {"X-Evil": "a\r\nGET /smuggled HTTP/1.1"}, None)
    with pytest.raises(BranchHttpError, match="not a token"):
        encode_request("GET", target, {"X Evil": "a"}, None)


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Token", "Bearer abc"), ("a!#$%&'*+-.^_`|~9", "tab\tinside"), ("X-Utf8", "naïve ünïcode"), ("X-Empty", "")],
)
def test_check_header_accepts(name: str, value: str) -> None:
    check_header(name, value)


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("", "v", "header name '' is not a token"),
        ("X Space", "v", "'X Space' is not a token"),
        ("X:Colon", "v", "is not a token"),
        ("Näme", "v", "is not a token"),
        ("X-Nul\x00", "v", "is not a token"),
        ("X-CR", "a\rb", "holds a line break"),
        ("X-LF", "a\nb", "holds a line break"),
        ("X-Nul", "a\x00b", r"holds the control character '\\x00'"),
        ("X-Esc", "a\x1bb", r"holds the control character '\\x1b'"),
        ("X-Del", "a\x7fb", r"holds the control character '\\x7f'"),
    ],
)
def test_check_header_refuses(name: str, value: str, words: str) -> None:
    with pytest.raises(BranchHttpError, match=words):
        check_header(name, value)


@pytest.mark.parametrize(
    ("url", "origin", "host", "path", "auth"),
    [
        ("http://[::1]:81/a", ("http", "::1", 81), "[::1]:81", "/a", None),
        ("https://h:443/a b/ü?q=x y", ("https", "h", 443), "h", "/a%20b/%C3%BC?q=x%20y", None),
        ("HTTP://u:p%40ss@h/x%2Fy", ("http", "h", 80), "h", "/x%2Fy", "Basic dTpwQHNz"),
        ("http://h?x=/y#f", ("http", "h", 80), "h", "/?x=/y", None),
    ],
)
def test_parse_url(url: str, origin: tuple[str, str, int], host: str, path: str, auth: str | None) -> None:
    assert parse_url(url) == (origin, host, path, auth)


@pytest.mark.parametrize(
    "url",
    ["ftp://h/x", "/relative", "http://h:99999/", "http://:80/", "http://h:x/", "http://[::1/a", "http://[::1]x/"],
)
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(BranchHttpError):
        parse_url(url)


# ----------------------------------------------------------------------------- the Invoker on top


@pytest.mark.parametrize("gid", ["g1", "Aa0._-~", "g 1", "a&b=c", "a~b c", "ü/+%", ""])
def test_branch_url_is_what_urlencode_gives(gid: str) -> None:
    trans = Transaction(gid, TransType.SAGA, TransStatus.SUBMITTED, Options(), 0, 0)
    call = Call(0, "01 x", "action", "http://h/p", "")
    query = urlencode({"gid": gid, "trans_type": "saga", "branch_id": "01 x", "op": "action"})
    assert branch_url("http://h/p", trans, call) == f"http://h/p?{query}"


def transaction(branch_headers: dict[str, str]) -> Transaction:
    options = Options(branch_headers=branch_headers)
    return Transaction("g-http", TransType.XA, TransStatus.SUBMITTED, options, 0, 0)


def test_invoker_calls_a_branch_the_dtm_way(run: Run, busi: BusiServer) -> None:
    busi.script("/no", [(409, "no money")])

    async def main() -> None:
        async with client() as http:
            invoker = Invoker(http, 3.0)
            trans = transaction({"Authorization": "Bearer b"})
            done = await invoker.call(trans, Call(0, "01", "action", busi.url("/TransIn"), '{"amount":30}'))
            assert done.outcome is Outcome.SUCCESS
            assert done.detail == ""
            # XA's phase two: POST with an empty body.
            failed = await invoker.call(trans, Call(0, "01", "rollback", busi.url("/no"), "", post=True))
            # Go DTM's words: FAILURE outside a saga's action is a result it does not take (retried).
            assert (failed.outcome, failed.detail) == (Outcome.FAILURE, f"{UNKNOWN_RESULT}no money FAILURE")

    run(main())
    action, rollback = busi.calls()
    assert (action.method, action.body, action.query) == (
        "POST",
        b'{"amount":30}',
        {"gid": "g-http", "trans_type": "xa", "branch_id": "01", "op": "action"},
    )
    assert action.headers["content-type"] == "application/json"
    assert action.headers["authorization"] == "Bearer b"
    assert (rollback.method, rollback.body, rollback.headers["content-length"]) == ("POST", b"", "0")


def test_invoker_reports_a_network_error_as_error(run: Run) -> None:
    async def main() -> None:
        with socket.socket() as bound:
            bound.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{bound.getsockname()[1]}/TransIn"
            async with client() as http:
                done = await Invoker(http, 3.0).call(transaction({}), Call(0, "01", "action", url, ""))
        assert done.outcome is Outcome.ERROR
        assert done.detail.removeprefix(UNKNOWN_RESULT).startswith(
            f"url:{url} error: BranchHttpError: cannot connect to 127.0.0.1:"
        )

    run(main())
