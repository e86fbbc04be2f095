"""Branch calls over HTTP: build the request DTM's way, map the reply to an Outcome.

One shared aiohttp session per process (keep-alive pools per branch host). A call is POST when it
has a body, else GET; the server adds `gid, trans_type, branch_id, op` to the query string and the
transaction's `branch_headers` to the headers (reference §5.2). Reply mapping (§2.2): ONGOING
first (425 or the word in the body), then FAILURE (409 or the word), then 200 = SUCCESS; anything
else, including network errors and timeouts, is an ERROR to retry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlencode

import aiohttp

from fastdtm.kinds.base import Call
from fastdtm.models import Transaction
from fastdtm.states import Outcome

log = logging.getLogger(__name__)

#: Bytes of a reply body kept for reasons and logs.
_DETAIL_LIMIT = 1000


@dataclass(frozen=True, slots=True)
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


def branch_url(url: str, trans: Transaction, call: Call) -> str:
    query = urlencode({"gid": trans.gid, "trans_type": trans.trans_type, "branch_id": call.branch_id, "op": call.op})
    return f"{url}{'&' if '?' in url else '?'}{query}"


class Invoker:
    def __init__(self, session: aiohttp.ClientSession, default_timeout: float) -> None:
        self.session = session
        self.default_timeout = default_timeout

    async def call(self, trans: Transaction, call: Call) -> CallResult:
        timeout = trans.options.request_timeout or self.default_timeout
        headers = {"Content-Type": "application/json", **trans.options.branch_headers}
        url = branch_url(call.url, trans, call)
        method = "POST" if call.data or call.post else "GET"
        try:
            async with self.session.request(
                method,
                url,
                # surrogateescape: a workflow input may be any bytes (see kinds/workflow.py).
                data=call.data.encode("utf-8", "surrogateescape") if call.data else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                body = (await resp.read()).decode(errors="replace")
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            # Connection refused, reset, DNS, timeout: the branch may or may not have run; retry.
            return CallResult(Outcome.ERROR, f"url:{call.url} error: {type(exc).__name__}: {exc}")
        outcome = classify(status, body)
        return CallResult(outcome, f"url:{call.url} return {status}: {body[:_DETAIL_LIMIT]}")
