"""A lean HTTP/1.1 client for branch calls and the alert webhook: keep-alive pools, one timer per request.

Why not aiohttp: under a saga load with real branch URLs, aiohttp's client took a fifth to a quarter
of the coordinator's CPU (request and response objects, yarl URLs, timeout contexts, payload
registries). A branch call needs none of that: one request built by hand into one `write`, a reply
parsed by llhttp in C (httptools), and the status and the body (up to a cap) handed back.

Behaviour kept from the aiohttp session it replaces (`limit=0, keepalive_timeout=30`): per-origin
pools of idle keep-alive connections, reused last-in first-out, closed after 30 s idle (and at most
`max_idle` kept per origin); no cap on concurrent connections; a total timeout per request (connect,
send, reply, redirects), and within it a shorter one for opening a connection (TCP, a proxy's CONNECT,
the TLS handshake), so that a host that never answers costs `connect_timeout`, not the whole request's;
redirects followed as aiohttp and Go's resty do (at most 10; 303, and 301/302 after a POST, become a
GET without body). Every failure is a `BranchHttpError`. Not supported, as branch calls never need them:
HEAD (its reply would be read as having a body), protocol upgrades, request pipelining, HTTP/2.

Proxies (`Proxies`, Go's HTTP_PROXY/HTTPS_PROXY/NO_PROXY rules, fixed when the client is built): an http
call through a proxy sends it the absolute URL (with Proxy-Authorization); an https one opens a tunnel
with CONNECT and speaks TLS to the branch through it. An origin's route never changes during the client's
life, so its pool holds connections of that route only. TLS: the `ssl` context given (a private CA, a
client certificate: `client_tls`), else the system's CAs.

With a `BranchPolicy` (branch calls; the alert webhook's client has none): a redirect to another origin
is followed only if the policy says so, else the call fails with `BranchDenied`. A new connection's
host is resolved here, not by `create_connection`: every address it resolved to is checked, and the
connection goes to one of those very addresses (the name stays the Host header and the TLS server name),
so a DNS answer cannot change between the check and the connect. The addresses (or the refusal) are
kept `resolve_ttl` seconds per (host, port). Idle connections are pooled per origin: every one was
checked when it was opened, under the client's one policy. Through a proxy, which resolves the name
itself, the host is checked as at submit (its name, or the address it spells), not what it resolves to.

A reply is read up to `max_reply_bytes` of body (DTM keeps a short excerpt and classifies a reply by
its status and a word of its body): a longer one is handed back cut there, and its connection, with
the rest unread, is closed. Its headers are held to the same size, or the call fails.

A reused idle connection that turns out closed by the server before any byte of the reply arrived
is retried once on a new connection: that is the benign keep-alive race (the server closed an idle
connection just as we reused it), and branch operations are idempotent by DTM's contract. Nothing is
retried once a reply has started, nor on a new connection.
"""

from __future__ import annotations

import asyncio
import functools
import ssl as ssl_module
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urljoin

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from mypy_extensions import mypyc_attr

from fastdtm import http_syntax
from fastdtm.branch_proxy import Proxies, Proxy
from fastdtm.branch_resolver import RESOLVE_TTL, CheckedResolver
from fastdtm.http_syntax import HttpSyntaxError, Origin, Target

if TYPE_CHECKING:
    from fastdtm.branch_policy import BranchPolicy

#: Seconds an idle connection stays pooled (aiohttp's `keepalive_timeout` the session used).
KEEPALIVE: Final = 30.0
#: Redirects followed for one request before giving up (aiohttp's default, and Go net/http's under resty).
MAX_REDIRECTS: Final = 10
#: Bytes of a reply body read, and of its headers accepted (Settings.branch_max_reply_bytes).
MAX_REPLY_BYTES: Final = 64 << 10
#: Idle connections kept per origin (Settings.branch_max_idle).
MAX_IDLE: Final = 64
#: Seconds to open a connection, TLS handshake and proxy tunnel included (Settings.branch_connect_timeout):
#: above one lost SYN's retransmission (1 s), well below a slow branch's request timeout.
CONNECT_TIMEOUT: Final = 2.0
#: Origins whose proxy route is remembered before the memo starts again.
_MAX_ROUTES: Final = 4096

_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
# Framing is ours alone: a caller's Content-Length or Transfer-Encoding could desync a pooled connection.
_FRAMING: Final = frozenset({"content-length", "transfer-encoding"})
_FRAMING_AND_PROXY_AUTH: Final = _FRAMING | {"proxy-authorization"}
_Reply = tuple[int, bytes, bytes | None]
"""Status, body, Location header."""


