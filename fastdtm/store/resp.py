"""The wire under the store's Redis client: one connection per Redis node, auto-pipelined.

Why not redis-py: profiling a node under load put a third of its CPU inside redis-py (command
packing, the connection pool, retry wrappers, a timeout context per command), more than the HTTP
server and the engine together. Here a command costs one `hiredis.pack_command`, one future and a
share of one `write`; replies are parsed by hiredis in C.

Auto-pipelining: every command issued during one event-loop iteration is written to its node in one
`write` (flushed by a `call_soon`), and Redis answers them in order on the same connection, so the
replies resolve a FIFO of futures. Under load many requests' scripts share a round trip and a read
event on both sides; alone, a command still leaves in the same iteration it was issued in.

Failure model: a connection that breaks or stays silent past the reply timeout fails every command
waiting on it with `ConnectionError` (such a command may have run). A command that never left, because
the connection could not be opened or its handshake failed, fails with `NotSent`, which a caller may
retry without asking whether it ran. A failed handshake closes its socket. The next command opens a
new connection. What to retry, and the cluster's map, are `redis_client`'s.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl as ssl_module
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import hiredis
from mypy_extensions import mypyc_attr

Arg = str | int | bytes

#: Error codes that mean the command did not run and may succeed soon: a slot in migration (TRYAGAIN), a
#: cluster without full coverage (CLUSTERDOWN), a server loading its dataset (LOADING), a master demoted to
#: a replica behind the same address (READONLY), a replica without its master (MASTERDOWN), a master short of
#: the replicas `min-replicas-to-write` asks for (NOREPLICAS), a server busy with a long script (BUSY).
RETRY_LATER: Final = frozenset({"TRYAGAIN", "CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "BUSY"})


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The client's time limits, in seconds (`--redis-*` flags)."""

    #: Opening a connection, handshake included (AUTH, SELECT, loading the scripts).
    connect: float = 5.0
    #: How long the oldest command on a connection may wait for its reply before the connection is
    #: declared dead (a reply that never comes would otherwise hang a request forever).
    reply: float = 10.0
    #: How long one command keeps trying after errors that mean "not run, try again" (`NotSent`,
    #: RETRY_LATER): enough to ride a failover's redirections or a server's restart, no more.
    retry: float = 2.0
    #: A reply this late makes a cluster client re-read its map (has the node been replaced?), and the
    #: time budget of each node asked for it.
    stall: float = 1.0
    #: Replicas that must have a durable write before it counts as done (`WAIT`; 0: none, Redis's default
    #: asynchronous replication), and how long to wait for them.
    replicas: int = 0
    replicas_timeout: float = 0.5


def pack(command: tuple[Arg, ...]) -> bytes:
    """One command in RESP, packed by hiredis in C."""
    # hiredis's stub types its argument as a 1-tuple; it takes a tuple of any length.
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


class ReplyError(Exception):
    """An error reply from Redis (`-ERR ...`, `-NOSCRIPT ...`): the command ran, or was refused."""

    @property
    def code(self) -> str:
        return str(self).split(" ", 1)[0]


# mypyc compiles no subclass of a built-in exception but Exception: this one stays a Python class.
@mypyc_attr(native_class=False)
class NotSent(ConnectionError):
    """The command never reached Redis (no connection, or its handshake failed): safe to send again."""


@mypyc_attr(native_class=False)
class NotReplicated(ConnectionError):
    """A durable write ran, but fewer replicas than asked for confirmed it in time: a failover may lose it."""


class _Pending:
    __slots__ = ("future", "sent_at")

    def __init__(self, future: asyncio.Future[Any], sent_at: float) -> None:
        self.future = future
        self.sent_at = sent_at


