"""A real node under generated requests: this module owns sending an `ApiCall` to a node and applying the
rules of `tests.support.fuzz_rules` to what comes back, against what the store holds before and after:

- no reply is a 5xx (nor a dropped connection), and JSON-RPC stays HTTP 200 with a JSON-RPC error;
- the node's log gains no error line and no traceback;
- a refused request (a 4xx but 425, and a 409 only when it is not a `wait_result` outcome; their JSON-RPC
  twins) changes nothing in the store, and a read-only endpoint never does;
- a request naming an existing gid with another known `trans_type` (prepare, submit, abort,
  registerBranch) is refused, and so is a body that the node's own `/api/openapi.json` refuses;
- an accepted prepare / submit / prepareWorkflow leaves a transaction that `/query` reads and the `/all`
  pages list.

Between requests the target waits until no round runs on the node (`fastdtm_rounds_in_flight`), so what a
snapshot shows is what the request did.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from hypothesis import reject

from fastdtm.states import TERMINAL
from tests.support import fuzz_rules as rules
from tests.support.fuzz_calls import BUSI, ApiCall
from tests.support.fuzz_rules import (
    Description,
    InvalidAccepted,
    LoggedError,
    MismatchAccepted,
    NotListed,
    NotStored,
    NotTerminal,
    ReadOnlyWrote,
    RefusalWrote,
    Reply,
    ServerFault,
)
from tests.support.node import FastdtmNode
from tests.support.store_snapshot import Snapshot, StoreReader

#: How long a round may still run after its request's reply (a branch call times out well before).
SETTLE_TIMEOUT: Final = 15.0


@dataclass(slots=True)
class _Example:
    number: int
    started_ms: int
    names: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)


class FuzzTarget:
    """One node (with its store reader and the branch server's address), shared by every example of a module."""

    def __init__(self, node: FastdtmNode, busi_base: str, reader: StoreReader, description: Description) -> None:
        self.node = node
        self.description = description
        self.busi_base = busi_base
        self.reader = reader
        self.client = httpx.Client(base_url=node.base, timeout=30.0)
        #: Gids of this run differ from any earlier run's on an external Redis.
        self._run = secrets.token_hex(2)
        self._examples = 0
        self._example = _Example(0, 0)
        self._log_seen = len(node.log_text())

    def close(self) -> None:
        self.client.close()
        self.reader.close()

    # --- an example -------------------------------------------------------------------------------------

    def begin(self) -> None:
        """A new example: fresh names for its placeholders, and its own window of create times.

        An example that failed half-way may have left a round running or its error in the log: this one
        starts once the node is idle, past those lines (they were the failed example's)."""
        self.settle()
        self._log_errors()
        self._examples += 1
        self._example = _Example(self._examples, time.time_ns() // 1_000_000)

    def name(self, placeholder: str) -> str:
        if placeholder == BUSI:
            return self.busi_base
        names = self._example.names
        if placeholder not in names:
            names[placeholder] = f"fz{self._run}-{self._example.number}{placeholder[1:]}"
        return names[placeholder]

    def finish(self) -> None:
        """The example's transactions are all listed by `/all`, and every page of it answers."""
        created = set(self._example.created)
        listed: set[str] = set()
        for page in self._all_pages(self._example.started_ms):
            listed.update(t.get("gid", "") for t in page if isinstance(t, dict))
        if created - listed:
            raise NotListed(f"/all since the example began does not list {sorted(created - listed)}")

    # --- one request ------------------------------------------------------------------------------------

    def send(self, call: ApiCall) -> Reply:
        bound = call.bound(self.name)
        stored = {gid: self.stored(gid) for gid in rules.gids(bound)}
        before = self.reader.snapshot()
        reply = self._exchange(bound)
        mismatch = rules.mismatch(bound, stored)
        # A request of another type must be refused before it runs anything: no `wait_result` outcome then.
        reply.refused = rules.refused(reply, rules.waits(bound, stored) and not mismatch)
        if mismatch:
            self.settle()
            after = self.reader.snapshot()
            if not reply.refused or after != before:
                raise MismatchAccepted(f"{mismatch}, yet carried out:\n{reply.describe()}\n{before.diff(after)}")
        elif bound.endpoint in rules.READ_ONLY or reply.refused:
            self._unchanged(before, reply)
        else:
            self.settle()
        self._check_log(reply)
        if not reply.refused and (why := self.description.refuses(bound)):
            raise InvalidAccepted(f"/api/openapi.json refuses it ({why}), the node did not:\n{reply.describe()}")
        if reply.ok and rules.creates(bound):
            self._check_stored(reply)
        return reply

    def stored(self, gid: str) -> dict[str, Any] | None:
        """The transaction as `/query` shows it (None if absent); a 5xx here is a fault too."""
        reply = self.client.get("/api/dtmsvr/query", params={"gid": gid})
        if reply.status_code >= 500:
            raise ServerFault(f"/query?gid={gid} -> HTTP {reply.status_code} {reply.text[:600]}{self._log_excerpt()}")
        transaction = reply.json().get("transaction") if reply.status_code == 200 else None
        return transaction if isinstance(transaction, dict) else None

    def wait_terminal(self, gid: str, expected: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            trans = self.stored(gid)
            status = trans.get("status") if trans else None
            if status in TERMINAL:
                break
            time.sleep(0.05)
        if status != expected:
            raise NotTerminal(f"{gid}: status {status!r} after {timeout}s, expected {expected!r}")

    def settle(self) -> None:
        """Wait until no round runs on the node: a background round writes after the reply."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self._rounds_in_flight():
            if time.monotonic() > deadline:
                raise ServerFault(f"rounds still in flight after {SETTLE_TIMEOUT}s")
            time.sleep(0.01)

    # --- checks -----------------------------------------------------------------------------------------

    def _exchange(self, call: ApiCall) -> Reply:
        try:
            request = self.client.build_request(
                call.method, call.path, params=call.params or None, content=call.content(), headers=dict(call.headers)
            )
        except httpx.InvalidURL:
            reject()  # over httpx's own URL limit: not a request this client can send
        try:
            response = self.client.send(request)
        except httpx.TransportError as exc:
            raise ServerFault(f"no reply ({type(exc).__name__}: {exc}):\n{call!r}{self._log_excerpt()}") from None
        body: Any = response.text
        with contextlib.suppress(ValueError):
            body = response.json()
        reply = Reply(call, response.status_code, body)
        if response.status_code >= 500:
            raise ServerFault(reply.describe() + self._log_excerpt())
        if call.endpoint == "json-rpc" and response.status_code != rules.UNSUPPORTED_MEDIA_TYPE:
            reply.rpc_code = rules.rpc_code(reply)
        return reply

    def _unchanged(self, before: Snapshot, reply: Reply) -> None:
        after = self.reader.snapshot()
        if after == before:
            return
        if reply.call.endpoint in rules.READ_ONLY:
            raise ReadOnlyWrote(f"a read-only endpoint changed the store:\n{reply.describe()}\n{before.diff(after)}")
        raise RefusalWrote(f"a refused request changed the store:\n{reply.describe()}\n{before.diff(after)}")

    def _check_log(self, reply: Reply) -> None:
        if bad := self._log_errors():
            raise LoggedError(f"the node logged errors after\n{reply.describe()}\n{bad}")

    def _log_errors(self) -> str:
        """The error lines the node logged since the last look (each look moves past them)."""
        text = self.node.log_text()
        new, self._log_seen = text[self._log_seen :], len(text)
        bad = [shown for line in new.splitlines() if (shown := rules.error_line(line))]
        return "\n".join(bad[:5])

    def _log_excerpt(self) -> str:
        # A fault's own log lines (the traceback) go with it, not with the next request's check.
        time.sleep(0.05)
        bad = self._log_errors()
        return f"\nnode log:\n{bad}" if bad else ""

    def _check_stored(self, reply: Reply) -> None:
        gid = str(reply.call.parsed().get("gid"))
        if self.stored(gid) is None:
            raise NotStored(f"accepted, but /query shows no transaction {gid}:\n{reply.describe()}")
        self._example.created.append(gid)

    def _all_pages(self, since_ms: int, pages: int = 20) -> Iterator[list[Any]]:
        position = ""
        for _ in range(pages):
            params = {"createTimeStart": str(since_ms), "limit": "1000", "position": position}
            reply = self.client.get("/api/dtmsvr/all", params=params)
            if reply.status_code != 200:
                raise ServerFault(f"/all?{params} -> HTTP {reply.status_code} {reply.text[:600]}{self._log_excerpt()}")
            body = reply.json()
            yield body["transactions"]
            position = body["next_position"]
            if not position:
                return

    def _rounds_in_flight(self) -> float:
        text = self.client.get("/api/metrics").text
        for line in text.splitlines():
            if line.startswith("fastdtm_rounds_in_flight"):
                return float(line.rpartition(" ")[2])
        return 0.0
