"""A lean Redis client for the store's hot path: one connection per Redis node, auto-pipelined.

Why not redis-py: profiling a node under load put a third of its CPU inside redis-py (command
packing, the connection pool, retry wrappers, a timeout context per command), more than the HTTP
server and the engine together. Here a command costs one `hiredis.pack_command`, one future and a
share of one `write`; replies are parsed by hiredis in C.

Auto-pipelining: every command issued during one event-loop iteration is written to its node in one
`write` (flushed by a `call_soon`), and Redis answers them in order on the same connection, so the
replies resolve a FIFO of futures. Under load many requests' scripts share a round trip and a read
event on both sides; alone, a command still leaves in the same iteration it was issued in.

Failure model, kept simple on purpose: a connection that breaks or stays silent past the timeout
fails every command waiting on it with `ConnectionError` (the store maps it to StoreUnavailable;
callers and the cron retry, and every script is safe to run again: it checks the state it expects).
The next command opens a new connection. A cluster client follows MOVED and ASK, and re-reads the
slot map after a MOVED or a broken connection.
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
from collections.abc import Awaitable, Sequence
from typing import Any, Final, Protocol, cast
from urllib.parse import unquote, urlsplit

import hiredis

from fastdtm.sharding import slot_of

Arg = str | int | bytes

CONNECT_TIMEOUT: Final = 5.0
#: How long the oldest command on a connection may wait for its reply before the connection is
#: declared dead (a reply that never comes would otherwise hang a request forever).
REPLY_TIMEOUT: Final = 10.0
#: MOVED/ASK hops followed for one command (a resharding in progress can move a slot twice).
MAX_REDIRECTS: Final = 5


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


class Commands(Protocol):
    """What the store needs from a Redis client, standalone or cluster."""

    async def execute(self, key: str | None, *args: Arg) -> Any:
        """Runs one command on the node that owns `key` (any node when None); raises ReplyError."""
        ...

    async def evalsha(self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...

    async def aclose(self) -> None: ...


class _Pending:
    __slots__ = ("future", "sent_at")

    def __init__(self, future: asyncio.Future[Any], sent_at: float) -> None:
        self.future = future
        self.sent_at = sent_at


class Connection(asyncio.Protocol):
    """One TCP connection: buffered writes flushed once per loop iteration, replies matched in order."""

    def __init__(self, address: str, reply_timeout: float = REPLY_TIMEOUT) -> None:
        self.address = address
        self._timeout = reply_timeout
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
        self._reader.feed(data)
        pending = self._pending
        while (reply := self._reader.gets()) is not False:
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

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self._closed is not None:
            raise ConnectionError(str(self._closed))
        future = self._loop.create_future()
        self._pending.append(_Pending(future, self._loop.time()))
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(packed)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._timeout, self._check_replies)
        return future

    def _flush(self) -> None:
        if self._transport is not None and self._closed is None and self._out:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _check_replies(self) -> None:
        """Fails the connection if its oldest command has waited past the timeout; re-arms otherwise."""
        self._watchdog = None
        if not self._pending or self._closed is not None:
            return
        waited = self._loop.time() - self._pending[0].sent_at
        if waited >= self._timeout:
            self._fail(ConnectionError(f"redis {self.address}: no reply in {self._timeout:g} s"))
        else:
            self._watchdog = self._loop.call_later(self._timeout - waited, self._check_replies)

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
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()

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
        tls: bool,
        reply_timeout: float = REPLY_TIMEOUT,
        preload: Sequence[str] = (),
    ):
        self.host = host
        self._reply_timeout = reply_timeout
        self._preload = [pack(("SCRIPT", "LOAD", source)) for source in preload]
        self.port = port
        self.address = f"{host}:{port}"
        self._auth = (username, password)
        self._db = db
        self._tls = tls
        self._connection: Connection | None = None
        self._connecting: asyncio.Task[Connection] | None = None

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
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(self.address, self._reply_timeout),
                    self.host,
                    self.port,
                    ssl=ssl_module.create_default_context() if self._tls else None,
                ),
                CONNECT_TIMEOUT,
            )
        except (TimeoutError, OSError) as exc:
            raise ConnectionError(f"redis {self.address}: cannot connect: {exc or 'timeout'}") from exc
        username, password = self._auth
        if password is not None:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            await connection.send(pack(auth))
        if self._db:
            await connection.send(pack(("SELECT", self._db)))
        # Every new connection (first use, after a restart or a failover) loads the scripts first, in
        # one round trip: otherwise the first burst of calls would each get NOSCRIPT and load on its own.
        for loaded in [connection.send(command) for command in self._preload]:
            await loaded
        self._connection = connection
        return connection

    async def execute(self, packed: bytes) -> Any:
        connection = self._connection
        if connection is None or not connection.usable:  # else no extra coroutine: this is the hot path
            connection = await self.connection()
        return await connection.send(packed)

    def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.close()


async def _evalsha(run: Any, key: str | None, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
    """EVALSHA, loading the script once if the node forgot it (restart, failover, SCRIPT FLUSH)."""
    command = pack(("EVALSHA", sha, len(keys), *keys, *args))
    try:
        return await run(key, command)
    except ReplyError as exc:
        if exc.code != "NOSCRIPT":
            raise
    await run(key, pack(("SCRIPT", "LOAD", source)))
    return await run(key, command)


class Redis:
    """A standalone server (`redis://[user:password@]host:port/db`, `rediss://` for TLS)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def execute(self, key: str | None, *args: Arg) -> Any:
        return await self.node.execute(pack(args))

    def _run(self, key: str | None, packed: bytes) -> Awaitable[Any]:
        return self.node.execute(packed)  # a plain function: one coroutine less per command

    async def evalsha(self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await _evalsha(self._run, None, sha, source, keys, args)

    async def aclose(self) -> None:
        self.node.close()


class Cluster:
    """A Redis Cluster (`redis+cluster://host:port,host:port`): commands go to the master of their key's slot.

    The slot map comes from CLUSTER SLOTS on any known node. MOVED updates that slot at once and
    makes the next command re-read the whole map first (a failover or resharding moves many slots);
    so does a node that cannot be reached. ASK sends that one command, after ASKING, to the node named.
    """

    def __init__(
        self,
        seeds: Sequence[tuple[str, int]],
        *,
        password: str | None = None,
        username: str | None = None,
        tls: bool = False,
        reply_timeout: float = REPLY_TIMEOUT,
        preload: Sequence[str] = (),
    ):
        self._options: dict[str, Any] = {
            "password": password,
            "username": username,
            "db": 0,
            "tls": tls,
            "reply_timeout": reply_timeout,
            "preload": preload,
        }
        self._nodes: dict[str, Node] = {}
        self._seeds = [self._node(host, port) for host, port in seeds]
        self._slots: list[Node | None] = [None] * 16384
        self._stale = True
        self._refreshing: asyncio.Task[None] | None = None

    def _node(self, host: str, port: int) -> Node:
        address = f"{host}:{port}"
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = Node(host, port, **self._options)
        return node

    async def _refresh(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_slots())
        await asyncio.shield(self._refreshing)

    async def _read_slots(self) -> None:
        errors = []
        known = {id(n): n for n in [*self._seeds, *self._nodes.values()]}
        for node in known.values():
            try:
                ranges = await node.execute(pack(("CLUSTER", "SLOTS")))
            except (ConnectionError, ReplyError) as exc:
                errors.append(str(exc))
                continue
            slots: list[Node | None] = [None] * 16384
            for first, last, master, *_ in ranges:
                owner = self._node(master[0] or node.host, int(master[1]))
                slots[first : last + 1] = [owner] * (last - first + 1)
            self._slots = slots
            self._stale = False
            return
        raise ConnectionError("redis cluster: no node answered CLUSTER SLOTS: " + "; ".join(errors))

    async def _owner(self, key: str | None) -> Node:
        if self._stale:
            await self._refresh()
        node = self._slots[slot_of(key)] if key is not None else next(n for n in self._slots if n is not None)
        if node is None:
            raise ConnectionError(f"redis cluster: no master serves the slot of {key!r}")
        return node

    async def _run(self, key: str | None, packed: bytes) -> Any:
        node = await self._owner(key)
        for _ in range(MAX_REDIRECTS):
            try:
                return await node.execute(packed)
            except ConnectionError:
                self._stale = True
                raise
            except ReplyError as exc:
                code = exc.code
                if code not in ("MOVED", "ASK"):
                    raise
                _, slot, address = str(exc).split(" ")
                host, _, port = address.rpartition(":")
                node = self._node(host or node.host, int(port))
                if code == "MOVED":
                    self._slots[int(slot)] = node
                    self._stale = True  # other slots probably moved too: re-read before the next command
                else:
                    connection = await node.connection()
                    asking = connection.send(pack(("ASKING",)))
                    answer = connection.send(packed)
                    await asking
                    return await answer
        raise ConnectionError(f"redis cluster: more than {MAX_REDIRECTS} redirections for {key!r}")

    async def execute(self, key: str | None, *args: Arg) -> Any:
        return await self._run(key, pack(args))

    async def evalsha(self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await _evalsha(self._run, keys[0] if keys else None, sha, source, keys, args)

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in self._nodes.values():
            node.close()


def connect(url: str, reply_timeout: float = REPLY_TIMEOUT, preload: Sequence[str] = ()) -> Redis | Cluster:
    """A client for `redis://`, `rediss://` or `redis+cluster://h1:p1,h2:p2` (no I/O until the first command);
    `preload`: Lua sources loaded on every connection it opens."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password is not None else None
    username = unquote(parts.username) if parts.username else None
    hosts = parts.netloc.rpartition("@")[2]
    if parts.scheme == "redis+cluster":
        seeds = [
            (host or "127.0.0.1", int(port or 6379)) for host, _, port in (h.rpartition(":") for h in hosts.split(","))
        ]
        return Cluster(seeds, password=password, username=username, reply_timeout=reply_timeout, preload=preload)
    path = parts.path.strip("/")
    db = int(path) if path else 0
    node = Node(
        parts.hostname or "127.0.0.1",
        parts.port or 6379,
        password=password,
        username=username,
        db=db,
        tls=parts.scheme == "rediss",
        reply_timeout=reply_timeout,
        preload=preload,
    )
    return Redis(node)
