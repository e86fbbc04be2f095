"""uvicorn's httptools protocol, with the DTM routes that DirectRoutes knows served without ASGI.

Why: on an I/O-free saga, uvicorn's request cycle and the ASGI messages around a reply were about a
quarter of a node's CPU: a cycle object and an `asyncio.Event` per request, `receive` and two `send`
messages, and a header check (two regexes per header) on every reply. The replies of DTM's routes
are small and whole, so none of that is needed to produce them.

How: uvicorn drives each request through a "cycle" object (`self.cycle`): the parser callbacks fill
its `body`, clear `more_body` and `set()` its `message_event`; `connection_lost` sets `disconnected`;
`shutdown` clears `keep_alive`; a request that arrives before the previous reply is done waits in
`self.pipeline` and is started with `cycle.run_asgi(app)`. For a request DirectRoutes knows,
`on_headers_complete` installs a `_DirectCycle`, which honours exactly those attributes, so
keep-alive, pipelining, flow control, graceful shutdown and disconnects stay uvicorn's. Its
`run_asgi` waits for the body, asks `DirectRoutes.respond` (the same endpoint, error mapping and
metrics as the ASGI path) and writes the reply with one `write`.

Everything else takes uvicorn's path unchanged: other paths and methods, percent-encoded paths, a
chunked or oversized body (the ASGI path refuses it as it streams in), `Expect: 100-continue`,
upgrades, HEAD, a root path, a concurrency limit, or an app that is not DirectRoutes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from starlette.responses import Response
from starlette.types import Message
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from fastdtm.api.direct import DirectRoute, DirectRoutes

log = logging.getLogger(__name__)

#: uvicorn's `http` setting for `fastdtm serve`.
PROTOCOL: Final = "fastdtm.api.protocol:DirectHttpToolsProtocol"
#: What the shortcut uses of uvicorn's protocol beyond the asyncio.Protocol interface.
_USES: Final = ("_start_asgi_task", "on_response_complete", "on_headers_complete", "on_body", "shutdown")
#: What uvicorn answers when an app fails before replying (without its date and server headers).
_INTERNAL_ERROR: Final = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


def uvicorn_http() -> str:
    """uvicorn's `http` setting: this protocol, or plain httptools if uvicorn's internals moved."""
    missing = [name for name in _USES if not hasattr(HttpToolsProtocol, name)]
    if missing:
        log.warning("this uvicorn's protocol lacks %s: serving every route through ASGI", ", ".join(missing))
        return "httptools"
    return PROTOCOL


class DirectHttpToolsProtocol(HttpToolsProtocol):
    """Pass as uvicorn's `http` (`fastdtm.api.protocol:DirectHttpToolsProtocol`)."""

    def on_headers_complete(self) -> None:
        route = self._direct_route()
        if route is None:
            super().on_headers_complete()
            return
        http_version = self.parser.get_http_version()
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        existing = self.cycle
        self.cycle = cycle = _DirectCycle(  # type: ignore[assignment]
            self.scope,
            route,
            self.app,
            self.transport,
            self.flow,
            self.server_state.default_headers,
            keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
        else:
            # Pipelined behind a reply still in progress: uvicorn's queue starts it after that one.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]

    def _direct_route(self) -> DirectRoute | None:
        """The route if this request may skip ASGI (see the module's docstring), with the scope filled in."""
        app = self.app
        if not isinstance(app, DirectRoutes) or self.root_path or self.limit_concurrency is not None:
            return None
        method = self.parser.get_method().decode("ascii")
        if method not in ("GET", "POST") or self.expect_100_continue or self.parser.should_upgrade():
            return None
        raw_path, _, query = self.url.partition(b"?")
        if b"%" in raw_path or b"#" in query:
            return None
        path = raw_path.decode("ascii")  # as uvicorn decodes it (a non-ASCII target fails the same way)
        route = app.find(method, path)
        if route is None or not self._body_is_small():
            return None
        scope = self.scope
        scope["method"] = method
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        return route

    def _body_is_small(self) -> bool:
        """A Content-Length within the node's limit, or no body at all (no chunked transfer)."""
        settings = self.app_state.get("settings")
        limit = settings.max_body_bytes if settings is not None else 0
        for name, value in self.headers:
            if name == b"content-length":
                return value.isdigit() and int(value) <= limit
            if name == b"transfer-encoding":
                return False
        return True


class _DirectCycle:
    """Stands in for uvicorn's RequestResponseCycle (the attributes its protocol reads and writes)."""

    __slots__ = (
        "app",
        "body",
        "default_headers",
        "disconnected",
        "flow",
        "keep_alive",
        "message_event",
        "more_body",
        "on_response",
        "received",
        "response_complete",
        "route",
        "scope",
        "transport",
    )

    def __init__(
        self,
        scope: Any,
        route: DirectRoute,
        app: DirectRoutes,
        transport: asyncio.Transport,
        flow: FlowControl,
        default_headers: list[tuple[bytes, bytes]],
        *,
        keep_alive: bool,
        on_response: Callable[[], None],
    ) -> None:
        self.scope = scope
        self.route = route
        self.app = app
        self.transport = transport
        self.flow = flow
        self.default_headers = default_headers
        self.keep_alive = keep_alive
        self.on_response = on_response
        self.body = bytearray()
        self.more_body = True
        self.disconnected = False
        self.received = False
        self.response_complete = False
        self.message_event = _Wakeup()

    async def run_asgi(self, app: object) -> None:
        """Named for uvicorn, which starts every cycle this way; `app` is the DirectRoutes already held."""
        try:
            while self.more_body and not self.disconnected:
                # uvicorn pauses reading past its high-water mark until the app reads: read on.
                self.flow.resume_reading()
                await self.message_event.wait()
            if self.disconnected:
                return
            response = await self.app.respond(self.route, self.scope, self._receive)
        except Exception:
            log.exception("%s %s failed", self.scope["method"], self.scope["path"])
            if not self.disconnected:
                self.transport.write(_INTERNAL_ERROR)
                self.transport.close()
            self.response_complete = True
            return
        await self._reply(response)

    async def _receive(self) -> Message:
        # Called once the whole body is in: it comes in one message; a later call means the app
        # waits for the client to go, and the reply does not depend on that here.
        if self.disconnected or self.received:
            return {"type": "http.disconnect"}
        self.received = True
        return {"type": "http.request", "body": bytes(self.body), "more_body": False}

    async def _reply(self, response: Response) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            self.response_complete = True
            return
        head: list[bytes | memoryview] = [STATUS_LINE[response.status_code]]
        for name, value in (*self.default_headers, *response.raw_headers):
            head += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head += (b"\r\n", response.body)
        self.transport.write(b"".join(head))
        self.response_complete = True
        if not self.keep_alive:
            self.transport.close()
        self.on_response()  # in uvicorn's order: it arms the keep-alive timer only on an open connection


class _Wakeup:
    """The `message_event` uvicorn sets when body arrives or the client goes; one waiter at a time."""

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
