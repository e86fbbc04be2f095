"""The fastdtm nodes as an application behind a load balancer sees them: this module owns sending one API
call to the nodes round-robin, moving on to the next node when one is down or fails, and telling a definite
answer from an ambiguous one (the request may have reached a node whose reply was lost)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx

#: `lookup` could not reach any node: the gid's fate is unknown to the client.
UNKNOWN: Final = "unknown"
API: Final = "/api/dtmsvr"


@dataclass(frozen=True, slots=True)
class Answer:
    """The first definite reply (status < 500), or status None if every attempt failed."""

    status: int | None
    text: str
    #: Some attempt may have reached a node without the client seeing its reply.
    ambiguous: bool

    @property
    def ok(self) -> bool:
        # DTM's SDKs treat a 200 whose body says FAILURE as an error too (reference §2.3).
        return self.status == 200 and "FAILURE" not in self.text


class Coordinator:
    """Round-robin over `bases`, starting at `first`; up to `attempts` nodes tried per call."""

    def __init__(self, bases: Sequence[str], first: int = 0, attempts: int = 6, pause_s: float = 0.3) -> None:
        self._bases = list(bases)
        self._next = first
        self._attempts = attempts
        self._pause_s = pause_s
        self._client = httpx.Client()

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Answer:
        ambiguous = False
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(self._pause_s)
            base = self._bases[self._next % len(self._bases)]
            self._next += 1
            try:
                reply = self._client.request(method, base + API + path, json=body, params=params, timeout=timeout)
            except httpx.ConnectError:
                continue  # refused: the node is down and never saw the request
            except httpx.HTTPError:
                ambiguous = True  # sent, maybe handled, reply lost (node killed, hung store, timeout)
                continue
            if reply.status_code >= 500:
                ambiguous = True  # a store error may come after the write it could not confirm
                continue
            return Answer(reply.status_code, reply.text, ambiguous)
        return Answer(None, "", ambiguous=True)

    def lookup(self, gid: str) -> str | None:
        """The gid's stored status, None if no node knows it, or UNKNOWN if no node answered."""
        answer = self.call("GET", "/query", params={"gid": gid})
        if answer.status != 200:
            return UNKNOWN
        transaction = json.loads(answer.text).get("transaction")
        return str(transaction["status"]) if isinstance(transaction, dict) else None
