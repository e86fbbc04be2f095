"""A scripted, recording branch ("busi") server for end-to-end tests: this module owns a real HTTP/1.1
keep-alive server on a loopback port that records every call as a `Call`, answers each path from its
script of `Reply`s (the last one repeating), or from a hook for branches that must do work, and lets a
test wait for calls to arrive. It runs in daemon threads, so tests stay synchronous."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from .redis_servers import HOST

SUCCESS_BODY = '{"dtm_result":"SUCCESS"}'
DEFAULT_BODIES: dict[int, str] = {
    200: SUCCESS_BODY,
    409: '{"dtm_result":"FAILURE"}',
    425: '{"dtm_result":"ONGOING"}',
    500: '{"message":"ERROR"}',
}


@dataclass(frozen=True, slots=True)
class Call:
    """One request as the branch server received it, recorded on arrival (before any delay or reply)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer: `body=None` means the default body for the status; `delay` holds the reply back;
    `headers` are sent besides Content-Type and Content-Length (a redirect's Location)."""

    status: int = 200
    body: str | bytes | None = None
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()

    def payload(self) -> bytes:
        body = default_body(self.status) if self.body is None else self.body
        return body.encode() if isinstance(body, str) else body


ScriptEntry = int | tuple[int, str | bytes] | Reply
Hook = Callable[[Call], Reply | None]


def default_body(status: int) -> str:
    if status in DEFAULT_BODIES:
        return DEFAULT_BODIES[status]
    return SUCCESS_BODY if 200 <= status < 300 else json.dumps({"message": f"HTTP {status}"})


def as_reply(entry: ScriptEntry) -> Reply:
    if isinstance(entry, Reply):
        return entry
    if isinstance(entry, int):
        return Reply(entry)
    status, body = entry
    return Reply(status, body)


@dataclass
class _State:
    """Everything the handler threads share; guarded by `cond`."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    calls: list[Call] = field(default_factory=list)
    scripts: dict[str, list[Reply]] = field(default_factory=dict)
    hooks: dict[str, Hook] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    connections: set[socket.socket] = field(default_factory=set)
    closed: threading.Event = field(default_factory=threading.Event)


class BusiServer:
    """The branch server. Every path answers GET and POST; unscripted paths answer 200 SUCCESS."""

    def __init__(self) -> None:
        self._state = _State()
        self._server = _HTTPServer((HOST, 0), _Handler, self._state)
        self.port = int(self._server.server_address[1])
        # A short poll interval keeps close() (and so every test's teardown) from waiting the default 0.5 s.
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, name=f"busi-{self.port}", daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def url(self, path: str = "") -> str:
        return self.base + path

    def script(self, path: str, entries: Sequence[ScriptEntry]) -> None:
        """Answer the next calls to `path` with `entries` in order; the last entry repeats forever."""
        if not entries:
            raise ValueError("a script needs at least one entry")
        with self._state.cond:
            self._state.scripts[path] = [as_reply(entry) for entry in entries]

    def on(self, path: str, hook: Hook) -> None:
        """Run `hook` for each call to `path`; a None result falls back to the script."""
        with self._state.cond:
            self._state.hooks[path] = hook

    def calls(self, path: str | None = None) -> list[Call]:
        with self._state.cond:
            return [call for call in self._state.calls if path is None or call.path == path]

    def wait_calls(self, path: str, n: int, timeout: float = 10.0) -> list[Call]:
        """Block until `path` has had at least `n` calls; return them all."""
        with self._state.cond:
            if self._state.cond.wait_for(lambda: len(self._matching(path)) >= n, timeout):
                return self._matching(path)
            seen = [(call.method, call.path) for call in self._state.calls]
        raise AssertionError(f"{path}: wanted {n} calls within {timeout}s; all calls so far: {seen}")

    @property
    def errors(self) -> list[str]:
        """Tracebacks of hooks that raised (their callers got a 500)."""
        with self._state.cond:
            return list(self._state.errors)

    def reset(self) -> None:
        with self._state.cond:
            self._state.calls.clear()
            self._state.scripts.clear()
            self._state.hooks.clear()
            self._state.errors.clear()

    def close(self) -> None:
        self._state.closed.set()
        self._server.shutdown()
        self._server.server_close()
        # The server under test pools keep-alive connections; their handler threads would wait forever.
        with self._state.cond:
            connections = list(self._state.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _matching(self, path: str) -> list[Call]:
        return [call for call in self._state.calls if call.path == path]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Tests open and close many servers; a TIME_WAIT port must not block the next bind.
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], state: _State) -> None:
        self.state = state
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping a pooled connection, or close() cutting one, is normal here, not a test failure.
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.state.cond:
            self.server.state.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.state.cond:
            self.server.state.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        call = self._record()
        reply = self._reply_for(call)
        if reply.delay > 0 and self.server.state.closed.wait(reply.delay):
            self.close_connection = True
            return
        payload = reply.payload()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _record(self) -> Call:
        parts = urlsplit(self.path)
        query = {name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {name.lower(): value for name, value in self.headers.items()}
        call = Call(self.command, parts.path, query, headers, self._read_body(), time.monotonic())
        state = self.server.state
        with state.cond:
            state.calls.append(call)
            state.cond.notify_all()
        return call

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while size := int(self.rfile.readline().split(b";", 1)[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailer fields, unused
        return b"".join(chunks)

    def _reply_for(self, call: Call) -> Reply:
        state = self.server.state
        with state.cond:
            hook = state.hooks.get(call.path)
        if hook is not None:
            try:
                reply = hook(call)
            except Exception:
                with state.cond:
                    state.errors.append(traceback.format_exc())
                return Reply(500, json.dumps({"message": f"busi hook for {call.path} raised"}))
            if reply is not None:
                return reply
        with state.cond:
            script = state.scripts.get(call.path)
            if not script:
                return Reply(200)
            return script.pop(0) if len(script) > 1 else script[0]
