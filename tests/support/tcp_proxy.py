"""A fault-injecting TCP proxy for tests where a node's Redis traffic stalls: this module owns a loopback
listener that forwards every accepted connection byte-exactly to one upstream (host, port), and the faults
a test arms on it: hold every reply (server->client) or every request (client->server) on all connections
for a while, starting at the first client chunk that contains a trigger. One selector loop on one daemon
thread moves all the bytes, so a hold is global and ordered, and tests stay synchronous."""

from __future__ import annotations

import contextlib
import errno
import functools
import selectors
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from .redis_servers import HOST

Address = tuple[str, int]
Direction = Literal["request", "reply"]
Hook = Callable[[], None]

CHUNK = 64 * 1024
#: Bytes one direction of one connection may buffer (held or not yet writable) before its source is not read.
BUFFER_LIMIT = 4 * 1024 * 1024
#: Longest trigger; each connection keeps this many bytes minus one to catch a trigger split across reads.
MAX_TRIGGER = 1024
JOIN_TIMEOUT = 5.0
CONNECT_PENDING = {0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR}
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass(frozen=True, slots=True)
class _Arm:
    direction: Direction
    trigger: bytes
    seconds: float
    on_trigger: Hook | None


@dataclass(slots=True)
class _Hold:
    direction: Direction
    until: float


@dataclass(eq=False, slots=True)
class _Pipe:
    """One direction of a proxied connection: bytes read from `src` wait in `pending` until written to `dst`."""

    direction: Direction
    src: socket.socket
    dst: socket.socket
    pending: bytearray = field(default_factory=bytearray)
    tail: bytes = b""
    eof: bool = False
    shut: bool = False


class _Connection:
    """An accepted client socket and its upstream socket; closed together."""

    def __init__(self, client: socket.socket, upstream: socket.socket, address: tuple[Any, ...]) -> None:
        self.client = client
        self.upstream = upstream
        #: Where `upstream` connects: the proxy's target when this connection was accepted.
        self.address = address
        self.connected = False
        self.closed = False
        self.request = _Pipe("request", client, upstream)
        self.reply = _Pipe("reply", upstream, client)
        self.masks: dict[socket.socket, int] = {}


