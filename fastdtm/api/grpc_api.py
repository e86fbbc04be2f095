"""DTM's gRPC API: the service `dtmgimp.Dtm` on `--grpc-port` (36790, DTM's), with reflection and health.

Served by `grpc.aio` in the node's own process and event loop, on the same `Service` as the HTTP routes:
a gRPC request is decoded into the same values (`TransRequest.parse` of the same keys, the payloads as
bytes), so every rule and check is the HTTP one, and every error is mapped to a status here, in one place:

| fastdtm error | gRPC status | what the Go SDK makes of it |
|---|---|---|
| Conflict (HTTP 409, FAILURE) | ABORTED | `dtmcli.ErrFailure` |
| Ongoing (425, ONGOING) | FAILED_PRECONDITION | `dtmcli.ErrOngoing` |
| Invalid, BadRequest (422, 400), a message that does not decode | INVALID_ARGUMENT | an error |
| NotFound (404) | NOT_FOUND | an error |
| Unauthorized, Forbidden (401, 403) | UNAUTHENTICATED, PERMISSION_DENIED | an error |
| a store error (500) | UNAVAILABLE | an error |
| anything else (500) | INTERNAL | an error |

Requests are bytes until the handler decodes them, so a message that is not the method's gets
INVALID_ARGUMENT and its reason rather than gRPC's generic INTERNAL "Exception deserializing request!". A
message over `--max-body-bytes` is refused by gRPC itself (RESOURCE_EXHAUSTED) before it is read whole.

With `--auth-file`, a call needs `authorization: Bearer <token>` (or Basic) in its metadata and a role
allowed to call the method (auth.GRPC_METHODS); health and reflection are open, as `/api/live` is. With
`--ssl-certfile`, the gRPC port serves TLS with the same certificate, asking for client certificates when
`--ssl-ca-certs` is set.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeAlias

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import DecodeError, Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from fastdtm import wire
from fastdtm.api.gate import Gate
from fastdtm.auth import GRPC_METHODS, Role
from fastdtm.config import Settings
from fastdtm.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Ongoing,
    PayloadTooLarge,
    StoreError,
    Unauthorized,
)
from fastdtm.metrics import Metrics
from fastdtm.models import BranchRequest, TransRequest, body_bytes, stored_body
from fastdtm.proto import dtmgimp_pb2 as pb
from fastdtm.service import Service, new_gid
from fastdtm.states import GRPC
from fastdtm.topics import Topics

log = logging.getLogger(__name__)

SERVICE: Final = "dtmgimp.Dtm"
#: Calls one client connection may have under way at once; more wait for one to end (HTTP/2 flow control).
MAX_CONCURRENT_STREAMS: Final = 1000
_EMPTY: Final = empty_pb2.Empty().SerializeToString()
_STATUS: Final[tuple[tuple[type[Exception], grpc.StatusCode], ...]] = (
    (Conflict, grpc.StatusCode.ABORTED),
    (Ongoing, grpc.StatusCode.FAILED_PRECONDITION),
    (Invalid, grpc.StatusCode.INVALID_ARGUMENT),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (Forbidden, grpc.StatusCode.PERMISSION_DENIED),
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
)

Handler: TypeAlias = Callable[[bytes], Awaitable[bytes]]
Context: TypeAlias = aio.ServicerContext[bytes, bytes]


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status (and its message) a failed call answers with."""
    if isinstance(exc, ApiError):
        for kind, code in _STATUS:
            if isinstance(exc, kind):
                return code, exc.message
        return grpc.StatusCode.INTERNAL, exc.message
    if isinstance(exc, StoreError):
        return grpc.StatusCode.UNAVAILABLE, f"store error: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}"


def _decode(message: type[Message], raw: bytes) -> Any:
    try:
        return message.FromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"the request is not a {message.DESCRIPTOR.full_name}: {exc}") from None


