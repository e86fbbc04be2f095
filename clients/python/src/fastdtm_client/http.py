"""`DtmClient`: the one pooled HTTP client an application keeps for a coordinator. It owns the server URL, the
credentials (a Bearer token or HTTP Basic, as fastdtm's `--auth-file` accepts), the calls to DTM's
`/api/dtmsvr/*` endpoints, and the SDK-side branch calls (TCC try, XA action, msg check-back).

It runs on aiohttp: under 32 concurrent calls it served 10-20x the requests per second of httpx on the same
node (clients/python/README.md, "HTTP client")."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp

from .errors import DtmError
from .results import FAILURE, raise_for_branch_reply

DEFAULT_TIMEOUT = 10.0
# Branch calls made by the SDK (a TCC try, an XA action) run business code: give them longer than DTM calls.
DEFAULT_BRANCH_TIMEOUT = 30.0

#: A Bearer token, or (user, password) for HTTP Basic; fastdtm takes the token as the Basic password.
Auth = str | tuple[str, str]


@dataclass(frozen=True, slots=True)
class BranchReply:
    """What a branch answered a call this process made (its success: any failure was raised instead)."""

    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text) if self.text else None


def encode_payload(payload: object) -> str:
    """A branch body as DTM stores it: compact JSON; `bytes` and `str` are taken as already-encoded JSON."""
    if isinstance(payload, bytes):
        return payload.decode()
    if isinstance(payload, str):
        return payload
    return json.dumps(payload, separators=(",", ":"))


class DtmClient:
    """A coordinator at `server` (e.g. ``http://127.0.0.1:36789/api/dtmsvr``), reached through one pooled
    `aiohttp.ClientSession`, opened on first use. Use it as an async context manager, or call `aclose()`."""

    def __init__(
        self,
        server: str,
        *,
        auth: Auth | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        branch_timeout: float = DEFAULT_BRANCH_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`session`: a session of your own (proxies, TLS settings, tracing); `aclose()` leaves it open."""
        self.server = server.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._branch_timeout = aiohttp.ClientTimeout(total=branch_timeout)
        self._owns_session = session is None
        self._session = session
        self._headers = _auth_headers(auth)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        # Created here, not in __init__: an aiohttp session belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def new_gid(self) -> str:
        """A fresh global transaction id from the coordinator (`GET /newGid`)."""
        reply = await self._send("GET", "newGid", None)
        gid = reply.get("gid")
        if not isinstance(gid, str) or not gid:
            raise DtmError("newGid", 200, json.dumps(reply))
        return gid

    async def call(self, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST `body` to `/api/dtmsvr/<operation>`; raises `DtmError` unless the coordinator answers success."""
        return await self._send("POST", operation, body)

    async def query(self, gid: str) -> dict[str, Any]:
        """`GET /query?gid=`: ``{"transaction": {...} | None, "branches": [...]}``."""
        # A reply may quote a rollback reason with FAILURE in it: only the status counts here.
        return await self._send("GET", "query", None, params={"gid": gid}, body_rule=False)

    async def call_branch(
        self,
        method: str,
        url: str,
        *,
        query: Mapping[str, str],
        payload: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> BranchReply:
        """Call a branch URL as the Go SDK does; raises `Failure`, `Ongoing` or `BranchError` by DTM's rule."""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        data = payload.encode() if payload is not None else None
        async with self._http().request(
            method, url, params=dict(query), data=data, headers=all_headers, timeout=self._branch_timeout
        ) as response:
            text = await response.text()
        raise_for_branch_reply(url, response.status, text)
        return BranchReply(response.status, text)

    async def _send(
        self,
        method: str,
        operation: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None = None,
        *,
        body_rule: bool = True,
    ) -> dict[str, Any]:
        """`body_rule`: a 200 whose body holds FAILURE is a failure too (DTM's SDKs read replies so)."""
        async with self._http().request(
            method,
            f"{self.server}/{operation}",
            json=body,
            params=params,
            headers=self._headers,
            timeout=self._timeout,
        ) as response:
            text = await response.text()
        if response.status != 200 or (body_rule and FAILURE in text):
            raise DtmError(operation, response.status, text)
        reply = json.loads(text) if text else {}
        return reply if isinstance(reply, dict) else {}


def _auth_headers(auth: Auth | None) -> dict[str, str]:
    if auth is None:
        return {}
    if isinstance(auth, str):
        return {"Authorization": f"Bearer {auth}"}
    user, password = auth
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}
