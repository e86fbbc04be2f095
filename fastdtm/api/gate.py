"""The check in front of every endpoint: a POST a browser could send unasked is refused (415) and, with
`--auth-file`, the caller's token and role are checked (401, 403) before the endpoint runs.

Why wrap the endpoints: a request reaches one by three ways (DirectRoutes' table; the Starlette app, for
paths with parameters, HEAD and whatever the table does not know; fastdtm.api.protocol's shortcut, which
calls DirectRoutes.respond), and the endpoint is the one thing all three call. A route whose check has
nothing to do is left unwrapped: without authentication, only the routes that take POST are wrapped.

Why 415: a page a browser shows may send a "simple" cross-origin request, one it sends without asking the
server first, and a POST is simple when its Content-Type is a form, multipart or text/plain. No CORS header
is ever sent, so the page cannot read the reply, but the request would still be served. Every SDK sends
`application/json` (or no body at all), so refusing those three types costs them nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import threading
from collections.abc import Iterable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from fastdtm import wire
from fastdtm.api.direct import Endpoint
from fastdtm.auth import ROLE_KEY, Access, AuthFileError, Role, Tokens, credential, route_access
from fastdtm.errors import ApiError, Forbidden, Unauthorized, UnsupportedMediaType

log = logging.getLogger(__name__)

#: The Content-Types of a POST a browser sends cross-origin without a preflight (the Fetch standard's
#: CORS-safelisted request header), as media types without parameters.
SIMPLE_TYPES: Final = frozenset({b"application/x-www-form-urlencoded", b"multipart/form-data", b"text/plain"})
#: Both schemes a token may come in (RFC 9110 §11.6.1: several challenges, comma-separated).
CHALLENGE: Final = 'Basic realm="fastdtm", Bearer'
UNAUTHENTICATED: Final = (
    "this call needs a token: `Authorization: Bearer <token>`, or HTTP Basic with the token as the password "
    "(http://app:<token>@host:port/api/dtmsvr)"
)


def reply(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    return Response(wire.encode(error.body()), error.status_code, headers, media_type="application/json")


#: Built once and never mutated, as http.py's success reply.
_UNAUTHORIZED: Final = reply(Unauthorized(f"unauthorized: {UNAUTHENTICATED}"), {"WWW-Authenticate": CHALLENGE})


def is_simple_type(content_type: bytes) -> bool:
    if content_type.startswith(b"application/json"):  # what the SDKs send: settled without parsing
        return False
    return content_type.partition(b";")[0].strip().lower() in SIMPLE_TYPES


def unsupported(content_type: bytes) -> Response:
    shown = content_type.partition(b";")[0].strip().decode("latin-1")[:60]
    return reply(
        UnsupportedMediaType(
            f"a POST body must be JSON (Content-Type: application/json), not {shown!r}: "
            "a browser may send that type from any page without asking"
        )
    )


def forbidden(role: Role, path: str) -> Response:
    return reply(Forbidden(f"forbidden: a {role.value} token may not call {path[:200]}; it needs an operator token"))


class Gate:
    """The current tokens (None: authentication off) and the wrappers that check them."""

    def __init__(self, auth_file: str = "", *, metrics_auth: bool = False) -> None:
        self.auth_file = auth_file
        self.metrics_auth = metrics_auth
        self.tokens: Tokens | None = None
        if auth_file:
            self.tokens = Tokens.read(auth_file)
            log.info("authentication on: %s from %s", self.tokens.summary(), auth_file)
            _warn_if_readable_by_others(auth_file)

    def reload(self) -> None:
        """Read the file again (SIGHUP); a file that cannot be used leaves the tokens as they were."""
        try:
            tokens = Tokens.read(self.auth_file)
        except AuthFileError as exc:
            kept = self.tokens.summary() if self.tokens is not None else "no tokens"
            log.error("%s; keeping the %s read before", exc, kept)
            return
        self.tokens = tokens
        log.info("auth file %s re-read: %s", self.auth_file, tokens.summary())
        _warn_if_readable_by_others(self.auth_file)

    def watch_sighup(self) -> None:
        """From now on SIGHUP re-reads the token file. Signal handlers belong to the main thread: an app run
        in a test's thread (or without authentication) leaves SIGHUP alone."""
        if self._watches_sighup():
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)

    def unwatch_sighup(self) -> None:
        if self._watches_sighup():
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def _watches_sighup(self) -> bool:
        return self.tokens is not None and threading.current_thread() is threading.main_thread()

    def guard_routes(self, routes: Iterable[BaseRoute], mounted_at: str = "") -> list[BaseRoute]:
        """`routes` with each endpoint behind its check; KeyError names a route without a role (auth.ROUTES)."""
        guarded: list[BaseRoute] = []
        for route in routes:
            if isinstance(route, Mount):
                guarded.append(Mount(route.path, routes=self.guard_routes(route.routes, mounted_at + route.path)))
            elif isinstance(route, Route):
                path = mounted_at + route.path
                access = route_access(path, metrics_auth=self.metrics_auth)
                methods = route.methods or set()
                endpoint = self.guard(route.endpoint, access, takes_post="POST" in methods)
                guarded.append(Route(route.path, endpoint, methods=methods, name=route.name))
            else:
                raise TypeError(f"cannot guard the route {route!r}")
        return guarded

    def guard(self, endpoint: Endpoint, access: Access, *, takes_post: bool) -> Endpoint:
        """The health checks are left as they are: they write nothing, and a probe has no token."""
        if access is Access.OPEN:
            return endpoint
        if self.tokens is not None:
            return self._authenticated(endpoint, access)
        return _refusing_simple_posts(endpoint) if takes_post else endpoint

    def role_of(self, authorization: bytes | None) -> Role | None:
        tokens = self.tokens
        if authorization is None or tokens is None:
            return None
        token = credential(authorization)
        return tokens.role_of(token) if token is not None else None

    def _authenticated(self, endpoint: Endpoint, access: Access) -> Endpoint:
        needs_operator = access is Access.OPERATOR
        # JSON-RPC answers a call without a token in its own shape, with the call's id where it has one.
        per_method = access is Access.PER_METHOD

        async def authenticated(request: Request) -> Response:
            scope = request.scope
            post = scope["method"] == "POST"
            authorization = simple = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    authorization = value
                elif post and name == b"content-type" and is_simple_type(value):
                    simple = value
            role = self.role_of(authorization)
            if role is None:
                if not per_method:
                    return _UNAUTHORIZED
            elif needs_operator and role is not Role.OPERATOR:
                return forbidden(role, scope["path"])
            elif simple is not None:
                return unsupported(simple)
            scope[ROLE_KEY] = role
            return await endpoint(request)

        return authenticated


def _refusing_simple_posts(endpoint: Endpoint) -> Endpoint:
    async def refusing_simple_posts(request: Request) -> Response:
        scope = request.scope
        if scope["method"] == "POST":
            for name, value in scope["headers"]:
                if name == b"content-type" and is_simple_type(value):
                    return unsupported(value)
        return await endpoint(request)

    return refusing_simple_posts


def _warn_if_readable_by_others(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("auth file %s can be read by other users (mode %o): chmod 600 it", path, stat.S_IMODE(mode))