class Connection(asyncio.Protocol):
    """One TCP connection: buffered writes flushed once per loop iteration, replies matched in order.

    `on_stall` (a cluster client's) is called, once per `stall` seconds, while the oldest command has
    waited longer than that: the node may be frozen or gone, and its slots served elsewhere by now.
    """

    def __init__(self, address: str, timeouts: Timeouts, on_stall: Callable[[Connection], None] | None = None) -> None:
        self.address = address
        self._replicas = timeouts.replicas
        self._wait = pack(("WAIT", timeouts.replicas, int(timeouts.replicas_timeout * 1000)))
        #: Durable writes of the batch not flushed yet: (the reply's future, the caller's future).
        self._durable: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]] = []
        self._timeout = timeouts.reply
        self._on_stall = on_stall
        self._check_every = min(timeouts.stall, timeouts.reply) if on_stall is not None else timeouts.reply
        self._loop = asyncio.get_running_loop()
        self._reader = hiredis.Reader(encoding="utf-8", replyError=ReplyError)
        self._transport: asyncio.Transport | None = None
        self._pending: collections.deque[_Pending] = collections.deque()
        self._out: list[bytes] = []
        self._closed: BaseException | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def usable(self) -> bool:
        return self._closed is None and self._transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = reader.gets()
            except UnicodeDecodeError as exc:
                # hiredis consumed the whole reply before decoding it: only this command fails.
                reply = ReplyError(f"DECODE reply is not UTF-8 text: {exc}")
            except hiredis.ProtocolError as exc:
                self._fail(ConnectionError(f"redis {self.address}: protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:
                # A reply nobody asked for: the stream is out of step, nothing after it can be trusted.
                self._fail(ConnectionError(f"redis {self.address}: unexpected reply"))
                return
            future = pending.popleft().future
            if future.done():  # its caller was cancelled; the reply still had to be consumed
                continue
            if isinstance(reply, ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis {self.address}: connection lost" + (f": {exc}" if exc else "")))

    def send(self, packed: bytes, durable: bool = False) -> asyncio.Future[Any]:
        """The command's reply; for a `durable` write (when replicas are asked for), once they have it too."""
        if self._closed is not None:
            raise NotSent(str(self._closed))
        future = self._loop.create_future()
        if durable and self._replicas:
            reply = self._loop.create_future()
            self._pending.append(_Pending(reply, self._loop.time()))
            self._durable.append((reply, future))
        else:
            self._pending.append(_Pending(future, self._loop.time()))
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._check_every, self._check_replies)
        return future

    def stalled_for(self) -> float:
        """How long the oldest command has waited for its reply (0 when none waits)."""
        return self._loop.time() - self._pending[0].sent_at if self._pending else 0.0

    def _flush(self) -> None:
        if self._durable and self._closed is None:
            # One WAIT after the batch covers every write in it (a replica's offset only grows): the
            # batch's durable writes are answered when it returns.
            waited = self._loop.create_future()
            waited.add_done_callback(functools.partial(self._replicated, self._durable))
            self._durable = []
            self._pending.append(_Pending(waited, self._loop.time()))
            self._out.append(self._wait)
        if self._transport is not None and self._closed is None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _replicated(
        self, batch: list[tuple[asyncio.Future[Any], asyncio.Future[Any]]], waited: asyncio.Future[Any]
    ) -> None:
        failed = waited.exception()
        for reply, future in batch:
            if future.done():  # its caller was cancelled
                continue
            error = reply.exception()
            if error is not None:
                future.set_exception(error)  # an error reply: nothing was written
            elif failed is not None:
                future.set_exception(failed)
            elif waited.result() < self._replicas:
                copies = f"{waited.result()} of {self._replicas} replicas have the write"
                future.set_exception(NotReplicated(f"redis {self.address}: {copies}"))
            else:
                future.set_result(reply.result())

    def _check_replies(self) -> None:
        """Fails the connection if its oldest command has waited past the timeout; re-arms otherwise."""
        self._watchdog = None
        if not self._pending or self._closed is not None:
            return
        waited = self.stalled_for()
        if waited >= self._timeout:
            self._fail(ConnectionError(f"redis {self.address}: no reply in {self._timeout:g} s"))
            return
        if self._on_stall is not None and waited >= self._check_every:
            self._on_stall(self)
            if self._closed is not None:
                return
        self._watchdog = self._loop.call_later(min(self._check_every, self._timeout - waited), self._check_replies)

    def _fail(self, exc: ConnectionError) -> None:
        if self._closed is None:
            self._closed = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self._pending = self._pending, collections.deque()
        for item in pending:
            if not item.future.done():
                item.future.set_exception(exc)
        durable, self._durable = self._durable, []
        for reply, future in durable:  # sent after the last flush: no WAIT of theirs will answer
            reply.exception()  # set by the loop above; seen here
            if not future.done():
                future.set_exception(exc)
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()

    def abandon(self, reason: str) -> None:
        """Fails what waits on this connection now (the node no longer serves those commands' slots)."""
        self._fail(ConnectionError(f"redis {self.address}: {reason}"))

    def close(self) -> None:
        self._fail(ConnectionError(f"redis {self.address}: client closed"))


class Node:
    """One Redis server: opens its connection lazily and again after it broke."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        password: str | None,
        username: str | None,
        db: int,
        tls: ssl_module.SSLContext | None,
        timeouts: Timeouts,
        preload: Sequence[str] = (),
        on_stall: Callable[[Connection], None] | None = None,
    ):
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"
        self._timeouts = timeouts
        self._preload = [pack(("SCRIPT", "LOAD", source)) for source in preload]
        self._auth = (username, password)
        self._db = db
        self._tls = tls
        self._on_stall = on_stall
        self._connection: Connection | None = None
        self._connecting: asyncio.Task[Connection] | None = None

    @property
    def connected(self) -> Connection | None:
        """The open connection, if any: no I/O."""
        connection = self._connection
        return connection if connection is not None and connection.usable else None

    async def connection(self) -> Connection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        # One connect at a time: concurrent callers wait for the same new connection, and a caller
        # that gives up (cancelled) does not abort it for the others.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Task[Connection]) -> None:
        self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here: a failed connect nobody awaited any more is not an error to log

    async def _connect(self) -> Connection:
        try:
            return await asyncio.wait_for(self._open(), self._timeouts.connect)
        except TimeoutError as exc:
            raise NotSent(
                f"redis {self.address}: cannot connect: no handshake in {self._timeouts.connect:g} s"
            ) from exc
        except OSError as exc:
            if isinstance(exc, NotSent):
                raise
            raise NotSent(f"redis {self.address}: cannot connect: {exc}") from exc

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: Connection(self.address, self._timeouts, self._on_stall),
            self.host,
            self.port,
            ssl=self._tls,  # one context per client: its CA file is read once, not per connection
        )
        try:
            await self._handshake(connection)
        except BaseException:
            # Whatever failed (a wrong password, LOADING, the connect timeout): the socket goes with it.
            connection.close()
            raise
        self._connection = connection
        return connection

    async def _handshake(self, connection: Connection) -> None:
        commands = []
        username, password = self._auth
        if password is not None:
            commands.append(pack(("AUTH", username, password) if username else ("AUTH", password)))
        if self._db:
            commands.append(pack(("SELECT", self._db)))
        # Every new connection (first use, after a restart or a failover) loads the scripts first, in
        # the same round trip: otherwise the first burst of calls would each get NOSCRIPT and load on its own.
        commands += self._preload
        replies = [connection.send(command) for command in commands]
        try:
            for reply in replies:
                await reply
        except ReplyError as exc:
            if exc.code in RETRY_LATER:  # a server still loading its data: worth another try soon
                raise NotSent(f"redis {self.address}: not ready: {exc}") from exc
            raise

    async def execute(self, packed: bytes, durable: bool = False) -> Any:
        connection = self._connection
        if connection is None or not connection.usable:  # else no extra coroutine: this is the hot path
            connection = await self.connection()
        return await connection.send(packed, durable)

    def drop(self) -> None:
        """Closes the connection so that the next command connects again (and resolves the name again)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        self.drop()
