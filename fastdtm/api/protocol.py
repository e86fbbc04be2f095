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

Bounds, on both paths (uvicorn's httptools protocol has none but the keep-alive timeout): the parser
buffers a request's line and headers whole, so their bytes are counted as they arrive and a head over
`max_header_bytes` is answered 431; a connection whose head is not all in `header_timeout` after its
first byte (or after the connection opened) is closed; a body not all in `body_timeout` after its
headers gets 408 and the connection is closed. The timers are armed only when a read ends inside a
head or a body, and disarmed at that part's end: a request that arrives in one read arms none.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import uvicorn
from httptools import HttpParserError, HttpParserUpgrade
from starlette.responses import Response
from starlette.types import Message
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from fastdtm.api.direct import DirectRoute, DirectRoutes
from fastdtm.config import Settings

log = logging.getLogger(__name__)

#: What this protocol uses of uvicorn's, asyncio.Protocol's interface aside, as (class, methods it calls or
#: overrides, instance attributes it reads or sets); `missing_internals` looks for each before a node uses it.
#: On the request cycle: what uvicorn's protocol reads and sets on it (`_DirectCycle` stands in for it).
_USES: Final = (
    (
        HttpToolsProtocol,
        (
            "_start_asgi_task",
            "on_response_complete",
            "on_headers_complete",
            "on_message_complete",
            "on_body",
            "shutdown",
            "send_400_response",
            "_should_upgrade",
            "handle_websocket_upgrade",
            "_unsupported_upgrade_warning",
        ),
        (
            "app",
            "app_state",
            "cycle",
            "expect_100_continue",
            "flow",
            "headers",
            "limit_concurrency",
            "logger",
            "loop",
            "parser",
            "pipeline",
            "root_path",
            "scope",
            "server_state",
            "timeout_keep_alive_task",
            "transport",
            "url",
        ),
    ),
    (
        RequestResponseCycle,
        ("run_asgi",),
        ("body", "more_body", "message_event", "disconnected", "keep_alive", "response_complete", "response_started"),
    ),
    (FlowControl, ("pause_reading", "resume_reading", "drain"), ("read_paused", "write_paused")),
    (ServerState, (), ("default_headers",)),
)
#: Before 0.53, uvicorn's ASGI path kept a connection open after `Connection: keep-alive, close` (it looked
#: for the exact header `connection: close`) and sent no `connection: close` on an HTTP/1.0 reply.
_ASGI_READS_CONNECTION_TOKENS: Final = tuple(int(part) for part in uvicorn.__version__.split(".")[:2]) >= (0, 53)
_CLOSE: Final = (b"connection", b"close")
#: What uvicorn answers when an app fails before replying (without its date and server headers).
_INTERNAL_ERROR: Final = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)
# Where the connection is in the current request: between requests, in its head, in its body.
_IDLE: Final = 0
_HEAD: Final = 1
_BODY: Final = 2
_UPGRADED: Final = 3  # a websocket: the connection belongs to uvicorn's websocket protocol from then on


def missing_internals() -> list[str]:
    """The uvicorn internals this protocol uses that this uvicorn lacks (none: the protocol may be used).

    Methods must be on the class; instance attributes among the names uvicorn's own code of the class
    mentions (one renamed or dropped there is missing here)."""
    missing: list[str] = []
    for cls, methods, attributes in _USES:
        mentioned = _names(cls)
        missing += [f"{cls.__name__}.{name}" for name in methods if not callable(getattr(cls, name, None))]
        missing += [f"{cls.__name__}.{name}" for name in attributes if name not in mentioned]
    if not all(status in STATUS_LINE for status in (200, 408, 431, 500)):
        missing.append("STATUS_LINE")
    return missing


