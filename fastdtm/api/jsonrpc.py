"""DTM's JSON-RPC 2.0 endpoint (`POST /api/json-rpc`): the same use cases as the HTTP API.

Always HTTP 200; errors travel in the envelope: -32700 bad JSON, -32600 bad envelope (DTM wants a
non-empty string id), -32601 unknown method, -32602 bad params, -32901 FAILURE, -32902 ONGOING,
-32603 anything else (reference §4.3). With authentication on (fastdtm.auth), a call without a known
token gets -32001 with HTTP 401 before its body is read, and a method the token's role may not call
-32003 with HTTP 403: an SDK that only looks at the envelope still sees an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastdtm import wire
from fastdtm.api.gate import CHALLENGE, UNAUTHENTICATED
from fastdtm.api.http import json_response, read_object
from fastdtm.auth import ROLE_KEY, RPC_METHODS, Role, grants
from fastdtm.errors import ApiError, BadRequest, Conflict, Invalid, NotAnObject, Ongoing, PayloadTooLarge, StoreError
from fastdtm.models import BranchRequest, TransRequest
from fastdtm.service import Service, new_gid

Method = Callable[[Service, dict[str, Any]], Awaitable[Any]]

#: In JSON-RPC's range for implementation-defined server errors (-32099..-32000).
UNAUTHORIZED: Final = -32001
FORBIDDEN: Final = -32003


async def _new_gid(service: Service, params: dict[str, Any]) -> Any:
    return {"gid": new_gid()}


async def _prepare(service: Service, params: dict[str, Any]) -> Any:
    await service.prepare(TransRequest.parse(params))


async def _submit(service: Service, params: dict[str, Any]) -> Any:
    await service.submit(TransRequest.parse(params))


async def _abort(service: Service, params: dict[str, Any]) -> Any:
    await service.abort(TransRequest.parse(params))


async def _register_branch(service: Service, params: dict[str, Any]) -> Any:
    await service.register_branch(BranchRequest.parse(params))


METHODS: Final[Mapping[str, Method]] = {
    "newGid": _new_gid,
    "prepare": _prepare,
    "submit": _submit,
    "abort": _abort,
    "registerBranch": _register_branch,
}


#: Never mutated: encoded as `{}`.
_ERROR_RESULT: Final[Mapping[str, Any]] = {}


def _code(exc: Exception) -> int:
    if isinstance(exc, Conflict):
        return -32901
    if isinstance(exc, Ongoing):
        return -32902
    if isinstance(exc, Invalid | BadRequest | PayloadTooLarge):
        return -32602
    return -32603


def _reply(rpc_id: Any, result: Any = None, code: int = 0, message: str = "") -> Response:
    error = {"code": code, "message": message} if code else None
    return json_response({"jsonrpc": "2.0", "id": rpc_id, "error": error, "result": result})


def _refused(rpc_id: Any, status: int, code: int, message: str) -> Response:
    body = {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": code, "message": message}, "result": None}
    headers = {"WWW-Authenticate": CHALLENGE} if status == 401 else None
    return Response(wire.encode(body), status, headers, media_type="application/json")


async def json_rpc(request: Request) -> Response:
    # Absent: authentication is off, and every caller may call every method.
    role: Role | None = request.scope.get(ROLE_KEY, Role.OPERATOR)
    if role is None:
        return _refused(None, 401, UNAUTHORIZED, f"unauthorized: {UNAUTHENTICATED}")
    envelope = await _envelope(request)
    if isinstance(envelope, Response):
        return envelope
    rpc_id, name, params = envelope
    method = METHODS.get(name)
    if method is None:
        return _reply(rpc_id, code=-32601, message=f"Method not found: {name[:100]}")
    if not grants(role, RPC_METHODS[name]):
        message = f"forbidden: a {role.value} token may not call {name}; it needs an operator token"
        return _refused(rpc_id, 403, FORBIDDEN, message)
    if not isinstance(params, dict):
        return _reply(rpc_id, code=-32602, message="params must be an object")
    try:
        return _reply(rpc_id, await method(request.state.service, params))
    # A method's error comes with `"result": {}`, as DTM's (it puts the Go error value there, which
    # encodes as an empty object); an envelope's error with null.
    except ApiError as exc:
        return _reply(rpc_id, _ERROR_RESULT, code=_code(exc), message=exc.message)
    except StoreError as exc:
        return _reply(rpc_id, _ERROR_RESULT, code=-32603, message=f"store error: {exc}")


async def _envelope(request: Request) -> tuple[str, str, Any] | Response:
    """(id, method name, params) of the request, or the reply to a request that is not a JSON-RPC 2.0 call."""
    try:
        envelope = await read_object(request)
    except NotAnObject as exc:  # valid JSON: a batch (not supported) or a scalar is an invalid request
        return _reply(None, code=-32600, message=f"{exc.message} Batches are not supported.")
    except BadRequest as exc:
        return _reply(None, code=-32700, message=exc.message)
    except PayloadTooLarge as exc:
        return _reply(None, code=-32600, message=exc.message)
    rpc_id = envelope.get("id")
    if envelope.get("jsonrpc") != "2.0" or not isinstance(rpc_id, str) or not rpc_id:
        return _reply(rpc_id, code=-32600, message="not a JSON-RPC 2.0 request with a non-empty string id")
    name = envelope.get("method")
    if not isinstance(name, str):
        return _reply(rpc_id, code=-32600, message="method must be a string")
    return rpc_id, name, envelope.get("params") or {}


routes = [Route("/json-rpc", json_rpc, methods=["POST"])]
