"""Plumbing shared by the HTTP handlers: reading bounded bodies, JSON replies, error replies."""

from __future__ import annotations

import logging
from typing import Any, Final

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from fastdtm import wire
from fastdtm.auth import ROLE_KEY, Role
from fastdtm.errors import ApiError, Invalid, PayloadTooLarge
from fastdtm.models import ASCII_DIGITS
from fastdtm.redaction import Redactor

log = logging.getLogger(__name__)

SUCCESS = b'{"dtm_result":"SUCCESS"}'
#: The status a request the client abandoned counts under in the metrics (never sent).
CLIENT_CLOSED_REQUEST: Final = 499


def json_response(value: Any, status_code: int = 200) -> Response:
    return Response(wire.encode(value), status_code=status_code, media_type="application/json")


#: Built once: a Response is only read when sent (status, raw headers, body), so one instance serves
#: every success reply and the hot path skips building its headers each time. Never mutated.
_SUCCESS_RESPONSE: Final = Response(SUCCESS, media_type="application/json")


def success() -> Response:
    return _SUCCESS_RESPONSE


async def read_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, refused past the size limit before it is all read.

    Reads the ASGI messages itself: Starlette's `request.stream()` (an async generator) and a parsed
    `request.headers` cost more than the rest of decoding on the hot path. The body can be read once.
    """
    scope = request.scope
    limit: int = scope["state"]["settings"].max_body_bytes
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes.")
            break
    chunks = []
    size = 0
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return wire.decode_object(chunks[0] if len(chunks) == 1 else b"".join(chunks))


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if exc.status_code >= 500:
        log.warning("%s %s -> %d %s", request.method, request.url.path, exc.status_code, exc.message)
    return json_response(exc.body(), exc.status_code)


async def client_gone(request: Request, exc: Exception) -> Response:
    """The connection ended before the request body was all in (`ClientDisconnect`): the client left, or
    sent its body too slowly (fastdtm.api.protocol then answered 408 and closed it).

    The client's doing, not the node's: one line at info, no traceback. Nobody is left to read a reply,
    and none is written (uvicorn and the direct protocol drop a reply to a disconnected client); the
    status is for the request metrics only (nginx's "client closed request").
    """
    log.info("%s %s: the connection ended before the request body was all in", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def store_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s: store error: %s", request.method, request.url.path, exc)
    return json_response({"message": f"store error: {exc}"}, 500)


def shown_as(request: Request) -> Redactor | None:
    """How a transaction is shown: its secrets masked, unless an operator asks with `?reveal=1` (the auth
    layer names the caller's role in the scope; without authentication every caller is an operator)."""
    if request.query_params.get("reveal") == "1" and request.scope.get(ROLE_KEY, Role.OPERATOR) is Role.OPERATOR:
        return None
    redactor: Redactor = request.scope["state"]["redactor"]
    return redactor


def int_param(raw: str | None, name: str, *, default: int, low: int = 0, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not ASCII_DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise Invalid(f"query parameter '{name}' must be an integer within {low}..{high}, got '{raw[:40]}'.")
    return int(raw)
