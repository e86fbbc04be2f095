"""The alert webhook (DTM's `AlertWebHook`): tell operators about a branch that keeps failing.

After a branch error the retry interval doubles; once it has doubled `alert_retry_limit` times the
webhook gets a POST `{"gid", "status", "branch", "error", "retry_count"}` (reference §5.2). Sent in
the background with a short timeout: an alert must never slow or break a transaction.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Final

from fastdtm import wire
from fastdtm.branch_http import HttpClient
from fastdtm.redaction import hide_url_passwords

log = logging.getLogger(__name__)

_JSON: Final[Mapping[str, str]] = {"Content-Type": "application/json"}
#: Seconds an alert may take: it must never hold anything up.
_TIMEOUT: Final = 5.0


def retry_count(interval_ms: int, reset_ms: int) -> int:
    """How many times the interval has doubled since the last success."""
    return int(math.log2(interval_ms / reset_ms)) if interval_ms > reset_ms > 0 else 0


class Alerter:
    def __init__(self, http: HttpClient, url: str, retry_limit: int) -> None:
        self.http = http
        self.url = url
        self.retry_limit = retry_limit
        self._sending: set[asyncio.Task[None]] = set()

    def branch_failing(self, gid: str, status: str, branch_url: str, error: str, retries: int) -> None:
        if not self.url or retries < self.retry_limit:
            return
        # The webhook is a chat or paging system: no branch URL passwords in it (fastdtm.redaction).
        branch, error = hide_url_passwords(branch_url), hide_url_passwords(error)
        body = {"gid": gid, "status": status, "branch": branch, "error": error, "retry_count": retries}
        task = asyncio.get_running_loop().create_task(self._post(body))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _post(self, body: dict[str, object]) -> None:
        try:
            status, _ = await self.http.request("POST", self.url, _JSON, wire.encode(body), _TIMEOUT)
        except OSError as exc:
            log.warning("alert webhook failed: %s", exc, extra={"gid": body["gid"]})
            return
        if status >= 300:
            log.warning("alert webhook answered %d", status, extra={"gid": body["gid"]})
