"""The participant of the resilience suite, a bank that keeps its books right whatever the coordinator repeats:
this module owns the accounts, the barrier that keys every balance change by (gid, branch_id, op), and the
answers of the saga (action/compensate), tcc (try/confirm/cancel) and msg (action, local step, query-back)
paths, with the faults its `FaultPlan` draws. It runs on a `BusiServer`, one thread per connection.

Branch `01` takes the amount out of the payer (`/bank/TransOut`), branch `02` puts it into the payee
(`/bank/TransIn`). The barrier is DTM's (reference §8): a repeated op changes nothing and answers SUCCESS (a
duplicate); a compensation or cancel whose action or try never ran changes nothing and bars it (null
compensation); an action or try that arrives after that is refused quietly (suspension). A business refusal
(409) writes nothing, as a rolled-back local transaction would. A faulty call decides under the lock *after*
its hang, so a late write still meets the barrier.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from tests.support.busi import BusiServer, Call, Reply

from .faults import NOT_APPLIED, WAIT_FIRST, Fault, FaultPlan

OUT_PATH: Final = "/bank/TransOut"
IN_PATH: Final = "/bank/TransIn"
LOCAL_PATH: Final = "/bank/local"
QUERY_PREPARED_PATH: Final = "/bank/query-prepared"
OUT_BRANCH: Final = "01"
IN_BRANCH: Final = "02"
MSG_BRANCH: Final = "00"

#: Sign of the amount each forward op moves, per path; compensations undo their origin's move.
MOVES: Final = {
    (OUT_PATH, "action"): -1,
    (IN_PATH, "action"): +1,
    # tcc: the payer's try freezes the money (it leaves the balance), the payee gets it on confirm.
    (OUT_PATH, "try"): -1,
    (IN_PATH, "try"): 0,
    (OUT_PATH, "confirm"): 0,
    (IN_PATH, "confirm"): +1,
}
ORIGIN: Final = {"compensate": "action", "cancel": "try"}
#: Forward ops a business rule may refuse; msg branches must never be refused (they are retried forever).
REFUSABLE: Final = {("saga", "action"), ("tcc", "try")}
APPLIED, BARRED = "applied", "rollback"
SUCCESS, FAILURE = Reply(200), Reply(409)
ERROR: Final = Reply(500, '{"message":"injected fault"}')


@dataclass
class BankBooks:
    """Everything the checks read afterwards; guarded by the bank's lock while the server runs."""

    balances: dict[str, int]
    #: gid -> (payer's change, payee's change) caused by that transfer.
    moved: dict[str, list[int]] = field(default_factory=dict)
    duplicates: int = 0
    suspended: int = 0
    null_compensations: int = 0
    refusals: int = 0
    calls: int = 0
    faults: collections.Counter[Fault] = field(default_factory=collections.Counter)
    #: Calls no correct coordinator makes (a confirm whose try never ran): each one names its gid.
    anomalies: list[str] = field(default_factory=list)


class ChaosBank:
    """`accounts` accounts with `opening` each, served on `busi` under the paths above."""

    def __init__(self, plan: FaultPlan, accounts: int = 10, opening: int = 100_000) -> None:
        self.plan = plan
        self.books = BankBooks({account_name(i): opening for i in range(accounts)})
        self.opening_total = opening * accounts
        self._rows: dict[tuple[str, str, str], str] = {}
        self._attempts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def serve(self, busi: BusiServer) -> ChaosBank:
        for path in (OUT_PATH, IN_PATH):
            busi.on(path, self._branch)
        busi.on(LOCAL_PATH, self._local)
        busi.on(QUERY_PREPARED_PATH, self._query_prepared)
        return self

    def close(self) -> None:
        """Ends every hang at once, so the server can shut down."""
        self._closing.set()

    def total(self) -> int:
        with self._lock:
            return sum(self.books.balances.values())

    def moved(self, gid: str) -> tuple[int, int]:
        with self._lock:
            out, into = self.books.moved.get(gid, (0, 0))
        return out, into

    def _branch(self, call: Call) -> Reply:
        gid, branch, op = call.query["gid"], call.query["branch_id"], call.query["op"]
        fault = self._fault(gid, branch, op)
        return self._faulty(fault, lambda: self._decide(call, gid, branch, op))

    def _fault(self, gid: str, branch: str, op: str) -> Fault:
        with self._lock:
            attempt = self._attempts[gid, branch, op]
            self._attempts[gid, branch, op] += 1
            fault = self.plan.fault(gid, branch, op, attempt)
            self.books.calls += 1
            self.books.faults[fault] += 1
        return fault

    def _faulty(self, fault: Fault, handle: Callable[[], Reply]) -> Reply:
        if fault in WAIT_FIRST:
            self._closing.wait(self.plan.rates.hang_s)
        if fault in NOT_APPLIED:
            return ERROR
        reply = handle()
        if fault is Fault.APPLY_THEN_HANG:
            self._closing.wait(self.plan.rates.hang_s)
        return ERROR if fault is Fault.ERROR_AFTER_APPLY else reply

    def _decide(self, call: Call, gid: str, branch: str, op: str) -> Reply:
        body = call.json()
        account = body["from"] if call.path == OUT_PATH else body["to"]
        amount = int(body["amount"])
        with self._lock:
            if (gid, branch, op) in self._rows:
                return self._repeat(gid, branch, op)
            if (call.query.get("trans_type"), op) in REFUSABLE and self.plan.fails_business(gid, branch):
                self.books.refusals += 1
                return FAILURE
            self._rows[gid, branch, op] = APPLIED
            origin = ORIGIN.get(op)
            if origin is None:
                self._check_confirm(gid, branch, op)
                self._move(gid, branch, account, MOVES[call.path, op] * amount)
            elif self._rows.setdefault((gid, branch, origin), BARRED) == BARRED:
                self.books.null_compensations += 1
            else:
                self._move(gid, branch, account, -MOVES[call.path, origin] * amount)
        return SUCCESS

    def _repeat(self, gid: str, branch: str, op: str) -> Reply:
        if self._rows[gid, branch, op] == BARRED:
            self.books.suspended += 1  # a late action/try after its compensation: refused quietly
        else:
            self.books.duplicates += 1
        return SUCCESS

    def _check_confirm(self, gid: str, branch: str, op: str) -> None:
        if op == "confirm" and self._rows.get((gid, branch, "try")) != APPLIED:
            self.books.anomalies.append(f"{gid}: confirm of branch {branch} whose try never applied")

    def _move(self, gid: str, branch: str, account: str, amount: int) -> None:
        self.books.balances[account] += amount
        self.books.moved.setdefault(gid, [0, 0])[0 if branch == OUT_BRANCH else 1] += amount

    def _local(self, call: Call) -> Reply:
        """The msg sender's local transaction: commits unless a query-back already rolled the gid back."""
        key = (call.query["gid"], MSG_BRANCH, "msg")
        with self._lock:
            return SUCCESS if self._rows.setdefault(key, APPLIED) == APPLIED else FAILURE

    def _query_prepared(self, call: Call) -> Reply:
        """DTM's QueryPrepared: SUCCESS if the local transaction committed, else bar it and answer FAILURE."""
        gid = call.query["gid"]
        fault = self._fault(gid, MSG_BRANCH, "query")

        def decide() -> Reply:
            with self._lock:
                return SUCCESS if self._rows.setdefault((gid, MSG_BRANCH, "msg"), BARRED) == APPLIED else FAILURE

        return self._faulty(fault, decide)


def account_name(index: int) -> str:
    return f"acct-{index}"
