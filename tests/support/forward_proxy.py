"""A forward HTTP proxy for tests, on 127.0.0.1 in the test's own event loop: absolute-form requests and
CONNECT tunnels, as HTTP_PROXY/HTTPS_PROXY clients use them.

It resolves host names from its own table only (`hosts`), so a branch URL like `http://busi.invalid:PORT/`
is reachable through the proxy and nowhere else: a call that succeeds went through it. It records what it
was asked (`seen`), can require a Proxy-Authorization value (407 otherwise) and can refuse every CONNECT.
Each forwarded request gets a connection of its own to the server (replies are read by Content-Length);
the client's connection to the proxy stays open for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Self


@dataclass(frozen=True, slots=True)
class ProxySeen:
    method: str
    #: The request line's target: an absolute URL, or host:port for CONNECT.
    target: str
    headers: dict[str, str]  # lower-cased names
    #: 1 for the proxy's first accepted client connection, and so on.
    connection: int


@dataclass
class ForwardProxy:
    hosts: Mapping[str, str]
    #: The Proxy-Authorization value required (None: none is).
    auth: str | None = None
    refuse_connect: bool = False
    #: Never answer CONNECT (a proxy that hangs).
    silent_connect: bool = False
    seen: list[ProxySeen] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                method, target, headers = _parse_head(head)
                self.seen.append(ProxySeen(method, target, headers, connection))
                if self.auth is not None and headers.get("proxy-authorization") != self.auth:
                    writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                    return
                if method == "CONNECT":
                    await self._tunnel(target, reader, writer)
                    return
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                writer.write(await self._forward(method, target, head, body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _address(self, authority: str, default_port: int) -> tuple[str, int]:
        host, _, port = authority.rpartition(":") if authority.count(":") == 1 else (authority, "", "")
        return self.hosts[host], int(port) if port else default_port

    async def _forward(self, method: str, target: str, head: bytes, body: bytes) -> bytes:
        """The server's reply to the request, sent in origin form on a new connection."""
        if not target.startswith("http://"):
            return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
        authority, _, path = target.removeprefix("http://").partition("/")
        host, port = self._address(authority, 80)
        lines = head.decode().split("\r\n")
        kept = [line for line in lines[1:] if line and not line.lower().startswith("proxy-authorization:")]
        request = "\r\n".join([f"{method} /{path} HTTP/1.1", *kept]) + "\r\n\r\n"
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"  # as a real proxy says it
        try:
            writer.write(request.encode() + body)
            reply_head = await reader.readuntil(b"\r\n\r\n")
            length = int(_parse_head(reply_head)[2].get("content-length", "0"))
            return reply_head + await reader.readexactly(length)
        finally:
            writer.close()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent_connect:
            await reader.read()
            return
        if self.refuse_connect:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        host, port = self._address(target, 443)
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        pipes = [asyncio.ensure_future(_pipe(reader, up_writer)), asyncio.ensure_future(_pipe(up_reader, writer))]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
                self._tasks.discard(pipe)
            up_writer.close()


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    first, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, target, _ = first.split(" ", 2)
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return method, target, headers


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@contextlib.contextmanager
def in_thread(proxy: ForwardProxy) -> Iterator[ForwardProxy]:
    """Runs `proxy` on an event loop of its own in a thread, for tests that are not async (a node's)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="forward-proxy", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(proxy.__aenter__(), loop).result(10)
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.__aexit__(None, None, None), loop).result(10)
        asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _cancel_the_rest() -> None:
    """Ends the connections still served (a client's kept-alive one) before their loop closes."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
