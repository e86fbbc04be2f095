"""Who may call what: the token file, the role each route asks for, and the token check.

Off by default, as in DTM. With `--auth-file PATH` every call but the health checks needs a token from
that file: `Authorization: Bearer <token>`, or HTTP Basic with the token as the password (any user
name), which is what Go's net/http and Python's requests send for `http://app:<token>@host/...`.
Two roles: `client` (what an SDK does to run its own transactions) and `operator` (everything).

Tokens are held as SHA-256 digests and a presented one is compared with every digest in constant time,
so neither the timing nor the length of a comparison says how close a guess came. No token is ever put
in a log line or an error text: a bad line of the file is named by its number.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Final

from fastdtm.config import SettingsError

#: Where the check leaves the caller's role in the ASGI scope: a `Role`, or None for a JSON-RPC call without
#: a valid token (the endpoint answers it in its own shape). Absent: no authentication, every caller may
#: do everything (`/query` reveals secrets to an operator only).
ROLE_KEY: Final = "fastdtm.role"
#: A token's length, and its characters: RFC 3986's unreserved ones, so it goes into a URL's userinfo and
#: into a header unescaped.
MIN_TOKEN: Final = 16
MAX_TOKEN: Final = 256
TOKEN_PATTERN: Final = re.compile(rf"[A-Za-z0-9._~-]{{{MIN_TOKEN},{MAX_TOKEN}}}")


class Role(StrEnum):
    CLIENT = "client"
    OPERATOR = "operator"


class Access(Enum):
    """What a route asks of its caller."""

    OPEN = "open"  # nothing: health checks a probe or load balancer calls without a token
    CLIENT = "client"  # any known token
    OPERATOR = "operator"  # an operator token
    PER_METHOD = "per method"  # JSON-RPC: the endpoint checks each call against RPC_METHODS


#: Every route of the app by its full path. `create_app` refuses a route missing here, so a new route
#: cannot be served before someone decides who may call it.
ROUTES: Final[Mapping[str, Access]] = {
    # What the SDKs call to run their own transactions.
    "/api/dtmsvr/newGid": Access.CLIENT,
    "/api/dtmsvr/prepare": Access.CLIENT,
    "/api/dtmsvr/submit": Access.CLIENT,
    "/api/dtmsvr/abort": Access.CLIENT,
    "/api/dtmsvr/registerBranch": Access.CLIENT,
    "/api/dtmsvr/registerTccBranch": Access.CLIENT,
    "/api/dtmsvr/registerXaBranch": Access.CLIENT,
    "/api/dtmsvr/prepareWorkflow": Access.CLIENT,
    "/api/dtmsvr/query": Access.CLIENT,  # one gid: the C# SDK's Query, tests waiting for an outcome
    "/api/dtmsvr/version": Access.CLIENT,
    "/api/json-rpc": Access.PER_METHOD,
    "/api/openapi.json": Access.CLIENT,
    # Operators: other people's transactions, the schedule, the topics (the KV's only content).
    "/api/dtmsvr/forceStop": Access.OPERATOR,
    "/api/dtmsvr/resetNextCronTime": Access.OPERATOR,
    "/api/dtmsvr/resetCronTime": Access.OPERATOR,
    "/api/dtmsvr/all": Access.OPERATOR,
    "/api/dtmsvr/subscribe": Access.OPERATOR,
    "/api/dtmsvr/unsubscribe": Access.OPERATOR,
    "/api/dtmsvr/topic/{topicName:path}": Access.OPERATOR,
    "/api/dtmsvr/scanKV": Access.OPERATOR,  # lists subscriber URLs; no SDK reads the KV
    "/api/dtmsvr/queryKV": Access.OPERATOR,
    # The console's endpoints (fastdtm/api/admin.py): every read shows other people's transactions.
    "/api/admin/transaction": Access.OPERATOR,
    "/api/admin/retry": Access.OPERATOR,
    "/api/admin/pause": Access.OPERATOR,
    "/api/admin/resume": Access.OPERATOR,
    "/api/admin/skip": Access.OPERATOR,
    "/api/admin/fail": Access.OPERATOR,
    "/api/admin/attention": Access.OPERATOR,
    "/api/admin/bulk": Access.OPERATOR,
    "/api/admin/stats": Access.OPERATOR,
    "/api/admin/nodes": Access.OPERATOR,
    # The console's page and assets: static, no data in them; the page asks for a token for the calls above.
    "/admin": Access.OPEN,
    "/admin/": Access.OPEN,
    "/admin/static/{name}": Access.OPEN,
    # Health checks: probes and load balancers have no token.
    "/api/ping": Access.OPEN,
    "/api/live": Access.OPEN,
    "/api/ready": Access.OPEN,
    # OPERATOR with --metrics-auth (route_access).
    "/api/metrics": Access.OPEN,
}
METRICS_PATH: Final = "/api/metrics"

#: The role each JSON-RPC method asks for (the methods of fastdtm.api.jsonrpc).
RPC_METHODS: Final[Mapping[str, Role]] = {
    "newGid": Role.CLIENT,
    "prepare": Role.CLIENT,
    "submit": Role.CLIENT,
    "abort": Role.CLIENT,
    "registerBranch": Role.CLIENT,
}


#: The role each method of the gRPC service `dtmgimp.Dtm` asks for (fastdtm.api.grpc_api), as its HTTP route.
GRPC_METHODS: Final[Mapping[str, Role]] = {
    "NewGid": Role.CLIENT,
    "Submit": Role.CLIENT,
    "Prepare": Role.CLIENT,
    "Abort": Role.CLIENT,
    "RegisterBranch": Role.CLIENT,
    "PrepareWorkflow": Role.CLIENT,
    "Subscribe": Role.OPERATOR,
    "Unsubscribe": Role.OPERATOR,
    "DeleteTopic": Role.OPERATOR,
}


class AuthFileError(SettingsError):
    """The token file cannot be read or has a bad line (named by number, never by its content)."""


def route_access(path: str, *, metrics_auth: bool) -> Access:
    """What the route at `path` (as the app declares it) asks for; KeyError if it is not classified."""
    if path == METRICS_PATH and metrics_auth:
        return Access.OPERATOR
    return ROUTES[path]


def grants(role: Role, needed: Role) -> bool:
    return role is Role.OPERATOR or needed is Role.CLIENT


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


@dataclass(frozen=True, slots=True)
class Tokens:
    """The tokens of one reading of the file, as (digest, role) pairs."""

    entries: tuple[tuple[bytes, Role], ...]

    @classmethod
    def read(cls, path: str) -> Tokens:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthFileError(f"auth file {path}: cannot be read: {exc}") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, source: str) -> Tokens:
        """`token role` lines; blank lines and lines starting with `#` are skipped."""
        entries: dict[bytes, tuple[Role, int]] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            token, role = _parse_line(fields, f"auth file {source}, line {number}")
            digest = _digest(token.encode("ascii"))
            if digest in entries:
                first = entries[digest][1]
                raise AuthFileError(f"auth file {source}, line {number}: the same token as line {first}")
            entries[digest] = (role, number)
        if not entries:
            raise AuthFileError(f"auth file {source}: no `token role` line (every call would be refused)")
        return cls(tuple((digest, role) for digest, (role, _) in entries.items()))

    def role_of(self, token: bytes) -> Role | None:
        """The role of `token`, compared with every known token whatever matches (constant time)."""
        digest = _digest(token)
        found: Role | None = None
        for known, role in self.entries:
            if hmac.compare_digest(digest, known):
                found = role
        return found

    def summary(self) -> str:
        operators = sum(1 for _, role in self.entries if role is Role.OPERATOR)
        return f"{len(self.entries)} tokens ({operators} operator)"


def _parse_line(fields: list[str], where: str) -> tuple[str, Role]:
    if len(fields) != 2:
        raise AuthFileError(f"{where}: expected `token role`, found {len(fields)} fields")
    token, role = fields
    if not TOKEN_PATTERN.fullmatch(token):
        raise AuthFileError(
            f"{where}: a token is {MIN_TOKEN} to {MAX_TOKEN} letters, digits and - . _ ~ "
            "(e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    try:
        return token, Role(role)
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise AuthFileError(f"{where}: unknown role {role[:40]!r} (roles: {roles})") from None


def credential(authorization: bytes) -> bytes | None:
    """The token an Authorization header value carries: `Bearer <token>`, or Basic with it as the password."""
    scheme, _, rest = authorization.partition(b" ")
    scheme = scheme.lower()
    if scheme == b"bearer":
        return rest.strip() or None
    if scheme != b"basic":
        return None
    try:
        decoded = base64.b64decode(rest.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _, colon, password = decoded.partition(b":")
    return password if colon and password else None
