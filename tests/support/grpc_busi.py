"""A scripted, recording gRPC branch ("busi") server for tests: this module owns a real `grpc.aio` server on a
loopback port, in the test's own event loop, that takes any method (`/package.Service/Method`) with bytes in and
bytes out (a generic handler, no schema, as the coordinator sends them), records every call as a `GrpcCall`, and
answers each method from its script of `GrpcReply`s (the last one repeating) or from a hook. It mirrors
`tests/support/busi.py`, the HTTP branch server, for the gRPC side.

A server can be stopped and started again on the same port (`stop()`, `start()`), for a branch server that
goes away and comes back."""

from __future__ import annotations

import asyncio
import functools
import math
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Self

import grpc
from grpc import aio

from .redis_servers import HOST

#: DTM's gRPC workflow callback, what a gRPC workflow's `QueryPrepared` names.
WORKFLOW_EXECUTE = "/workflow.Workflow/Execute"


@dataclass(frozen=True, slots=True)
class GrpcCall:
    """One call as the server received it, recorded on arrival (before any delay or reply)."""

    method: str
    payload: bytes
    #: Every metadata pair in order, keys lower case; a `-bin` key's value is bytes.
    metadata: tuple[tuple[str, str | bytes], ...]
    #: gRPC's peer string of the connection, e.g. `ipv4:127.0.0.1:53210`: one per client connection.
    peer: str
    at: float

    def meta(self, key: str) -> str | bytes | None:
        """The last value of `key`, None when absent."""
        found: str | bytes | None = None
        for name, value in self.metadata:
            if name == key:
                found = value
        return found

    def dtm(self) -> dict[str, str | bytes]:
        """The `dtm-*` metadata the coordinator sent."""
        return {name: value for name, value in self.metadata if name.startswith("dtm-")}


@dataclass(frozen=True, slots=True)
class GrpcReply:
    """What to answer: a status with its details, and for OK the reply message's bytes. `delay` holds the reply
    back (math.inf: never answer; the call ends at its deadline or when the server stops)."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    body: bytes = b""
    delay: float = 0.0


ScriptEntry = grpc.StatusCode | tuple[grpc.StatusCode, str] | GrpcReply
Hook = Callable[[GrpcCall], GrpcReply | None]


def as_reply(entry: ScriptEntry) -> GrpcReply:
    if isinstance(entry, GrpcReply):
        return entry
    if isinstance(entry, grpc.StatusCode):
        return GrpcReply(entry)
    code, details = entry
    return GrpcReply(code, details)


Behaviour = Callable[[str, bytes, aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]


class _AnyMethod(grpc.GenericRpcHandler):
    """Every method is served, request and reply as bytes (no deserializer, no serializer)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[bytes, bytes]:
        return grpc.unary_unary_rpc_method_handler(functools.partial(self._behaviour, handler_call_details.method))


class GrpcBusi:
    """The gRPC branch server; unscripted methods answer OK with an empty message. Use as an async context
    manager, or `await start()` and `await stop()`."""

    def __init__(self, port: int = 0, host: str = HOST) -> None:
        self.host = host
        self.port = port
        self._server: aio.Server | None = None
        self._calls: list[GrpcCall] = []
        self._scripts: dict[str, list[GrpcReply]] = {}
        self._hooks: dict[str, Hook] = {}
        self._errors: list[str] = []
        self._changed = asyncio.Condition()
        self._stopping = asyncio.Event()

    @property
    def target(self) -> str:
        """`host:port`, the server part of a gRPC branch URL (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def url(self, method: str) -> str:
        """A branch URL for `method` (`/package.Service/Method`): `127.0.0.1:<port>/package.Service/Method`."""
        return self.target + method

    async def start(self) -> Self:
        """Listen (again) on `port`, a free one the first time if it was 0."""
        if self._server is not None:
            raise RuntimeError("the gRPC busi is already running")
        self._stopping = asyncio.Event()
        server = aio.server()
        server.add_generic_rpc_handlers((_AnyMethod(self._serve),))
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.port = server.add_insecure_port(f"{host}:{self.port}")
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        """Stop at once: calls still waiting (a delay, never answering) are cancelled."""
        server, self._server = self._server, None
        if server is not None:
            self._stopping.set()
            await server.stop(None)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def script(self, method: str, entries: Sequence[ScriptEntry]) -> None:
        """Answer the next calls to `method` with `entries` in order; the last entry repeats forever."""
        if not entries:
            raise ValueError("a script needs at least one entry")
        self._scripts[method] = [as_reply(entry) for entry in entries]

    def on(self, method: str, hook: Hook) -> None:
        """Run `hook` for each call to `method`; a None result falls back to the script."""
        self._hooks[method] = hook

    def calls(self, method: str | None = None) -> list[GrpcCall]:
        return [call for call in self._calls if method is None or call.method == method]

    def of(self, gid: str) -> list[GrpcCall]:
        """The calls whose `dtm-gid` is `gid`, in order of arrival."""
        return [call for call in self._calls if call.meta("dtm-gid") == gid]

    async def wait_calls(self, method: str, n: int, timeout: float = 10.0) -> list[GrpcCall]:
        """Wait until `method` has had at least `n` calls; return them all."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.calls(method)) >= n)
        except TimeoutError:
            seen = [call.method for call in self._calls]
            raise AssertionError(f"{method}: wanted {n} calls within {timeout}s; all calls so far: {seen}") from None
        return self.calls(method)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of hooks that raised (their callers got INTERNAL)."""
        return list(self._errors)

    async def _serve(self, method: str, request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        call = GrpcCall(
            method=method,
            payload=request,
            metadata=tuple((key.lower(), value) for key, value in context.invocation_metadata() or ()),
            peer=context.peer(),
            at=time.monotonic(),
        )
        async with self._changed:
            self._calls.append(call)
            self._changed.notify_all()
        reply = self._reply_for(call)
        if reply.delay > 0:
            wait = None if math.isinf(reply.delay) else reply.delay
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
            except TimeoutError:
                pass
            else:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the gRPC busi is stopping")
        if reply.code is not grpc.StatusCode.OK:
            await context.abort(reply.code, reply.details)
        return reply.body

    def _reply_for(self, call: GrpcCall) -> GrpcReply:
        hook = self._hooks.get(call.method)
        if hook is not None:
            try:
                reply = hook(call)
            except Exception:
                self._errors.append(traceback.format_exc())
                return GrpcReply(grpc.StatusCode.INTERNAL, f"gRPC busi hook for {call.method} raised")
            if reply is not None:
                return reply
        script = self._scripts.get(call.method)
        if not script:
            return GrpcReply()
        return script.pop(0) if len(script) > 1 else script[0]
