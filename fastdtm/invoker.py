"""Branch calls: build the request DTM's way, over HTTP or gRPC, and map the reply to an Outcome.

The URL decides, as in DTM: http:// and https:// over HTTP, anything else (`host:port/package.Service/Method`)
over gRPC. One shared `HttpClient` and one `GrpcClient` per process.

HTTP: a call is POST when it has a body, else GET; the server adds `gid, trans_type, branch_id, op` to the
query string and the transaction's `branch_headers` to the headers (reference §5.2). Reply mapping (§2.2):
ONGOING first (425 or the word in the body), then FAILURE (409 or the word), then 200 = SUCCESS; anything
else, including network errors and timeouts, is an ERROR to retry.

gRPC: the payload bytes as the request message; `dtm-gid, dtm-trans_type, dtm-branch_id, dtm-op, dtm-dtm`
(and `dtm-phase2_url` for XA) plus the branch headers as metadata; the call's deadline is the request
timeout. Status OK = SUCCESS, ABORTED = FAILURE (ONGOING when its message is the word, as SDKs before
v1.10 said it), FAILED_PRECONDITION = ONGOING, any other (and no call at all) an ERROR to retry.

A transaction submitted over gRPC (`protocol` "grpc") stores its branch bodies as base64 text, since they
are bytes; they are decoded here, whichever way the branch is called.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote_plus

import grpc
from mypy_extensions import mypyc_attr

from fastdtm.branch_grpc import GrpcClient
from fastdtm.branch_http import HttpClient
from fastdtm.grpc_syntax import Metadata, is_http_url
from fastdtm.kinds.base import Call
from fastdtm.models import Transaction, body_bytes
from fastdtm.records import record
from fastdtm.states import Op, Outcome, TransType

log = logging.getLogger(__name__)

#: Bytes of a reply body kept for reasons and logs.
_DETAIL_LIMIT = 1000
#: DTM's words, before the reply, for a branch reply it does not take as an outcome (a status other than
#: 200, 409 or 425, a network error; FAILURE outside a saga's action): SDKs show them under `wait_result`.
UNKNOWN_RESULT: Final = (
    "your http/grpc result should be specified as in:\nhttp://d.dtm.pub/practice/arch.html#proto\n"
    "unkown result will be retried: "
)
_JSON: Final[Mapping[str, str]] = {"Content-Type": "application/json"}


@record
class CallResult:
    outcome: Outcome
    #: What came back, for the rollback reason and the logs.
    detail: str
    #: The reply's status ("HTTP 500", "gRPC Unavailable"); "" when none came (a connection error).
    code: str = ""
    #: How long the call took (the branch-call latency metric).
    seconds: float = 0.0


def classify(status: int, body: str) -> Outcome:
    if status == 425 or "ONGOING" in body:
        return Outcome.ONGOING
    if status == 409 or "FAILURE" in body:
        return Outcome.FAILURE
    return Outcome.SUCCESS if status == 200 else Outcome.ERROR


#: Values quote_plus leaves as they are (its always-safe set): most gids, every branch id and op.
_UNQUOTED: Final = re.compile(r"[A-Za-z0-9_.\-~]*")


def _quoted(value: str) -> str:
    return value if _UNQUOTED.fullmatch(value) else quote_plus(value)


def branch_url(url: str, trans: Transaction, call: Call) -> str:
    # What urlencode() gives for these four, spelled out: its generality cost ~10 µs a call, 3x this;
    # quote_plus only for a value that needs it (it costs ~1 µs even when it changes nothing).
    query = (
        f"gid={_quoted(trans.gid)}&trans_type={trans.trans_type.value}"
        f"&branch_id={_quoted(call.branch_id)}&op={_quoted(call.op)}"
    )
    return f"{url}{'&' if '?' in url else '?'}{query}"


def call_headers(branch_headers: Mapping[str, str]) -> Mapping[str, str]:
    """`Content-Type: application/json` plus the transaction's headers, which may replace it (any case)."""
    if not branch_headers:
        return _JSON
    if any(name.lower() == "content-type" for name in branch_headers):
        return branch_headers
    return {**_JSON, **branch_headers}


