"""A minimal, fast DTM branch (participant) server for benchmarks.

It answers every HTTP/1.1 request, whatever the method or path, with
``200 {"dtm_result":"SUCCESS"}``. It owns nothing else: no routing, no state. It is a raw
``asyncio.Protocol`` on uvloop that parses just enough of each request (the header block,
``Content-Length`` or a chunked body, ``Connection``) to stay correct for keep-alive and
pipelined requests, so the branch side costs as little CPU as Python allows.

Run: ``.venv/bin/python bench/branch_server.py --host 127.0.0.1 --port 8081``
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import uvloop

BODY = b'{"dtm_result":"SUCCESS"}'
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(BODY)
RESPONSE_KEEP_ALIVE = HEAD + b"\r\n" + BODY
RESPONSE_CLOSE = HEAD + b"Connection: close\r\n\r\n" + BODY
RESPONSE_BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


class BadRequest(Exception):
    """The bytes on the connection are not an HTTP/1.x request we can frame."""


def header_value(head: bytes, name: bytes) -> bytes | None:
    """Value of header ``name`` (lower case, with the colon) in a lower-cased header block."""
    start = head.find(b"\r\n" + name)
    if start < 0:
        return None
    start += 2 + len(name)
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


def chunked_length(buf: bytearray, start: int) -> int | None:
    """Bytes taken by the chunked body at ``buf[start:]``, or None while it is incomplete."""
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        except ValueError as exc:
            raise BadRequest("bad chunk size") from exc
        if size == 0:
            # Last chunk: the body ends at the empty line after the optional trailers.
            end = buf.find(b"\r\n\r\n", eol)
            return None if end < 0 else end + 4 - start
        pos = eol + 2 + size + 2
        if pos > len(buf):
            return None


def wants_close(request_line: bytes, head: bytes) -> bool:
    """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep it."""
    connection = header_value(head, b"connection:") or b""
    if request_line.endswith(b"http/1.0"):
        return b"keep-alive" not in connection
    return b"close" in connection


class BranchProtocol(asyncio.Protocol):
    """One connection: frame each request in the buffer, answer all complete ones in one write."""

    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        out: list[bytes] = []
        close = False
        try:
            while not close:
                framed = self._next_request()
                if framed is None:
                    break
                close = framed
                out.append(RESPONSE_CLOSE if close else RESPONSE_KEEP_ALIVE)
        except BadRequest:
            out.append(RESPONSE_BAD)
            close = True
        transport = self._transport
        if transport is None:
            return
        if out:
            transport.write(b"".join(out))
        if close:
            transport.close()

    def _next_request(self) -> bool | None:
        """Consume one complete request; return whether to close after it, or None if incomplete."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                raise BadRequest("header block too large")
            return None
        head = bytes(buf[:end]).lower()
        request_line = head.split(b"\r\n", 1)[0].rstrip()
        if not request_line.startswith((b"get ", b"post ", b"put ", b"delete ", b"head ", b"patch ")):
            raise BadRequest("not an HTTP request")
        body_start = end + 4
        body_len = self._body_length(head, body_start)
        if body_len is None:
            return None
        del buf[: body_start + body_len]
        return wants_close(request_line, head)

    def _body_length(self, head: bytes, body_start: int) -> int | None:
        if b"chunked" in (header_value(head, b"transfer-encoding:") or b""):
            return chunked_length(self._buf, body_start)
        raw = header_value(head, b"content-length:")
        try:
            length = int(raw) if raw is not None else 0
        except ValueError as exc:
            raise BadRequest("bad content-length") from exc
        if length < 0 or length > MAX_BODY:
            raise BadRequest("bad content-length")
        return length if len(self._buf) >= body_start + length else None


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BranchProtocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"branch server listening on {host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