def _names(cls: type) -> set[str]:
    """What a class defines or its functions mention (attribute names included), its bases' too."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object or klass.__module__ == "asyncio.protocols":
            continue
        for name, value in vars(klass).items():
            names.add(name)
            function = value.fget if isinstance(value, property) else value
            code = getattr(function, "__code__", None)
            if code is not None:
                names.update(code.co_names)
    return names


class DirectHttpToolsProtocol(HttpToolsProtocol):
    """Pass as uvicorn's `http` (`fastdtm.api.protocol:DirectHttpToolsProtocol`)."""

    # asyncio.Protocol, around uvicorn's

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The lifespan's state; only an app other than fastdtm's would lack it (then: the defaults).
        settings = self.app_state.get("settings")
        if not isinstance(settings, Settings):
            settings = Settings.from_env({})
        self._max_head: int = settings.max_header_bytes
        self._header_timeout: float = settings.header_timeout
        self._body_timeout: float = settings.body_timeout
        self._phase = _IDLE
        #: What the current head may still take of `_max_head`.
        self._head_left = self._max_head
        # A connection that never sends a whole head is closed like one that stops in the middle of one.
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self._header_timeout, self._head_expired)
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase != _BODY:
            # Bytes of a head (or of what comes before one). The phase is set here, not in on_message_begin,
            # to spare a call per request; a head that starts after a message ends in the same read is seen
            # at its next read (until then it is the keep-alive timer's).
            self._phase = _HEAD
            # Counted before the parser sees them: llhttp hands a header to httptools, which buffers it
            # whole before calling on_header, so counting in the callbacks would come too late.
            left = self._head_left - len(data)
            if left < 0:
                self._feed_to_head_limit(data)
                return
            self._head_left = left
        # uvicorn's data_received from here to the timers, inline: it runs for every read (as a call to it
        # and its keep-alive helper it cost about a third of what the bounds add per request).
        keep_alive = self.timeout_keep_alive_task
        if keep_alive is not None:
            keep_alive.cancel()
            self.timeout_keep_alive_task = None
        try:
            self.parser.feed_data(data)
        except HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        phase = self._phase
        if phase == _HEAD:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._header_timeout, self._head_expired)
        elif phase == _BODY and self._body_timer is None:
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_expired)

    def handle_websocket_upgrade(self) -> None:
        self._phase = _UPGRADED
        self._disarm()
        super().handle_websocket_upgrade()

    # httptools callbacks, around uvicorn's

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._head_left = self._max_head
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        route = self._direct_route()
        http_version = self.parser.get_http_version()
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        if route is None:
            if not keep_alive and not _ASGI_READS_CONNECTION_TOKENS and _CLOSE not in self.headers:
                # The request asked to close in a way this uvicorn misses (`keep-alive, close`, HTTP/1.0):
                # the header it does look for makes its reply say so and close, as the direct path does.
                self.headers.append(_CLOSE)
            super().on_headers_complete()
            return
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
            keep_alive=keep_alive,
            on_response=self.on_response_complete,
        )
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
        else:
            # Pipelined behind a reply still in progress: uvicorn's queue starts it after that one.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        HttpToolsProtocol.on_message_complete(self)  # not super(): this runs per request

    # The bounds

    def _feed_to_head_limit(self, data: bytes) -> None:
        """`data` would take the head past its limit: feed what fits, then refuse if the head is still open."""
        allowed = self._head_left
        self._head_left = 0  # on_headers_complete sets it back if the head ends within `allowed`
        if allowed:
            super().data_received(data[:allowed])
            if self.transport.is_closing():
                return
        if self._head_left == 0:
            log.info("a request head over %d bytes: answered 431, connection closed", self._max_head)
            self._answer_and_close(431, "Request line and headers are too large.")
            return
        self.data_received(data[allowed:])

    def _head_expired(self) -> None:
        self._head_timer = None
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and not cycle.response_complete):
            # Not the client's delay: it waits for a reply, or we stopped reading (pipelining).
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_expired)
            return
        log.info("no complete request head within %g s: connection closed", self._header_timeout)
        self.transport.close()

    def _body_expired(self) -> None:
        self._body_timer = None
        if self.flow.read_paused:  # we stopped reading until the app reads: not the client's delay
            self._body_timer = self.loop.call_later(self._body_timeout, self._body_expired)
            return
        log.info("no complete request body within %g s: connection closed", self._body_timeout)
        self._answer_and_close(408, "The request body did not arrive in time.")

    def _answer_and_close(self, status: int, message: str) -> None:
        """Answer `status` if that is still in order, then close the connection."""
        cycle = self.cycle
        # In a body, `cycle` is this request's: answer unless the app has (it may refuse a body unread).
        # In a head, it is the request before, if any: a reply now must not overtake that one's.
        answer = not cycle.response_started if self._phase == _BODY else cycle is None or cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # whatever the app still does for it, nobody is there to read it
        if answer:
            self._write_error(status, message)
        self._disarm()
        self.transport.close()

    def _write_error(self, status: int, message: str) -> None:
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content += (name, b": ", value, b"\r\n")
        body = message.encode("ascii")
        content += (
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
        self.transport.write(b"".join(content))

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # The shortcut

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

    @property
    def response_started(self) -> bool:
        """uvicorn's name: the reply is written whole, so started is done."""
        return self.response_complete

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