class HoldingProxy:
    """Listens on 127.0.0.1:`port` from construction until `close()`; forwards each connection to `upstream`.

    `on_trigger` hooks run on the proxy thread while no byte moves through this proxy: keep them short, and
    never make them wait for traffic through this same proxy (that would deadlock until the hook returns)."""

    def __init__(self, upstream: Address) -> None:
        self.upstream = upstream
        family, kind, proto, _, address = socket.getaddrinfo(upstream[0], upstream[1], type=socket.SOCK_STREAM)[0]
        self._upstream_socket_args = (family, kind, proto)
        self._upstream_address = address
        #: Tracebacks of `on_trigger` hooks that raised and of unexpected errors on the proxy thread.
        self.errors: list[str] = []
        self.triggered = threading.Event()
        self.released = threading.Event()
        #: `time.monotonic()` when the last arm fired.
        self.triggered_at: float | None = None
        self._lock = threading.Lock()
        self._armed: _Arm | None = None
        self._hold: _Hold | None = None
        self._cancel_hold = False
        self._stopping = False
        self._closed = False
        self._conns: set[_Connection] = set()
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._waker, self._wake_end = socket.socketpair()
        try:
            # Inherited by accepted sockets, so their TIME_WAIT after close() does not keep the port from a new bind.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((HOST, 0))
            self._listener.listen(128)
            self._listener.setblocking(False)
            self._waker.setblocking(False)
            self._wake_end.setblocking(False)
            self._selector.register(self._listener, READ)
            self._selector.register(self._waker, READ)
        except BaseException:
            self._close_own_sockets()
            raise
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    def move_to(self, upstream: Address) -> None:
        """New connections go to `upstream` from now on; open ones stay where they are, as when a virtual IP
        or a DNS name moves to another server."""
        family, kind, proto, _, address = socket.getaddrinfo(upstream[0], upstream[1], type=socket.SOCK_STREAM)[0]
        with self._lock:
            self.upstream = upstream
            self._upstream_socket_args = (family, kind, proto)
            self._upstream_address = address

    @property
    def thread_name(self) -> str:
        return self._thread.name

    def url_for(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    @property
    def connection_count(self) -> int:
        """Proxied connections currently open."""
        with self._lock:
            return len(self._conns)

    def arm_reply_hold(self, trigger: bytes, seconds: float, on_trigger: Hook | None = None) -> None:
        """At the first client chunk containing `trigger`, forward it, call `on_trigger`, then hold every
        server->client byte on every connection until `seconds` after the trigger. Fires once."""
        self._arm(_Arm("reply", trigger, seconds, on_trigger))

    def arm_request_hold(self, trigger: bytes, seconds: float, on_trigger: Hook | None = None) -> None:
        """At the first client chunk containing `trigger`, hold it and every later client->server byte on every
        connection until `seconds` after the trigger (replies keep flowing), calling `on_trigger`. Fires once."""
        self._arm(_Arm("request", trigger, seconds, on_trigger))

    def disarm(self) -> None:
        """Forget an arm that has not fired and end a running hold now (held bytes go out in order)."""
        with self._lock:
            self._armed = None
            self._cancel_hold = self._hold is not None
        self._wake()

    def wait_triggered(self, timeout: float) -> bool:
        """True once the armed trigger was seen and its `on_trigger` returned."""
        return self.triggered.wait(timeout)

    def wait_released(self, timeout: float) -> bool:
        """True once the hold ended and the held bytes were handed on."""
        return self.released.wait(timeout)

    def close(self) -> None:
        """Close the listener and every proxied connection, and stop the proxy thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
        self._wake()
        if threading.current_thread() is self._thread:
            return
        self._thread.join(JOIN_TIMEOUT)
        if self._thread.is_alive():
            raise RuntimeError(f"{self._thread.name} did not stop within {JOIN_TIMEOUT}s (a stuck on_trigger?)")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the test thread's side ---

    def _arm(self, arm: _Arm) -> None:
        if not 0 < len(arm.trigger) <= MAX_TRIGGER:
            raise ValueError(f"a trigger is 1 to {MAX_TRIGGER} bytes, not {len(arm.trigger)}")
        if arm.seconds < 0:
            raise ValueError("a hold cannot last a negative time")
        with self._lock:
            if self._closed:
                raise RuntimeError("the proxy is closed")
            if self._armed is not None or self._hold is not None:
                raise RuntimeError("already armed or holding; wait_released() or disarm() first")
            self.triggered.clear()
            self.released.clear()
            self._armed = arm

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_end.send(b"x")

    # --- the proxy thread ---

    def _run(self) -> None:
        try:
            while not self._stopping:
                events = self._selector.select(self._select_timeout())
                for key, mask in events:
                    self._dispatch(key, mask)
                self._maybe_release()
        except Exception:
            self.errors.append(traceback.format_exc())
        finally:
            self._teardown()

    def _select_timeout(self) -> float | None:
        hold = self._hold
        return None if hold is None else max(0.0, hold.until - time.monotonic())

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.fileobj is self._listener:
            self._accept()
        elif key.fileobj is self._waker:
            with contextlib.suppress(OSError):
                self._waker.recv(4096)
        elif isinstance(key.data, _Connection) and not key.data.closed:
            conn = key.data
            try:
                self._on_event(conn, key.fileobj is conn.client, mask)
            except OSError:
                # A reset or a refused upstream ends this pair only.
                self._close(conn)
            except Exception:
                self.errors.append(traceback.format_exc())
                self._close(conn)

    def _on_event(self, conn: _Connection, is_client: bool, mask: int) -> None:
        if is_client:
            if mask & READ:
                self._read(conn, conn.request)
            if mask & WRITE and not conn.closed:
                self._pump(conn, conn.reply)
            return
        if not conn.connected:
            self._finish_connect(conn)
            return
        if mask & READ:
            self._read(conn, conn.reply)
        if mask & WRITE and not conn.closed:
            self._pump(conn, conn.request)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors.append(traceback.format_exc())
                return
            with self._lock:
                socket_args, address = self._upstream_socket_args, self._upstream_address
            try:
                upstream = socket.socket(*socket_args)
            except OSError:
                self.errors.append(traceback.format_exc())
                client.close()
                continue
            conn = _Connection(client, upstream, address)
            with self._lock:
                self._conns.add(conn)
            self._guarded(conn, functools.partial(self._open, conn))

    def _open(self, conn: _Connection) -> None:
        for sock in (conn.client, conn.upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if conn.upstream.connect_ex(conn.address) not in CONNECT_PENDING:
            self._close(conn)
            return
        self._update(conn)

    def _finish_connect(self, conn: _Connection) -> None:
        if conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            self._close(conn)
            return
        conn.connected = True
        self._pump(conn, conn.request)

    def _read(self, conn: _Connection, pipe: _Pipe) -> None:
        try:
            data = pipe.src.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            pipe.eof = True
            self._pump(conn, pipe)
            return
        arm = self._match(pipe, data) if pipe.direction == "request" else None
        pipe.pending += data
        if arm is None:
            self._pump(conn, pipe)
            return
        # The hold started in _match: drop write interest in the held direction everywhere, forward the
        # triggering chunk unless it is itself held, then run the hook.
        for other in list(self._conns):
            self._guarded(other, functools.partial(self._update, other))
        self._pump(conn, pipe)
        self._call_hook(arm.on_trigger)
        self.triggered.set()

    def _match(self, pipe: _Pipe, data: bytes) -> _Arm | None:
        """The arm this client chunk fires (starting its hold), if any; keeps the connection's tail either way."""
        tail, pipe.tail = pipe.tail, (pipe.tail + data[-(MAX_TRIGGER - 1) :])[-(MAX_TRIGGER - 1) :]
        with self._lock:
            arm = self._armed
            if arm is None:
                return None
            keep = len(arm.trigger) - 1
            window = tail[-keep:] + data[:keep] if keep else b""
            if arm.trigger not in data and arm.trigger not in window:
                return None
            now = time.monotonic()
            self._armed = None
            self._hold = _Hold(arm.direction, now + arm.seconds)
            self.triggered_at = now
            return arm

    def _call_hook(self, hook: Hook | None) -> None:
        if hook is None:
            return
        try:
            hook()
        except Exception:
            self.errors.append(traceback.format_exc())

    def _held(self, direction: Direction) -> bool:
        hold = self._hold
        return hold is not None and hold.direction == direction

    def _pump(self, conn: _Connection, pipe: _Pipe) -> None:
        """Write what `pipe` may write now; half-close its destination once its source ended and it drained."""
        if conn.connected:
            if pipe.pending and not self._held(pipe.direction):
                try:
                    sent = pipe.dst.send(pipe.pending)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                del pipe.pending[:sent]
            if pipe.eof and not pipe.pending and not pipe.shut:
                pipe.dst.shutdown(socket.SHUT_WR)
                pipe.shut = True
        if conn.request.shut and conn.reply.shut:
            self._close(conn)
        else:
            self._update(conn)

    def _update(self, conn: _Connection) -> None:
        """Register each socket of `conn` for exactly the events its pipes can use now."""
        client = (READ if self._wants_read(conn.request) else 0) | (WRITE if self._wants_write(conn.reply) else 0)
        if conn.connected:
            upstream = READ if self._wants_read(conn.reply) else 0
            upstream |= WRITE if self._wants_write(conn.request) else 0
        else:
            upstream = WRITE
        self._set_mask(conn, conn.client, client)
        self._set_mask(conn, conn.upstream, upstream)

    def _wants_read(self, pipe: _Pipe) -> bool:
        return not pipe.eof and len(pipe.pending) < BUFFER_LIMIT

    def _wants_write(self, pipe: _Pipe) -> bool:
        return bool(pipe.pending) and not self._held(pipe.direction)

    def _set_mask(self, conn: _Connection, sock: socket.socket, mask: int) -> None:
        old = conn.masks.get(sock, 0)
        if mask == old:
            return
        if old == 0:
            self._selector.register(sock, mask, conn)
        elif mask == 0:
            self._selector.unregister(sock)
        else:
            self._selector.modify(sock, mask, conn)
        conn.masks[sock] = mask

    def _maybe_release(self) -> None:
        hold = self._hold
        if hold is None:
            return
        with self._lock:
            if not self._cancel_hold and time.monotonic() < hold.until:
                return
            self._hold = None
            self._cancel_hold = False
        for conn in list(self._conns):
            pipe = conn.reply if hold.direction == "reply" else conn.request
            self._guarded(conn, functools.partial(self._pump, conn, pipe))
        self.released.set()

    def _guarded(self, conn: _Connection, step: Callable[[], None]) -> None:
        """Run one step on `conn`; an error in it closes that pair only."""
        if conn.closed:
            return
        try:
            step()
        except OSError:
            self._close(conn)
        except Exception:
            self.errors.append(traceback.format_exc())
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in (conn.client, conn.upstream):
            if conn.masks.get(sock, 0):
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(sock)
            sock.close()
        with self._lock:
            self._conns.discard(conn)

    def _teardown(self) -> None:
        for conn in list(self._conns):
            self._close(conn)
        self._close_own_sockets()

    def _close_own_sockets(self) -> None:
        for sock in (self._listener, self._waker, self._wake_end):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)
            sock.close()
        self._selector.close()
