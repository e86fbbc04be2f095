"""The store's Redis client, standalone or Redis Cluster, on the wire of `resp`: routing and retries.

A command whose error says it did not run (`NotSent`, TRYAGAIN, CLUSTERDOWN, LOADING, READONLY,
MASTERDOWN; NOSCRIPT for a script, which is loaded first) is sent again after a short pause, for up to
`Timeouts.retry`: a failover, a resharding step or a restart is then a pause, not an error. A command
that may have run (its connection broke after it left) is never repeated here: its caller decides.

Cluster: the slot map comes from CLUSTER SLOTS. MOVED updates that slot at once and has the map read
again in the background while commands go on with the old one; so does a node that cannot be reached,
a READONLY or CLUSTERDOWN answer, or a reply that is late (`Timeouts.stall`). A refresh asks one node
after another, the ones that answered last first, each for at most the stall time, so a frozen node
costs one short wait, never the whole client's. ASK sends that one command, after ASKING, to the node
named. Only a slot with no owner at all waits for the new map.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from fastdtm.sharding import SLOTS, slot_of
from fastdtm.store.resp import RETRY_LATER, Arg, Connection, Node, NotSent, ReplyError, Timeouts, pack

#: MOVED/ASK hops followed for one command (a resharding in progress can move a slot twice).
MAX_REDIRECTS: Final = 5
#: The first pause before a retry, doubled up to the last.
FIRST_PAUSE: Final = 0.02
LAST_PAUSE: Final = 0.5
DEFAULT_TIMEOUTS: Final = Timeouts()
#: Times one command loads its script after NOSCRIPT.
MAX_LOADS: Final = 3
#: A dead node makes every command that reaches it ask for a new map: at most one read per this many seconds.
REFRESH_GAP: Final = 0.1


class Commands(Protocol):
    """What the store needs from a Redis client, standalone or cluster."""

    async def execute(self, key: str | None, *args: Arg) -> Any:
        """Runs one command on the node that owns `key` (any node when None); raises ReplyError."""
        ...

    async def evalsha(
        self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg], durable: bool = False
    ) -> Any:
        """A script; `durable`: its writes must reach the replicas `Timeouts.replicas` asks for."""
        ...

    async def ready(self) -> None:
        """Returns once every key has a server that answers; raises ConnectionError or ReplyError if not."""
        ...

    async def aclose(self) -> None: ...


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, NotSent) or (isinstance(exc, ReplyError) and exc.code in RETRY_LATER)


class _Client:
    """What both clients share: the fast path is one `_run`; errors take `_recover`."""

    timeouts: Timeouts

    def _run(self, key: str | None, packed: bytes, durable: bool = False) -> Awaitable[Any]:
        raise NotImplementedError

    async def _before_retry(self, key: str | None, exc: BaseException) -> None:
        """What to do after a retryable error, before the pause (re-read a map, drop a connection)."""

    async def execute(self, key: str | None, *args: Arg) -> Any:
        packed = pack(args)
        try:
            return await self._run(key, packed)
        except (ReplyError, NotSent) as exc:
            return await self._recover(key, packed, exc, None)

    async def evalsha(
        self, sha: str, source: str, keys: Sequence[str], args: Sequence[Arg], durable: bool = False
    ) -> Any:
        key = keys[0] if keys else None
        packed = pack(("EVALSHA", sha, len(keys), *keys, *args))
        try:
            return await self._run(key, packed, durable)
        except (ReplyError, NotSent) as exc:
            return await self._recover(key, packed, exc, source, durable)

    async def _recover(
        self, key: str | None, packed: bytes, exc: ReplyError | NotSent, source: str | None, durable: bool = False
    ) -> Any:
        """Sends the command again while its errors say it did not run, for up to `timeouts.retry`."""
        deadline = time.monotonic() + self.timeouts.retry
        pause = FIRST_PAUSE
        loads = MAX_LOADS
        attempt: Awaitable[Any]
        while True:
            if source is not None and loads and isinstance(exc, ReplyError) and exc.code == "NOSCRIPT":
                # The server forgot the script (restart, failover, SCRIPT FLUSH): load it, then run it.
                attempt = self._load_and_run(key, source, packed, durable)
                loads -= 1  # again only if the cache was lost again in between (a failover)
            else:
                if not _retryable(exc):
                    raise exc
                left = deadline - time.monotonic()
                if left <= 0:
                    raise exc
                await self._before_retry(key, exc)
                await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, LAST_PAUSE)
                attempt = self._run(key, packed, durable)
            try:
                return await attempt
            except (ReplyError, NotSent) as again:
                exc = again

    async def _load_and_run(self, key: str | None, source: str, packed: bytes, durable: bool) -> Any:
        await self._run(key, pack(("SCRIPT", "LOAD", source)))
        return await self._run(key, packed, durable)


class Redis(_Client):
    """A standalone server (`redis://[user:password@]host:port/db`, `rediss://` for TLS)."""

    def __init__(self, node: Node, timeouts: Timeouts) -> None:
        self.node = node
        self.timeouts = timeouts

    def _run(self, key: str | None, packed: bytes, durable: bool = False) -> Awaitable[Any]:
        return self.node.execute(packed, durable)  # a plain function: one coroutine less per command

    async def _before_retry(self, key: str | None, exc: BaseException) -> None:
        if isinstance(exc, ReplyError) and exc.code == "READONLY":
            # A master demoted behind a stable name or virtual IP: a new connection may reach the new master.
            self.node.drop()

    async def ready(self) -> None:
        await self.execute(None, "PING")

    async def aclose(self) -> None:
        self.node.close()


class Cluster(_Client):
    """A Redis Cluster (`redis+cluster://host:port,host:port`, `rediss+cluster://` for TLS): commands go to
    the master of their key's slot."""

    def __init__(
        self,
        seeds: Sequence[tuple[str, int]],
        *,
        password: str | None = None,
        username: str | None = None,
        tls: ssl.SSLContext | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        preload: Sequence[str] = (),
    ):
        self.timeouts = timeouts
        self._ask_for = min(timeouts.stall, timeouts.reply)
        self._options: dict[str, Any] = {
            "password": password,
            "username": username,
            "db": 0,
            "tls": tls,
            "timeouts": timeouts,
            "preload": preload,
            "on_stall": self._stalled,
        }
        self._nodes: dict[str, Node] = {}
        self._seeds = [self._node(host, port) for host, port in seeds]
        self._slots: list[Node | None] = [None] * SLOTS
        self._mapped = False
        self._stale = True
        self._refreshing: asyncio.Task[None] | None = None
        self._last_refresh = -REFRESH_GAP
        #: When each node last failed to give the map (never: absent); the others are asked first.
        self._failed_at: dict[Node, float] = {}

    def _node(self, host: str, port: int) -> Node:
        address = f"{host}:{port}"
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = Node(host, port, **self._options)
        return node

    # --- the slot map ---

    def _refresh(self) -> asyncio.Task[None]:
        """The map read in progress, or a new one (at most one at a time, one per REFRESH_GAP)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_slots())
            self._refreshing.add_done_callback(_retrieve)
        return self._refreshing

    async def _read_slots(self) -> None:
        wait = self._last_refresh + REFRESH_GAP - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_refresh = time.monotonic()
        # Cleared before asking: a MOVED that arrives during the read asks for one more.
        self._stale = False
        errors = []
        candidates = sorted({*self._seeds, *self._nodes.values()}, key=lambda n: self._failed_at.get(n, 0.0))
        for node in candidates:
            try:
                ranges = await asyncio.wait_for(node.execute(pack(("CLUSTER", "SLOTS"))), self._ask_for)
            except (TimeoutError, ConnectionError, ReplyError) as exc:
                self._failed_at[node] = time.monotonic()
                errors.append(f"{node.address}: {exc or 'no answer in time'}")
                continue
            self._failed_at.pop(node, None)
            self._install(node, ranges)
            return
        self._stale = True
        raise NotSent("redis cluster: no node gave the slot map: " + "; ".join(errors))

    def _install(self, source: Node, ranges: list[Any]) -> None:
        slots: list[Node | None] = [None] * SLOTS
        for first, last, master, *_ in ranges:
            owner = self._node(master[0] or source.host, int(master[1]))
            slots[first : last + 1] = [owner] * (last - first + 1)
        self._slots = slots
        self._mapped = True
        # A node that now serves no slot and has a command waiting past the stall time is frozen or gone,
        # and its slots are served elsewhere: fail those commands now rather than after the reply timeout.
        owners = set(slots)
        for node in self._nodes.values():
            connection = node.connected
            if node not in owners and connection is not None and connection.stalled_for() >= self.timeouts.stall:
                connection.abandon("no longer serves a slot and did not answer")

    def _stalled(self, connection: Connection) -> None:
        self._stale = True
        self._refresh()

    async def _owner(self, key: str | None) -> Node:
        """The master for `key` when the map is stale or has no owner for it (the slow path of `_run`)."""
        if self._stale:
            refresh = self._refresh()
            if not self._mapped:
                await asyncio.shield(refresh)  # no map at all yet: nothing to go on meanwhile
        node = self._lookup(key)
        if node is None:
            # A slot nobody serves yet (a cluster being set up, a master lost without replica): read the map
            # again before giving up; the caller's retries come back here.
            self._stale = True
            await asyncio.shield(self._refresh())
            node = self._lookup(key)
            if node is None:
                raise NotSent(f"redis cluster: no master serves the slot of {key!r}")
        return node

    def _lookup(self, key: str | None) -> Node | None:
        """The map's master for `key` (any master for None), if it has one."""
        if key is not None:
            return self._slots[slot_of(key)]
        return next((node for node in self._slots if node is not None), None)

    # --- commands ---

    async def _run(self, key: str | None, packed: bytes, durable: bool = False) -> Any:
        node = self._slots[slot_of(key)] if key is not None else None
        if node is None or self._stale:
            node = await self._owner(key)
        for _ in range(MAX_REDIRECTS):
            try:
                return await node.execute(packed, durable)
            except ConnectionError:
                self._stale = True
                self._refresh()
                raise
            except ReplyError as exc:
                code = exc.code
                if code not in ("MOVED", "ASK"):
                    if code in RETRY_LATER and code != "TRYAGAIN":  # the map may be wrong, not the command
                        self._stale = True
                    raise
                _, slot, address = str(exc).split(" ")
                host, _, port = address.rpartition(":")
                node = self._node(host or node.host, int(port))
                if code == "MOVED":
                    self._slots[int(slot)] = node
                    self._stale = True  # other slots probably moved too: re-read in the background
                else:
                    connection = await node.connection()
                    asking = connection.send(pack(("ASKING",)))
                    answer = connection.send(packed, durable)
                    await asking
                    return await answer
        raise NotSent(f"redis cluster: more than {MAX_REDIRECTS} redirections for {key!r}")

    async def _before_retry(self, key: str | None, exc: BaseException) -> None:
        if self._stale:
            # No node answered: the retry finds out for itself.
            with contextlib.suppress(ConnectionError, ReplyError):
                await asyncio.shield(self._refresh())

    async def ready(self) -> None:
        """Every slot has a master that answers PING, as a fresh map says (start-up, `/api/ready`)."""
        self._stale = True
        await asyncio.shield(self._refresh())
        unserved = self._slots.count(None)
        if unserved:
            raise NotSent(f"redis cluster: {unserved} of {SLOTS} slots have no master yet")
        masters = {id(node): node for node in self._slots if node is not None}.values()
        await asyncio.gather(*(node.execute(pack(("PING",))) for node in masters))

    async def aclose(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in self._nodes.values():
            node.close()


def _retrieve(task: asyncio.Task[None]) -> None:
    """A background map read's error is seen by whoever awaits it; nobody may: not an error to log."""
    if not task.cancelled():
        task.exception()


#: `rediss://` query options (redis-py's names) -> what they take.
TLS_OPTIONS: Final = {
    "ssl_ca_certs": "a file of CA certificates (PEM) the server's must be signed by, instead of the system's",
    "ssl_certfile": "a client certificate (PEM), for a server run with tls-auth-clients",
    "ssl_keyfile": "the client certificate's private key (PEM), when not in ssl_certfile",
    "ssl_cert_reqs": "required (default), optional (the same for a client) or none (no check at all)",
    "ssl_check_hostname": "true (default) or false: whether the certificate must name the host or IP dialled",
}
_CERT_REQS: Final = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
_TRUTHS: Final = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How a `rediss://` client checks the server and proves who it is (the URL's `ssl_*` query options)."""

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """One context per client, shared by all its connections; raises ValueError for a file it cannot use."""
        try:
            context = ssl.create_default_context(cafile=self.ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ssl_ca_certs={self.ca_certs}: cannot load it: {exc}") from None
        context.check_hostname = self.check_hostname  # before verify_mode: CERT_NONE refuses a hostname check
        context.verify_mode = self.cert_reqs
        if self.certfile:
            try:
                context.load_cert_chain(self.certfile, self.keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"ssl_certfile={self.certfile}: cannot load it with its key: {exc}") from None
        return context


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """What a store URL says: `redis[s]://[user:password@]host[:port][/db][?ssl_...]` or
    `redis[s]+cluster://[user:password@]host[:port],host[:port],...[?ssl_...]` (6379 when a port is left out).
    `tls`: None for `redis://`; the `TLS_OPTIONS` given (or the defaults: the system's CAs) for `rediss://`."""

    hosts: tuple[tuple[str, int], ...]
    cluster: bool
    tls: TlsOptions | None
    username: str | None
    password: str | None
    db: int


def parse_url(url: str) -> RedisUrl:
    """Raises ValueError, with what is wrong, for a URL the client cannot use."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        raise ValueError(f"not a redis://, rediss://, redis+cluster:// or rediss+cluster:// URL: {url!r}")
    cluster = parts.scheme.endswith("+cluster")
    hosts = tuple(_host_port(item, url) for item in parts.netloc.rpartition("@")[2].split(","))
    if not cluster and len(hosts) != 1:
        raise ValueError(f"several hosts need redis+cluster://: {url!r}")
    path = parts.path.strip("/")
    if cluster and path:
        raise ValueError(f"a cluster has no database number: {url!r}")
    if path and not path.isdigit():
        raise ValueError(f"the database must be a number: {url!r}")
    options = _query_options(parts.query)
    if options and not parts.scheme.startswith("rediss"):
        raise ValueError(f"the option {next(iter(options))} needs TLS: rediss:// or rediss+cluster://")
    return RedisUrl(
        hosts=hosts,
        cluster=cluster,
        tls=_tls_options(options) if parts.scheme.startswith("rediss") else None,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        db=int(path) if path else 0,
    )


def _query_options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in TLS_OPTIONS:
            known = ", ".join(TLS_OPTIONS)
            raise ValueError(f"unknown option {name!r} in the URL's query (the options: {known})")
        if name in options:
            raise ValueError(f"the option {name} is given twice")
        if not value:
            raise ValueError(f"the option {name} has no value")
        options[name] = value
    return options


def _tls_options(options: dict[str, str]) -> TlsOptions:
    reqs = options.get("ssl_cert_reqs", "required")
    if reqs.lower() not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs={reqs}: not one of {', '.join(_CERT_REQS)}")
    cert_reqs = _CERT_REQS[reqs.lower()]
    # Nothing to check the name against when the certificate itself is not checked.
    check = options.get("ssl_check_hostname", "true" if cert_reqs != ssl.CERT_NONE else "false")
    if check.lower() not in _TRUTHS:
        raise ValueError(f"ssl_check_hostname={check}: not true or false")
    check_hostname = _TRUTHS[check.lower()]
    if check_hostname and cert_reqs == ssl.CERT_NONE:
        raise ValueError("ssl_check_hostname=true needs the certificate checked: not with ssl_cert_reqs=none")
    if "ssl_keyfile" in options and "ssl_certfile" not in options:
        raise ValueError("ssl_keyfile needs ssl_certfile (the certificate the key belongs to)")
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options:
            _readable(name, options[name])
    return TlsOptions(
        ca_certs=options.get("ssl_ca_certs"),
        certfile=options.get("ssl_certfile"),
        keyfile=options.get("ssl_keyfile"),
        cert_reqs=cert_reqs,
        check_hostname=check_hostname,
    )


def _readable(name: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"{name}={path}: cannot read it: {exc.strerror}") from None


def _host_port(item: str, url: str) -> tuple[str, int]:
    host, colon, port = item.rpartition(":") if ":" in item else (item, "", "")
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port {port!r} in {url!r}")
    return host or "127.0.0.1", int(port) if port else 6379


def connect(url: str, timeouts: Timeouts = DEFAULT_TIMEOUTS, preload: Sequence[str] = ()) -> Redis | Cluster:
    """A client for the store URL (`parse_url`); no I/O until the first command but reading the TLS files.
    `preload`: Lua sources loaded on every connection it opens."""
    p = parse_url(url)
    tls = p.tls.context() if p.tls is not None else None
    if p.cluster:
        return Cluster(p.hosts, username=p.username, password=p.password, tls=tls, timeouts=timeouts, preload=preload)
    host, port = p.hosts[0]
    node = Node(
        host, port, username=p.username, password=p.password, db=p.db, tls=tls, timeouts=timeouts, preload=preload
    )
    return Redis(node, timeouts)
