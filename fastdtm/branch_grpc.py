"""Branch calls over gRPC: a channel per branch server, reused, and the call's bytes passed through.

A gRPC branch URL is `host:port/package.Service/Method`, as DTM's default driver reads it (the server is
what comes before the first `/`). The coordinator never needs the branch's schema: the payload stored at
submit is the serialized request message, sent as it is, and the reply is read as bytes and dropped; only
the call's status matters (the invoker maps it). So every call goes through `unary_unary` without
serializers, on a `grpc.aio` channel of this process's event loop.

Channels: one per (checked addresses, authority), made on first use and closed after `idle_timeout`
seconds unused (or when more than `max_channels` are open, the least recently used first). With a
`BranchPolicy` the host is resolved here (`branch_resolver.CheckedResolver`, the same rules and cache as the
HTTP client): every address is checked, and the channel's target is those very addresses, with the host
kept as the `:authority`, so a DNS answer cannot change between the check and the connect.

The send deadline (`send_by`, the round's fence): a channel that is not connected is connected first,
within the call's timeout; then the deadline is checked, and the call is started with no `await` in
between. grpc.aio writes the request from a task of its own, so unlike the HTTP client's write the request
leaves up to one event-loop iteration after the check (docs/architecture.md, "The gRPC branch client").

Limits: plaintext only (DTM's server dials branches without TLS as well); unary calls; a reply larger than
`max_reply_bytes` fails the call with RESOURCE_EXHAUSTED (an error, retried): unlike HTTP's, a gRPC reply
cannot be read in part.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

import grpc
from grpc import aio

from fastdtm import grpc_syntax
from fastdtm.branch_http import BranchDenied, BranchHttpError, NotSent
from fastdtm.branch_resolver import RESOLVE_TTL, CheckedResolver
from fastdtm.grpc_syntax import GrpcSyntaxError, GrpcTarget, Metadata

if TYPE_CHECKING:
    from fastdtm.branch_policy import BranchPolicy

#: Seconds a channel may stay unused before it is closed.
IDLE_TIMEOUT: Final = 60.0
#: Channels open at once; past it the least recently used one is closed.
MAX_CHANNELS: Final = 1024
#: Branch URLs whose parse is kept; past it the cache is emptied and starts again.
MAX_TARGETS: Final = 4096
#: Bytes of a reply message accepted (gRPC's own default limit).
MAX_REPLY_BYTES: Final = 4 << 20
#: A channel that could not connect tries again after 0.2 s, backing off to 2 s at most: gRPC's default
#: (up to 120 s) would keep a branch server that came back unreachable for minutes.
_RECONNECT: Final = (("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000))


# `package.Service/Method` after the server: identifiers, the service possibly qualified by its package.
class BranchGrpcError(BranchHttpError):
    """A gRPC branch URL or header that cannot be used (an OSError, so the invoker counts it as a branch error)."""


def parse_target(url: str) -> GrpcTarget:
    """`grpc_syntax.parse_target`, failing as the client's other errors do."""
    try:
        return grpc_syntax.parse_target(url)
    except GrpcSyntaxError as exc:
        raise BranchGrpcError(str(exc)) from None