def trans_request(message: pb.DtmRequest) -> TransRequest:
    """The DtmRequest as the JSON body the HTTP API would have had: the same parse, the same checks."""
    steps: Any = None
    if message.Steps:
        try:
            steps = wire.decode(message.Steps)
        except ValueError:
            raise Invalid("Steps must be the JSON text of an array of objects of strings.") from None
    options = message.TransOptions
    fields = {
        "gid": message.Gid,
        "trans_type": message.TransType,
        "steps": steps,
        "custom_data": message.CustomedData,
        "query_prepared": message.QueryPrepared,
        "protocol": GRPC,
        "rollback_reason": message.RollbackReason,
        "req_extra": dict(message.ReqExtra),
        "wait_result": options.WaitResult,
        "timeout_to_fail": options.TimeoutToFail,
        "retry_interval": options.RetryInterval,
        "request_timeout": options.RequestTimeout,
        "retry_limit": options.RetryLimit,
        "branch_headers": dict(options.BranchHeaders),
    }
    return TransRequest.parse(fields, binary_payloads=tuple(message.BinPayloads))


def branch_request(message: pb.DtmBranchRequest) -> BranchRequest:
    """registerBranch's flat map of strings, as DTM's gRPC handler reads it: Data, then the fixed fields, the
    body in base64 (a gRPC transaction keeps its bodies so)."""
    fields = dict(message.Data)
    fields |= {"gid": message.Gid, "trans_type": message.TransType, "branch_id": message.BranchID}
    fields["data"] = stored_body(message.BusiPayload, GRPC)
    return BranchRequest.parse(fields, GRPC)


class DtmServicer:
    """The methods of dtmgimp.Dtm, bytes in and bytes out."""

    def __init__(self, service: Service, topics: Topics) -> None:
        self.service = service
        self.topics = topics

    def handlers(self) -> dict[str, Handler]:
        return {
            "NewGid": self.new_gid,
            "Submit": self.submit,
            "Prepare": self.prepare,
            "Abort": self.abort,
            "RegisterBranch": self.register_branch,
            "PrepareWorkflow": self.prepare_workflow,
            "Subscribe": self.subscribe,
            "Unsubscribe": self.unsubscribe,
            "DeleteTopic": self.delete_topic,
        }

    async def new_gid(self, raw: bytes) -> bytes:
        _decode(empty_pb2.Empty, raw)
        return pb.DtmGidReply(Gid=new_gid()).SerializeToString()

    async def submit(self, raw: bytes) -> bytes:
        await self.service.submit(trans_request(_decode(pb.DtmRequest, raw)))
        return _EMPTY

    async def prepare(self, raw: bytes) -> bytes:
        await self.service.prepare(trans_request(_decode(pb.DtmRequest, raw)))
        return _EMPTY

    async def abort(self, raw: bytes) -> bytes:
        await self.service.abort(trans_request(_decode(pb.DtmRequest, raw)))
        return _EMPTY

    async def register_branch(self, raw: bytes) -> bytes:
        await self.service.register_branch(branch_request(_decode(pb.DtmBranchRequest, raw)))
        return _EMPTY

    async def prepare_workflow(self, raw: bytes) -> bytes:
        trans, branches = await self.service.prepare_workflow(trans_request(_decode(pb.DtmRequest, raw)))
        reply = pb.DtmProgressesReply(
            Transaction=pb.DtmTransaction(
                Gid=trans.gid, Status=trans.status, RollbackReason=trans.rollback_reason, Result=trans.result
            ),
            Progresses=[
                pb.DtmProgress(
                    Status=b.status, BinData=body_bytes(b.data, trans.protocol), BranchID=b.branch_id, Op=b.op
                )
                for b in branches
            ],
        )
        return reply.SerializeToString()

    async def subscribe(self, raw: bytes) -> bytes:
        request: pb.DtmTopicRequest = _decode(pb.DtmTopicRequest, raw)
        await self.topics.subscribe(request.Topic, request.URL, request.Remark)
        return _EMPTY

    async def unsubscribe(self, raw: bytes) -> bytes:
        request: pb.DtmTopicRequest = _decode(pb.DtmTopicRequest, raw)
        await self.topics.unsubscribe(request.Topic, request.URL)
        return _EMPTY

    async def delete_topic(self, raw: bytes) -> bytes:
        request: pb.DtmTopicRequest = _decode(pb.DtmTopicRequest, raw)
        await self.topics.delete(request.Topic)
        return _EMPTY