# mypyc compiles no subclass of a built-in exception but Exception: this one stays a Python class.
@mypyc_attr(native_class=False)
class BranchHttpError(OSError):
    """A request that got no complete HTTP reply: not connected, reset, timed out, malformed, redirect loop."""


@mypyc_attr(native_class=False)
class BranchDenied(BranchHttpError):
    """The branch policy refused the call before it was made: a denied host or address, a redirect elsewhere."""


class NotSent(Exception):
    """The request was not sent: its send deadline had passed. Not an OSError: the branch was never called,
    so the call is neither a success nor a failure (the engine re-checks its hold, then calls again)."""


@mypyc_attr(native_class=False)
class _Stale(BranchHttpError):
    """The connection closed before any byte of the reply: on a reused idle connection, worth one retry."""


def parse_url(url: str) -> Target:
    """`http_syntax.parse_url`, raising BranchHttpError: a URL the client cannot call fails like a call."""
    try:
        return http_syntax.parse_url(url)
    except HttpSyntaxError as exc:
        raise BranchHttpError(str(exc)) from None


def check_header(name: str, value: str) -> None:
    """`http_syntax.check_header`, raising BranchHttpError."""
    try:
        http_syntax.check_header(name, value)
    except HttpSyntaxError as exc:
        raise BranchHttpError(str(exc)) from None


