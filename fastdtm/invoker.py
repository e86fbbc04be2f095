"""Branch calls over HTTP: build the request DTM's way, map the reply to an Outcome.

One shared `HttpClient` per process (keep-alive pools per branch host). A call is POST when it
has a body, else GET; the server adds `gid, trans_type, branch_id, op` to the query string and the
transaction's `branch_headers` to the headers (reference §5.2). Reply mapping (§2.2): ONGOING
first (425 or the word in the body), then FAILURE (409 or the word), then 200 = SUCCESS; anything
else, including network errors and timeouts, is an ERROR to retry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import quote_plus

from fastdtm.branch_http import HttpClient
from fastdtm.kinds.base import Call
from fastdtm.models import Transaction
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


class Invoker:
    def __init__(self, http: HttpClient, default_timeout: float) -> None:
        self.http = http
        self.default_timeout = default_timeout

    def timeout(self, trans: Transaction) -> float:
        """Seconds one branch call of `trans` may take: its own request_timeout, else the node's."""
        return trans.options.request_timeout or self.default_timeout

    async def call(self, trans: Transaction, call: Call, send_by: float | None = None) -> CallResult:
        """Make the call; raises branch_http.NotSent, having sent nothing, if `send_by` (loop time) has passed
        when the request would be written."""
        timeout = self.timeout(trans)
        url = branch_url(call.url, trans, call)
        method = "POST" if call.data or call.post else "GET"
        # surrogateescape: a workflow input may be any bytes (see kinds/workflow.py).
        data = call.data.encode("utf-8", "surrogateescape") if call.data else None
        try:
            status, raw = await self.http.request(
                method, url, call_headers(trans.options.branch_headers), data, timeout, send_by
            )
        except OSError as exc:
            # Connection refused, reset, DNS, timeout: the branch may or may not have run; retry.
            return CallResult(Outcome.ERROR, f"{UNKNOWN_RESULT}url:{call.url} error: {type(exc).__name__}: {exc}")
        body = raw.decode(errors="replace")
        outcome = classify(status, body)
        return CallResult(outcome, detail(outcome, body[:_DETAIL_LIMIT], trans, call))


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