def _token(context: Context) -> bytes | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value.encode("latin-1") if isinstance(value, str) else value
    return None


class GrpcApi:
    """The node's gRPC server: dtmgimp.Dtm, reflection and health, started and stopped by the lifespan."""

    def __init__(self, settings: Settings, servicer: DtmServicer, gate: Gate, metrics: Metrics) -> None:
        self.settings = settings
        self.gate = gate
        self.metrics = metrics
        self.health = HealthServicer()
        options = [
            # The HTTP API's bounds: a message as large as a body, metadata as large as a request head, and a
            # bounded number of calls at once on one connection (gRPC's default is unbounded).
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_metadata_size", settings.max_header_bytes),
            ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
            # Worker processes share the port (the kernel spreads connections); one process alone must not
            # quietly share it with another node started on the same port by mistake.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ]
        self.server = aio.server(options=options)
        methods: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
            name: grpc.unary_unary_rpc_method_handler(self._wrap(name, handler))
            for name, handler in servicer.handlers().items()
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, methods),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = 0
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen on --grpc-port; raises OSError naming the address when it cannot."""
        settings = self.settings
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{settings.grpc_port}"
        try:
            if settings.ssl_certfile:
                self.port = self.server.add_secure_port(address, _credentials(settings))
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc's way to say the bind failed
            raise OSError(f"cannot listen for gRPC on {address} (--grpc-port): {exc}") from None
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
        log.info("gRPC (%s, reflection, health) listening on %s", SERVICE, address)

    def stop_in_background(self, grace: float) -> None:
        """Health says NOT_SERVING, new calls are refused, and running ones get `grace` seconds to finish (the
        drain's listener: it runs beside uvicorn's own graceful stop)."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop(grace))

    async def stopped(self) -> None:
        """Once the server has stopped (stopping it now, at once, if no drain began it)."""
        self.stop_in_background(0)
        assert self._stopping is not None
        await self._stopping

    async def _stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)

    def _wrap(self, name: str, handler: Handler) -> Callable[[bytes, Context], Awaitable[bytes]]:
        needed = GRPC_METHODS[name]
        api = name.lower()
        metrics = self.metrics
        gate = self.gate

        async def call(raw: bytes, context: Context) -> bytes:
            started = time.perf_counter()
            ok = False
            try:
                if gate.tokens is not None:
                    _check_role(gate, _token(context), needed, name)
                reply = await handler(raw)
                ok = True
                return reply
            except Exception as exc:
                code, message = status_of(exc)
                if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE):
                    log.warning("gRPC %s -> %s %s", name, code.name, message, exc_info=code is grpc.StatusCode.INTERNAL)
                await context.abort(code, message)
                raise  # abort raises; this is never reached
            finally:
                metrics.api_call(api, ok, time.perf_counter() - started, GRPC)

        return call


def _check_role(gate: Gate, authorization: bytes | None, needed: Role, method: str) -> None:
    role = gate.role_of(authorization)
    if role is None:
        raise Unauthorized(
            "unauthorized: this call needs a token: `authorization: Bearer <token>` in the gRPC metadata"
        )
    if needed is Role.OPERATOR and role is not Role.OPERATOR:
        raise Forbidden(f"forbidden: a {role.value} token may not call {method}; it needs an operator token")


def _credentials(settings: Settings) -> grpc.ServerCredentials:
    with open(settings.ssl_keyfile, "rb") as key, open(settings.ssl_certfile, "rb") as cert:
        pair = (key.read(), cert.read())
    ca = None
    if settings.ssl_ca_certs:
        with open(settings.ssl_ca_certs, "rb") as file:
            ca = file.read()
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)