def encode_request(
    method: str, target: Target, headers: Mapping[str, str], body: bytes | None, proxy: Proxy | None = None
) -> bytes:
    """The request's bytes, ready for one write. A POST always says its length, 0 included (XA's empty POST).
    With `proxy` (an http:// target through it), the request line holds the absolute URL, as proxies want."""
    if proxy is None:
        lines, ours = [f"{method} {target.path} HTTP/1.1"], _FRAMING
    else:
        lines, ours = _proxied(method, target, proxy)
    given: set[str] = set()
    for name, value in headers.items():
        try:
            http_syntax.check_header(name, value)
        except HttpSyntaxError as exc:
            raise BranchHttpError(str(exc)) from None
        key = name.lower()
        if key in ours:
            continue
        given.add(key)
        lines.append(f"{name}: {value}")
    if "host" not in given:
        lines.append(f"Host: {target.host}")
    if "connection" not in given:
        lines.append("Connection: keep-alive")
    if target.auth is not None and "authorization" not in given:
        lines.append(f"Authorization: {target.auth}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body) if body else 0}")
    lines.append("\r\n")
    head = "\r\n".join(lines).encode()
    return head + body if body else head


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying one request at a time; its reply resolves `_waiter`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[_Connection], None], max_reply: int = MAX_REPLY_BYTES
    ) -> None:
        self._loop = loop
        self._on_lost = on_lost
        self._max_reply = max_reply
        self._parser = HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[_Reply] | None = None
        self.closed = False
        self.idle_since = 0.0
        # The reply being read.
        self._received = False  # a byte of it arrived: from then on, never retry
        self._done = False
        self._keep_alive = False
        self._headers_done = False
        self._framed = False  # Content-Length or chunked; otherwise the body ends when the server closes
        self._location: bytes | None = None
        self._chunks: list[bytes] = []
        self._head_bytes = 0  # received before the headers were complete
        self._room = max_reply  # body bytes that may still be kept

    @property
    def usable(self) -> bool:
        return not self.closed and self._transport is not None and not self._transport.is_closing()

    @property
    def reusable(self) -> bool:
        return self._done and self._keep_alive and self.usable

    async def exchange(self, payload: bytes, deadline: float, timeout: float) -> _Reply:
        transport = self._transport
        if transport is None or not self.usable:
            raise _Stale("connection closed before the request was sent")
        self._received = self._done = self._headers_done = False
        self._head_bytes = 0
        waiter: asyncio.Future[_Reply] = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_at(deadline, self._expire, timeout)
        try:
            transport.write(payload)
            return await waiter
        except BaseException:
            # Timed out, broken, or the caller was cancelled: the reply is unread or half read, and
            # whatever comes next on this connection could not be matched to a request.
            self.close()
            raise
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.abort()

    def _fail(self, exc: BranchHttpError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _expire(self, timeout: float) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # not a reply that came in just before the deadline
            self._fail(BranchHttpError(f"timeout: no complete reply within {timeout:g} s"))

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it. Both asyncio and
        # uvloop set TCP_NODELAY on TCP connections already.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes while idle: the server is out of step with us
            return
        self._received = True
        if not self._headers_done:
            self._head_bytes += len(data)  # what httptools may buffer of a header before it calls on_header
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail(BranchHttpError("malformed reply: protocol upgrade is not supported"))
        except HttpParserError as exc:
            self._fail(BranchHttpError(f"malformed reply: {exc}"))
        else:
            if not self._headers_done and self._head_bytes > self._max_reply:
                self._fail(BranchHttpError(f"reply headers over {self._max_reply} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self._headers_done and not self._framed:
            waiter.set_result((self._parser.get_status_code(), b"".join(self._chunks), self._location))
            return
        reason = f": {exc}" if exc else ""
        if self._received:
            waiter.set_exception(BranchHttpError(f"connection lost in the middle of the reply{reason}"))
        else:
            waiter.set_exception(_Stale(f"connection closed by the server before any reply{reason}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._done:
            self.close()  # a second reply to one request: out of step
            return
        self._headers_done = self._framed = False
        self._location = None
        self._chunks = []
        self._room = self._max_reply

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._framed = True
        elif name == b"transfer-encoding":
            self._framed = b"chunked" in value.lower()
        elif name == b"location":
            self._location = value

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        room = self._room - len(body)
        if room >= 0:
            self._room = room
            self._chunks.append(body)
        elif not self.closed:
            self._cut(body)

    def _cut(self, body: bytes) -> None:
        """The body goes past the cap: the reply is what fits, and the connection, the rest unread, goes."""
        self._chunks.append(body[: self._room])
        self._room = 0
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), b"".join(self._chunks), self._location))
        self.close()

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            self._headers_done = False  # an interim reply (100 Continue): the final one follows
            return
        self._done = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((status, b"".join(self._chunks), self._location))


def _proxied(method: str, target: Target, proxy: Proxy) -> tuple[list[str], frozenset[str]]:
    """The first lines of a request to `proxy` for `target`, and the caller's headers it leaves out."""
    lines = [f"{method} {target.origin[0]}://{target.host}{target.path} HTTP/1.1"]
    if proxy.auth is None:
        return lines, _FRAMING
    # As Go: the proxy URL's credentials win over a caller's own Proxy-Authorization.
    return [*lines, f"Proxy-Authorization: {proxy.auth}"], _FRAMING_AND_PROXY_AUTH


def _via(proxy: Proxy | None) -> str:
    return "" if proxy is None else f" through the proxy {proxy}"


class _Tunnel(asyncio.Protocol):
    """A proxy connection until its reply to CONNECT: then the TLS connection to the branch takes it over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._reply: asyncio.Future[bytes] = loop.create_future()
        self._head = b""

    async def open(self, transport: asyncio.BaseTransport, proxy: Proxy, host: str, port: int) -> None:
        """Asks the proxy for a tunnel to host:port; raises BranchHttpError unless it answers 2xx."""
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy.auth is not None:
            lines.append(f"Proxy-Authorization: {proxy.auth}")
        cast(asyncio.Transport, transport).write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self._reply
        status_line = head.partition(b"\r\n")[0].decode("latin-1")
        version, _, rest = status_line.partition(" ")
        status = rest[:3]
        if not version.startswith("HTTP/1.") or not status.isdigit():
            raise BranchHttpError(f"the proxy {proxy} answered CONNECT with {status_line[:100]!r}")
        if not 200 <= int(status) < 300:
            raise BranchHttpError(f"the proxy {proxy} refused CONNECT {authority}: {status_line[9:100]}")

    def data_received(self, data: bytes) -> None:
        if self._reply.done():
            return  # bytes past the reply, before TLS starts: the proxy is out of step, the handshake fails
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end >= 0:
            self._reply.set_result(self._head[:end])
        elif len(self._head) > MAX_REPLY_BYTES:
            self._reply.set_exception(BranchHttpError(f"the proxy's reply to CONNECT is over {MAX_REPLY_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._reply.done():
            reason = f": {exc}" if exc else ""
            self._reply.set_exception(
                BranchHttpError(f"the proxy closed the connection before its reply to CONNECT{reason}")
            )


class HttpClient:
    """Pools of idle keep-alive connections per origin; one per process, built and closed by the lifespan."""

    def __init__(
        self,
        keepalive: float = KEEPALIVE,
        ssl: ssl_module.SSLContext | None = None,
        *,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        max_idle: int = MAX_IDLE,
        policy: BranchPolicy | None = None,
        resolve_ttl: float = RESOLVE_TTL,
        connect_timeout: float = CONNECT_TIMEOUT,
        proxies: Proxies | None = None,
    ) -> None:
        """`ssl`: the TLS context for https origins; by default the system's trust store, made on first use.
        `max_reply_bytes`: of a reply body read (longer ones are cut); `max_idle`: idle connections per origin.
        `policy`: where calls may go (None: anywhere, redirects followed everywhere); `resolve_ttl`: seconds a
        host's checked addresses are kept. `connect_timeout`: seconds to open a connection (within the
        request's own timeout). `proxies`: the proxy rules (None: every connection direct)."""
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._proxies = proxies
        self._routes: dict[Origin, Proxy | None] = {}
        self._resolver = CheckedResolver(policy, resolve_ttl) if policy is not None else None
        self._keepalive = keepalive
        self._max_reply = max_reply_bytes
        self._max_idle = max_idle
        # Idle connections: most recently used last, so reuse pops the warmest one.
        self._pools: dict[Origin, list[_Connection]] = {}
        self._live: set[_Connection] = set()  # idle or busy, for close()
        self._sweeper: asyncio.TimerHandle | None = None
        self._ssl = ssl
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
        send_by: float | None = None,
    ) -> tuple[int, bytes]:
        """Sends one request and returns the final reply's status and body; raises BranchHttpError.

        `send_by` (a `time.monotonic()` value, not the loop's time, which uvloop caches per iteration): no
        request of this call, redirects included, is written after it; raises NotSent instead. The check
        and the write happen with no `await` between them."""
        deadline = asyncio.get_running_loop().time() + timeout
        for _ in range(MAX_REDIRECTS + 1):
            try:  # not through parse_url: a call less on every request
                target = http_syntax.parse_url(url)
            except HttpSyntaxError as exc:
                raise BranchHttpError(str(exc)) from None
            if self._proxies is None:
                payload = encode_request(method, target, headers, body)
            else:  # only an http:// call through a proxy is written differently; an https one tunnels
                proxy = self._route(target.origin) if target.origin[0] == "http" else None
                payload = encode_request(method, target, headers, body, proxy)
            status, reply, location = await self._send(target, payload, deadline, timeout, send_by)
            if location is None or status not in _REDIRECTS:
                return status, reply
            next_url = urljoin(url, location.decode("utf-8", "replace"))
            if status == 303 or (status in (301, 302) and method == "POST"):
                method, body = "GET", None
            if parse_url(next_url).origin != target.origin:
                if self._policy is not None and not self._policy.follow_redirects:
                    raise BranchDenied(
                        f"redirect not followed: {status} to another origin, Location: {next_url[:300]} "
                        "(--branch-follow-redirects follows it)"
                    )
                # As aiohttp: credentials are not handed to another origin.
                headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
            url = next_url
        raise BranchHttpError(f"too many redirects: more than {MAX_REDIRECTS}, the last to {url}")

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._live):
            conn.close()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports report connection_lost before the loop moves on

    async def _send(
        self, target: Target, payload: bytes, deadline: float, timeout: float, send_by: float | None
    ) -> _Reply:
        conn = self._idle(target.origin)
        if conn is not None:
            try:
                return await self._exchange(target.origin, conn, payload, deadline, timeout, send_by)
            except _Stale:
                pass  # the keep-alive race: the server closed it as we reused it; once more, on a new one
        conn = await self._connect(target.origin, deadline, timeout)
        try:
            return await self._exchange(target.origin, conn, payload, deadline, timeout, send_by)
        except _Stale as exc:
            raise BranchHttpError(str(exc)) from None  # callers see one exception type, never _Stale

    async def _exchange(
        self, origin: Origin, conn: _Connection, payload: bytes, deadline: float, timeout: float, send_by: float | None
    ) -> _Reply:
        if send_by is not None and (late := time.monotonic() - send_by) >= 0:
            # Unused, so as good as before: back to the pool (a connection not yet used once is too).
            if conn.usable and not self._closed:
                self._release(origin, conn)
            else:
                conn.close()
            raise NotSent(f"the send deadline passed {late:.3f} s ago")
        # No await from the check above to the write in `exchange`: nothing can run in between.
        reply = await conn.exchange(payload, deadline, timeout)
        if conn.reusable and not self._closed:
            self._release(origin, conn)
        else:
            conn.close()
        return reply

    def _idle(self, origin: Origin) -> _Connection | None:
        pool = self._pools.get(origin)
        while pool:
            conn = pool.pop()
            if conn.usable:
                return conn
        return None

    def _release(self, origin: Origin, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = []
        if len(pool) >= self._max_idle:
            conn.close()  # enough are idle for this origin: a burst of calls leaves no more sockets open than this
            return
        pool.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    @property
    def _sweep_every(self) -> float:
        # A connection is closed between `keepalive` and `keepalive` + this after its last use.
        return min(5.0, self._keepalive / 2)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = None
        cutoff = loop.time() - self._keepalive
        for origin, pool in list(self._pools.items()):
            fresh: list[_Connection] = []
            for conn in pool:
                if conn.usable and conn.idle_since > cutoff:
                    fresh.append(conn)
                else:
                    conn.close()
            if fresh:
                self._pools[origin] = fresh
            else:
                del self._pools[origin]
        if self._pools:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    async def _connect(self, origin: Origin, deadline: float, timeout: float) -> _Connection:
        if self._closed:
            raise BranchHttpError("the HTTP client is closed")
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        ssl = self._ssl_context() if scheme == "https" else None
        factory = functools.partial(_Connection, loop, self._live.discard, self._max_reply)
        proxy = self._route(origin) if self._proxies is not None else None
        connect_by = min(deadline, loop.time() + self._connect_timeout)
        try:
            async with asyncio.timeout_at(connect_by):
                if proxy is not None:
                    conn = await self._connect_proxied(proxy, factory, host, port, ssl)
                elif self._resolver is None:
                    _, conn = await loop.create_connection(
                        factory, host, port, ssl=ssl, server_hostname=host if ssl else None
                    )
                else:
                    conn = await self._connect_checked(self._resolver, factory, host, port, ssl)
        except BranchHttpError:
            raise
        except TimeoutError as exc:
            within = f"{timeout:g} s" if connect_by == deadline else f"the connect timeout, {self._connect_timeout:g} s"
            raise BranchHttpError(f"timeout: not connected to {host}:{port}{_via(proxy)} within {within}") from exc
        except OSError as exc:
            raise BranchHttpError(f"cannot connect to {host}:{port}{_via(proxy)}: {exc}") from exc
        self._live.add(conn)
        return conn

    def _route(self, origin: Origin) -> Proxy | None:
        """The proxy of `origin` (`self._proxies` is set), remembered: it is asked once per request."""
        try:
            return self._routes[origin]
        except KeyError:
            pass
        assert self._proxies is not None
        if len(self._routes) >= _MAX_ROUTES:
            self._routes.clear()
        route = self._routes[origin] = self._proxies.route(origin)
        return route

    async def _connect_proxied(
        self, proxy: Proxy, factory: Callable[[], _Connection], host: str, port: int, ssl: ssl_module.SSLContext | None
    ) -> _Connection:
        """A connection to the proxy, for http; for https, a TLS connection to the branch through a CONNECT
        tunnel. The proxy resolves the name: the policy checks the host as it does at submit."""
        if self._policy is not None and (refusal := self._policy.host_refusal(host)) is not None:
            raise BranchDenied(f"refused by the branch policy: {refusal}")
        loop = asyncio.get_running_loop()
        if ssl is None:
            _, conn = await loop.create_connection(factory, proxy.host, proxy.port)
            return conn
        transport, tunnel = await loop.create_connection(functools.partial(_Tunnel, loop), proxy.host, proxy.port)
        try:
            await tunnel.open(transport, proxy, host, port)
            conn = factory()
            tls = await loop.start_tls(transport, conn, ssl, server_hostname=host)
        except BaseException:
            transport.abort()
            raise
        if tls is None:  # the transport closed during the handshake
            raise BranchHttpError(f"connection to {host}:{port}{_via(proxy)} closed during the TLS handshake")
        conn.connection_made(tls)  # start_tls does not: the protocol was made before its transport
        return conn

    async def _connect_checked(
        self,
        resolver: CheckedResolver,
        factory: Callable[[], _Connection],
        host: str,
        port: int,
        ssl: ssl_module.SSLContext | None,
    ) -> _Connection:
        """Connects to the first of the host's checked addresses that accepts; raises OSError as connect does."""
        loop = asyncio.get_running_loop()
        error: OSError | None = None
        addresses, refusal = await resolver.addresses(host, port)
        if refusal:
            raise BranchDenied(f"refused by the branch policy: {refusal}")
        for address in addresses:
            try:
                _, conn = await loop.create_connection(
                    factory, address, port, ssl=ssl, server_hostname=host if ssl else None
                )
            except OSError as exc:
                error = exc
                continue
            return conn
        raise error or OSError(f"no address for {host}")

    def _ssl_context(self) -> ssl_module.SSLContext:
        if self._ssl is None:  # built on first use: loading the CA store takes milliseconds
            self._ssl = ssl_module.create_default_context()
        return self._ssl