class _Channel:
    __slots__ = ("busy", "channel", "last_used", "methods")

    def __init__(self, channel: aio.Channel) -> None:
        self.channel = channel
        #: Calls under way on it, and the loop time the last one ended: it idles from then on.
        self.busy = 0
        self.last_used = 0.0
        self.methods: dict[str, aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    def method(self, name: str) -> aio.UnaryUnaryMultiCallable[bytes, bytes]:
        callable_ = self.methods.get(name)
        if callable_ is None:
            if len(self.methods) >= 256:  # many methods on one server: start again rather than grow
                self.methods.clear()
            # No serializers: the request is the stored bytes, the reply is read as bytes.
            callable_ = self.methods[name] = self.channel.unary_unary(name)
        return callable_


class GrpcClient:
    """The channels of one process, built and closed by the lifespan."""

    def __init__(
        self,
        *,
        policy: BranchPolicy | None = None,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        idle_timeout: float = IDLE_TIMEOUT,
        max_channels: int = MAX_CHANNELS,
        resolve_ttl: float = RESOLVE_TTL,
    ) -> None:
        self._resolver = CheckedResolver(policy, resolve_ttl) if policy is not None else None
        self._options = (*_RECONNECT, ("grpc.max_receive_message_length", max_reply_bytes))
        self._idle_timeout = idle_timeout
        self._max_channels = max_channels
        self._channels: dict[tuple[str, str], _Channel] = {}
        self._targets: dict[str, GrpcTarget] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def call(
        self, url: str, payload: bytes, metadata: Metadata, timeout: float, send_by: float | None = None
    ) -> tuple[grpc.StatusCode, str]:
        """Calls the method `url` names and returns the status code and its details (OK, ""); raises
        BranchHttpError (an OSError) when no call could be made, NotSent once `send_by` (time.monotonic())
        passed before the call went out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = self._targets.get(url)
        if target is None:  # parsed once per URL: a round calls the same few URLs over and over
            if len(self._targets) >= MAX_TARGETS:
                self._targets.clear()
            target = self._targets[url] = parse_target(url)
        entry = await self._channel(target)
        entry.busy += 1
        try:
            await self._connected(entry.channel, target, deadline, timeout)
            if send_by is not None and (late := time.monotonic() - send_by) >= 0:
                raise NotSent(f"the send deadline passed {late:.3f} s ago")
            remaining = deadline - loop.time()
            try:
                await entry.method(target.method)(payload, timeout=remaining, metadata=aio.Metadata(*metadata))
            except aio.AioRpcError as exc:
                return exc.code(), exc.details() or ""
            except Exception as exc:
                # Anything else grpc raises (metadata it refuses to send is a cygrpc ExecuteBatchError, a plain
                # Exception) is this call's error, retried as one, never the round's.
                raise BranchGrpcError(f"the call could not be made: {type(exc).__name__}: {exc}") from exc
            return grpc.StatusCode.OK, ""
        finally:
            entry.busy -= 1
            entry.last_used = loop.time()

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        closes = [entry.channel.close() for entry in self._channels.values()]
        self._channels.clear()
        await asyncio.gather(*closes, *self._closing, return_exceptions=True)

    async def _channel(self, target: GrpcTarget) -> _Channel:
        if self._closed:
            raise BranchGrpcError("the gRPC client is closed")
        key = (await self._dial_target(target), target.authority)
        entry = self._channels.get(key)
        if entry is None:
            if len(self._channels) >= self._max_channels:
                self._evict_oldest()
            options = (*self._options, ("grpc.default_authority", target.authority))
            entry = self._channels[key] = _Channel(aio.insecure_channel(key[0], options=options))
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(self._idle_timeout / 2, self._sweep)
        return entry

    async def _dial_target(self, target: GrpcTarget) -> str:
        """The channel's target: the host as gRPC resolves it, or, under a policy, the checked addresses."""
        resolver = self._resolver
        if resolver is None:
            return target.authority
        try:
            addresses, refusal = await resolver.addresses(target.host, target.port)
        except OSError as exc:
            raise BranchGrpcError(f"cannot resolve {target.host}: {exc}") from exc
        if refusal:
            raise BranchDenied(f"refused by the branch policy: {refusal}")
        v4 = [a for a in addresses if ":" not in a]
        if len(v4) == len(addresses):
            return "ipv4:" + ",".join(f"{a}:{target.port}" for a in v4)
        v6 = [a for a in addresses if ":" in a]
        if len(v6) == len(addresses):
            return "ipv6:" + ",".join(f"[{a}]:{target.port}" for a in v6)
        return f"ipv4:{v4[0]}:{target.port}"  # mixed families: one target scheme per channel

    async def _connected(self, channel: aio.Channel, target: GrpcTarget, deadline: float, timeout: float) -> None:
        """Returns once the channel is connected; raises BranchGrpcError when it cannot connect in time."""
        loop = asyncio.get_running_loop()
        state = channel.get_state(try_to_connect=True)
        while state is not grpc.ChannelConnectivity.READY:
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                raise BranchGrpcError(f"cannot connect to {target.authority} (unavailable)")
            if state is grpc.ChannelConnectivity.SHUTDOWN:
                raise BranchGrpcError("the gRPC client is closed")
            try:
                async with asyncio.timeout_at(deadline):
                    await channel.wait_for_state_change(state)
            except TimeoutError:
                raise BranchGrpcError(f"timeout: not connected to {target.authority} within {timeout:g} s") from None
            state = channel.get_state(try_to_connect=True)
        if loop.time() >= deadline:
            raise BranchGrpcError(f"timeout: not connected to {target.authority} within {timeout:g} s")

    def _evict_oldest(self) -> None:
        # The least recently used, an idle one first: a channel with calls under way closes after a grace.
        key = min(self._channels, key=lambda k: (self._channels[k].busy > 0, self._channels[k].last_used))
        self._close_later(self._channels.pop(key).channel)

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = None
        cutoff = loop.time() - self._idle_timeout
        for key, entry in list(self._channels.items()):
            if not entry.busy and entry.last_used < cutoff:
                del self._channels[key]
                self._close_later(entry.channel)
        if self._channels:
            self._sweeper = loop.call_later(self._idle_timeout / 2, self._sweep)

    def _close_later(self, channel: aio.Channel) -> None:
        # A grace period for calls still running on it.
        task = asyncio.get_running_loop().create_task(channel.close(grace=5.0))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
