"""What every reply of a node must satisfy, whatever the request (issue 12), as pure functions of the request,
the reply and what `/query` showed before: this module owns the `Violation` classes, how a reply is read
(refused? a `wait_result` outcome? a JSON-RPC error?), and `Description`, the node's OpenAPI document as an
oracle. `tests.support.fuzz_target` does the I/O and applies them.

Each broken rule is its own `Violation` subclass raised from its own line, so Hypothesis tells them apart and
reports each with its own example.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from openapi_schema_validator import OAS31Validator

from fastdtm.models import GID_PATTERN
from fastdtm.states import TransType
from tests.support.fuzz_calls import ApiCall

#: Never write, whatever they are sent.
READ_ONLY: Final = frozenset(
    {"version", "newGid", "query", "all", "scanKV", "queryKV", "ping", "live", "ready", "metrics", "openapi.json"}
)
#: A 2xx reply leaves a transaction of the body's gid.
CREATES: Final = frozenset({"prepare", "submit", "prepareWorkflow"})
#: Must refuse a gid stored with another trans_type (issue 12, item 1).
TYPED: Final = frozenset({"prepare", "submit", "abort", "registerBranch", "registerTccBranch", "registerXaBranch"})
RPC_REFUSED: Final = frozenset({-32700, -32600, -32601, -32602})
RPC_FAILURE: Final = -32901
KNOWN_TYPES: Final = frozenset(str(t) for t in TransType)


class Violation(AssertionError):
    """A rule every reply must keep was broken."""


class ServerFault(Violation):
    """A 5xx, a dropped connection, or a JSON-RPC internal error."""


class ReadOnlyWrote(Violation):
    pass


class RefusalWrote(Violation):
    pass


class LoggedError(Violation):
    pass


class MismatchAccepted(Violation):
    pass


class NotStored(Violation):
    pass


class NotListed(Violation):
    pass


class NotTerminal(Violation):
    pass


class InvalidAccepted(Violation):
    """The node took a body that its own OpenAPI description says it refuses."""


@dataclass(slots=True)
class Reply:
    call: ApiCall
    status: int
    body: Any
    #: The JSON-RPC error code (0: none), for calls to /api/json-rpc.
    rpc_code: int = 0
    refused: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.rpc_code

    def describe(self) -> str:
        shown = self.body if isinstance(self.body, str) else orjson.dumps(self.body).decode()
        return f"{self.call!r}\n  -> HTTP {self.status} {shown[:600]}"


class Description:
    """`/api/openapi.json` as an oracle: a body the request schema of its operation refuses, the node must
    refuse too (the node may be stricter: rules the schema cannot say, like a URL the branch client takes)."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        components = document["components"]
        self._schemas: dict[str, Any] = {}
        for path, item in document["paths"].items():
            schema = item.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json", {})
            ref = schema.get("schema", {}).get("$ref", "")
            if path.startswith("/api/dtmsvr/") and ref:
                name = path.rpartition("/")[2]
                self._schemas[name] = OAS31Validator({"$ref": ref, "components": components})

    def refuses(self, call: ApiCall) -> str:
        """Why the description refuses the call's body ("" if it takes it, or describes no body for it)."""
        validator = self._schemas.get(kind(call))
        if validator is None:
            return ""
        error = next(iter(validator.iter_errors(dict(call.parsed()))), None)
        return "" if error is None else f"{'/'.join(map(str, error.absolute_path))}: {str(error.message)[:200]}"


def gids(call: ApiCall) -> list[str]:
    """The well-formed gids a call names (body, JSON-RPC params or query): whose state the checks need."""
    values = [call.parsed().get("gid"), *(v for k, v in call.params if k == "gid")]
    return list(dict.fromkeys(v for v in values if isinstance(v, str) and GID_PATTERN.fullmatch(v)))


def waits(call: ApiCall, stored: Mapping[str, dict[str, Any] | None]) -> bool:
    """A 409 may be the outcome of a round this call ran (`wait_result`): then it may have written."""
    fields = call.parsed()
    if fields.get("wait_result") is True:
        return True
    trans = stored.get(str(fields.get("gid")))
    # abort runs with the stored transaction's options.
    return trans is not None and trans.get("wait_result") is True


def kind(call: ApiCall) -> str:
    return call.rpc_method() if call.endpoint == "json-rpc" else call.endpoint


def creates(call: ApiCall) -> bool:
    name = kind(call)
    # A workflow's submit finishes what prepareWorkflow created.
    return name == "prepareWorkflow" or (name in CREATES and call.parsed().get("trans_type") != "workflow")


def mismatch(call: ApiCall, stored: Mapping[str, dict[str, Any] | None]) -> str:
    if kind(call) not in TYPED:
        return ""
    fields = call.parsed()
    asked, gid = fields.get("trans_type"), fields.get("gid")
    trans = stored.get(gid) if isinstance(gid, str) else None
    if trans is None or not isinstance(asked, str) or asked not in KNOWN_TYPES or asked == trans.get("trans_type"):
        return ""
    return f"{kind(call)} with trans_type {asked!r} of {gid}, stored as {trans.get('trans_type')!r}"


def refused(reply: Reply, may_wait: bool) -> bool:
    """Whether the node refused the request; `may_wait`: a 409 may be a `wait_result` outcome instead."""
    if reply.status == UNSUPPORTED_MEDIA_TYPE:  # refused in front of every endpoint, JSON-RPC's too
        return True
    if reply.call.endpoint == "json-rpc":
        # -32603 gets here only as "no transaction with gid" (`rpc_code`): the 404 of JSON-RPC.
        return reply.rpc_code in RPC_REFUSED | {-32603} or (reply.rpc_code == RPC_FAILURE and not may_wait)
    if reply.status == 409:
        return not may_wait
    # Every other 4xx but 425 (ONGOING: a round ran) says the request was not carried out.
    return 400 <= reply.status < 500 and reply.status != 425


#: A POST body a browser could send unasked (form, multipart, text/plain): fastdtm.api.gate.
UNSUPPORTED_MEDIA_TYPE: Final = 415


def rpc_code(reply: Reply) -> int:
    """The JSON-RPC error code; a reply that is not a JSON-RPC 2.0 envelope, or an internal error that is
    not a plain "no such transaction", is a fault."""
    body = reply.body
    if reply.status != 200 or not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        raise ServerFault(f"not a JSON-RPC reply:\n{reply.describe()}")
    error = body.get("error")
    if error is None:
        return 0
    code = error.get("code") if isinstance(error, dict) else None
    if not isinstance(code, int):
        raise ServerFault(f"a JSON-RPC error without a code:\n{reply.describe()}")
    if code == -32603 and not str(error.get("message", "")).startswith("no transaction with gid"):
        raise ServerFault(f"JSON-RPC internal error:\n{reply.describe()}")
    return code


def error_line(line: str) -> str:
    """The line, shortened to what tells the error (a traceback's last lines), if it is one; else ""."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line[:500] if "Traceback" in line else ""
    if not isinstance(entry, dict) or (entry.get("level") not in ("error", "critical") and "exc" not in entry):
        return ""
    exc = str(entry.get("exc", "")).splitlines()
    head = f"{entry.get('level')} {entry.get('logger')}: {str(entry.get('msg'))[:300]}"
    return " | ".join([head, *(part.strip() for part in exc[-3:])])