def grpc_metadata(trans: Transaction, call: Call) -> Metadata:
    """What a gRPC branch reads its transaction from (DTM's `dtm-` keys), then the transaction's headers.
    `dtm-dtm` is empty, as DTM's server sends it: the coordinator's address as its branches reach it is
    not something a node can know."""
    metadata: list[tuple[str, str | bytes]] = [
        ("dtm-gid", trans.gid),
        ("dtm-trans_type", trans.trans_type.value),
        ("dtm-branch_id", call.branch_id),
        ("dtm-op", call.op),
        ("dtm-dtm", ""),
    ]
    if trans.trans_type is TransType.XA:
        metadata.append(("dtm-phase2_url", call.url))
    for name, value in trans.options.branch_headers.items():
        key = name.lower()
        metadata.append((key, value.encode() if key.endswith("-bin") else value))
    return metadata


def classify_grpc(code: grpc.StatusCode, message: str) -> Outcome:
    if code is grpc.StatusCode.OK:
        return Outcome.SUCCESS
    if code is grpc.StatusCode.ABORTED:
        return Outcome.ONGOING if message == "ONGOING" else Outcome.FAILURE
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return Outcome.ONGOING
    return Outcome.ERROR


# Compiled (docs/compiled.md), yet tests subclass it to slow a call down.
@mypyc_attr(allow_interpreted_subclasses=True)
class Invoker:
    def __init__(self, http: HttpClient, default_timeout: float, grpc_client: GrpcClient | None = None) -> None:
        self.http = http
        self.grpc = grpc_client if grpc_client is not None else GrpcClient()
        self.default_timeout = default_timeout

    def timeout(self, trans: Transaction) -> float:
        """Seconds one branch call of `trans` may take: its own request_timeout, else the node's."""
        return trans.options.request_timeout or self.default_timeout

    async def call(self, trans: Transaction, call: Call, send_by: float | None = None) -> CallResult:
        """Make the call; raises branch_http.NotSent, having sent nothing, if `send_by` (time.monotonic()) has
        passed when the request would be written."""
        timeout = self.timeout(trans)
        started = time.monotonic()
        if not is_http_url(call.url):
            return await self._call_grpc(trans, call, timeout, send_by, started)
        url = branch_url(call.url, trans, call)
        method = "POST" if call.data or call.post else "GET"
        data = body_bytes(call.data, trans.protocol) if call.data else None
        try:
            status, raw = await self.http.request(
                method, url, call_headers(trans.options.branch_headers), data, timeout, send_by
            )
        except OSError as exc:
            # Connection refused, reset, DNS, timeout: the branch may or may not have run; retry.
            text = f"{UNKNOWN_RESULT}url:{call.url} error: {type(exc).__name__}: {exc}"
            return CallResult(Outcome.ERROR, text, seconds=time.monotonic() - started)
        body = raw.decode(errors="replace")
        outcome = classify(status, body)
        text = detail(outcome, body[:_DETAIL_LIMIT], trans, call)
        return CallResult(outcome, text, f"HTTP {status}", time.monotonic() - started)

    async def _call_grpc(
        self, trans: Transaction, call: Call, timeout: float, send_by: float | None, started: float
    ) -> CallResult:
        try:
            code, message = await self.grpc.call(
                call.url, body_bytes(call.data, trans.protocol), grpc_metadata(trans, call), timeout, send_by
            )
        except (OSError, ValueError) as exc:  # ValueError: a body that is not base64 (written by no version yet)
            text = f"{UNKNOWN_RESULT}url:{call.url} error: {type(exc).__name__}: {exc}"
            return CallResult(Outcome.ERROR, text, seconds=time.monotonic() - started)
        outcome = classify_grpc(code, message)
        # As a Go client's error reads: `rpc error: code = Aborted desc = FAILURE`.
        name = "".join(word.capitalize() for word in code.name.split("_"))
        text = f"rpc error: code = {name} desc = {message}"
        seconds = time.monotonic() - started
        return CallResult(outcome, detail(outcome, text[:_DETAIL_LIMIT], trans, call), f"gRPC {name}", seconds)


def detail(outcome: Outcome, body: str, trans: Transaction, call: Call) -> str:
    """What a reply says, in DTM's words: the rollback reason of a saga whose action failed, the message of a
    `wait_result` reply."""
    if outcome is Outcome.SUCCESS:
        return ""  # nothing to explain
    if outcome is Outcome.ONGOING:
        return "ONGOING"
    if outcome is Outcome.FAILURE:
        failure = f"{body.removesuffix(' FAILURE')} FAILURE"
        if trans.trans_type is TransType.SAGA and call.op == Op.ACTION:
            return f"url:{call.url} return failed: {failure}"
        return UNKNOWN_RESULT + failure
    return UNKNOWN_RESULT + body
