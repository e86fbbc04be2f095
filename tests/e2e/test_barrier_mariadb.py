"""S22 of reference/dtm-clients.md §6.2: dtmcli's sub-transaction barrier (`barrier.BranchBarrier`, the algorithm
of reference/dtm-protocol.md §8) on a real MariaDB, with the server under test delivering every branch call.

This module owns a sample-style bank busi (`Bank`): each branch route runs its business SQL on `dtm_busi` inside
`BranchBarrier(trans_type, gid, branch_id, op).call(cursor, business)`, the barrier identity taken from the
call's query string, in one local transaction on a fresh pymysql connection. It proves, on both stores, that:
(a) a saga moves the money exactly once; (b) a saga whose TransIn fails is rolled back and the balances are
restored (the failed action's own barrier rows roll back with it, so its compensation is a null compensation);
(c) a branch call delivered twice (committed, then a lost reply and a retry) applies the business once, for a
saga action and for a TCC confirm; (d) a TCC cancel that arrives before any try is a null compensation and
the late try is then refused as hanging, answering 200 and changing nothing; (e) a msg's local transaction run
by `do_and_submit_db` inside the barrier is decided right by the server's check-back through a
`BranchBarrier.query_prepared` route, both when it committed and when it rolled back.

The bank's two business forms (delta is -amount for TransOut on user 1, +amount for TransIn on user 2):
* saga and msg (direct): action `balance += delta` (refused if it would overdraw), compensate `balance -= delta`;
* TCC (reservation): try `trading_balance += delta` (refused if balance + trading_balance would go negative),
  confirm moves delta from trading_balance into balance, cancel `trading_balance -= delta`.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NoReturn

import httpx
import pytest
from dtmcli import barrier, msg, saga, tcc, utils
from pymysql.cursors import Cursor

from tests.e2e.helpers import sequence, statuses
from tests.support.busi import BusiServer, Call, Reply
from tests.support.mariadb import INITIAL_BALANCE, Balances, BarrierRow, MariaDBServer, balances, barrier_rows
from tests.support.node import FastdtmNode, NodeFactory, query, wait_status

AMOUNT = Decimal(30)
BODY = {"amount": 30}
OUT_USER, IN_USER = 1, 2
UNCHANGED: Balances = {OUT_USER: (INITIAL_BALANCE, Decimal(0)), IN_USER: (INITIAL_BALANCE, Decimal(0))}
MOVED: Balances = {OUT_USER: (INITIAL_BALANCE - AMOUNT, Decimal(0)), IN_USER: (INITIAL_BALANCE + AMOUNT, Decimal(0))}
DEBITED_ONLY: Balances = {OUT_USER: (INITIAL_BALANCE - AMOUNT, Decimal(0)), IN_USER: (INITIAL_BALANCE, Decimal(0))}

ACCOUNT = "UPDATE dtm_busi.user_account SET "
# Route suffix -> the business SQL of that branch; %(d)s is the signed delta, %(u)s the user.
ROUTES: dict[str, str] = {
    "": ACCOUNT + "balance = balance + %(d)s WHERE user_id = %(u)s AND balance + %(d)s >= 0",
    "Compensate": ACCOUNT + "balance = balance - %(d)s WHERE user_id = %(u)s",
    "Try": ACCOUNT + "trading_balance = trading_balance + %(d)s "
    "WHERE user_id = %(u)s AND balance + trading_balance + %(d)s >= 0",
    "Confirm": ACCOUNT + "balance = balance + %(d)s, trading_balance = trading_balance - %(d)s WHERE user_id = %(u)s",
    "Cancel": ACCOUNT + "trading_balance = trading_balance - %(d)s WHERE user_id = %(u)s",
}
ACCOUNTS = (("TransOut", OUT_USER, -1), ("TransIn", IN_USER, 1))

Business = Callable[[Cursor], None]
#: Who ran a business callback: (route, gid, branch_id, op); the msg AP's local step is route "local".
Who = tuple[str, str, str, str]


class BusinessFailure(Exception):
    """The bank refuses a branch (overdraft, or a failure the test injected): the barrier rolls the local
    transaction back and the route answers 409, which only a saga action turns into a rollback."""


class SimulatedCrash(BaseException):
    """The AP process dies. A BaseException because dtmcli's `do_and_submit` only catches `Exception` (it would
    ask the check-back itself and submit or abort), while the barrier's bare `except:` still rolls back."""


@dataclass
class Bank:
    """The busi's branch routes, plus the knobs the scenarios turn and what they read back."""

    db: MariaDBServer
    #: Routes whose business applies its SQL and then fails (so the rollback has something to undo).
    failing: set[str] = field(default_factory=set)
    #: Routes whose next call commits and then answers 500, as if the reply were lost: the server retries.
    lose_reply_once: set[str] = field(default_factory=set)
    #: (route, gid, branch_id, op) each time a business callback ran, whether it then committed or not.
    executed: list[Who] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, busi: BusiServer) -> None:
        for name, user, sign in ACCOUNTS:
            for suffix, sql in ROUTES.items():
                busi.on(f"/{name}{suffix}", self._route(f"/{name}{suffix}", user, sign, sql))
        busi.on("/QueryPrepared", self._query_prepared)

    def ran(self, gid: str) -> list[tuple[str, str, str]]:
        """(route, branch_id, op) of every business run for `gid`, in order."""
        with self._lock:
            return [(route, branch_id, op) for route, g, branch_id, op in self.executed if g == gid]

    def local_debit(self, gid: str) -> Business:
        """The msg AP's local transaction: debit user 1 in the direct form (its barrier is branch 00, op msg)."""
        return self._business(ROUTES[""], ("local", gid, "00", "msg"), OUT_USER, -AMOUNT)

    def _business(self, sql: str, who: Who, user: int, delta: Decimal) -> Business:
        """The callback the barrier runs: one UPDATE that must hit the user's row."""
        route = who[0]

        def run(cursor: Cursor) -> None:
            with self._lock:
                self.executed.append(who)
                fail = route in self.failing
            if cursor.execute(sql, {"u": user, "d": delta}) != 1:
                raise BusinessFailure(f"{route}: user {user} cannot take {delta}")
            if fail:
                raise BusinessFailure(f"{route}: injected failure after its UPDATE")

        return run

    def _route(self, route: str, user: int, sign: int, sql: str) -> Callable[[Call], Reply]:
        def hook(call: Call) -> Reply:
            q = call.query
            delta = sign * Decimal(str(call.json()["amount"]))
            run = self._business(sql, (route, q["gid"], q["branch_id"], q["op"]), user, delta)
            try:
                with self.db.connect() as conn, conn.cursor() as cursor:
                    barrier.BranchBarrier(q["trans_type"], q["gid"], q["branch_id"], q["op"]).call(cursor, run)
            except BusinessFailure:
                return Reply(409)
            with self._lock:
                lost = route in self.lose_reply_once
                self.lose_reply_once.discard(route)
            return Reply(500) if lost else Reply(200)

        return hook

    def _query_prepared(self, call: Call) -> Reply:
        q = call.query
        bb = barrier.BranchBarrier(q["trans_type"], q["gid"], q["branch_id"], q["op"])
        try:
            with self.db.connect() as conn, conn.cursor() as cursor:
                bb.query_prepared(cursor)
        except utils.DTMFailureError:
            return Reply(409)
        return Reply(200)


@pytest.fixture
def bank(barrier_db: MariaDBServer, busi: BusiServer) -> Bank:
    b = Bank(barrier_db)
    b.install(busi)
    assert balances(barrier_db) == UNCHANGED
    return b


def saga_transfer(node: FastdtmNode, busi: BusiServer) -> str:
    gid: str = utils.gen_gid(node.dtm)
    s = saga.Saga(node.dtm, gid)
    s.add(BODY, busi.url("/TransOut"), busi.url("/TransOutCompensate"))
    s.add(BODY, busi.url("/TransIn"), busi.url("/TransInCompensate"))
    s.submit()
    return gid


def tcc_transfer(node: FastdtmNode, busi: BusiServer) -> str:
    def branches(t: Any) -> None:
        for name, _, _ in ACCOUNTS:
            t.call_branch(BODY, busi.url(f"/{name}Try"), busi.url(f"/{name}Confirm"), busi.url(f"/{name}Cancel"))

    gid: str = tcc.tcc_global_transaction(node.dtm, utils.gen_gid(node.dtm), branches)
    return gid


def rows(trans_type: str, *entries: tuple[str, str, str]) -> list[BarrierRow]:
    """Expected barrier rows from (branch_id, op, reason); every handler here makes one barrier call ("01")."""
    return [(trans_type, branch_id, op, "01", reason) for branch_id, op, reason in entries]


def test_s22a_saga_moves_the_money_exactly_once(node: FastdtmNode, busi: BusiServer, bank: Bank) -> None:
    gid = saga_transfer(node, busi)
    assert statuses(wait_status(node, gid, {"succeed"})) == "psps"
    assert balances(bank.db) == MOVED
    assert barrier_rows(bank.db, gid) == rows("saga", ("01", "action", "action"), ("02", "action", "action"))
    assert bank.ran(gid) == [("/TransOut", "01", "action"), ("/TransIn", "02", "action")]


def test_s22b_saga_rollback_restores_the_balances(node: FastdtmNode, busi: BusiServer, bank: Bank) -> None:
    bank.failing.add("/TransIn")
    gid = saga_transfer(node, busi)
    assert statuses(wait_status(node, gid, {"failed"})) == "sssf"
    assert balances(bank.db) == UNCHANGED
    # TransIn's credit and its barrier rows rolled back together, so its compensation found no action row:
    # it wrote one itself (reason "compensate", which also blocks a late action) and skipped the business.
    assert barrier_rows(bank.db, gid) == rows(
        "saga",
        ("01", "action", "action"),
        ("02", "action", "compensate"),
        ("02", "compensate", "compensate"),
        ("01", "compensate", "compensate"),
    )
    assert bank.ran(gid) == [
        ("/TransOut", "01", "action"),
        ("/TransIn", "02", "action"),
        ("/TransOutCompensate", "01", "compensate"),
    ]


def test_s22c_a_saga_action_delivered_twice_is_applied_once(node: FastdtmNode, busi: BusiServer, bank: Bank) -> None:
    bank.lose_reply_once.add("/TransIn")
    gid = saga_transfer(node, busi)
    assert statuses(wait_status(node, gid, {"succeed"}, timeout=15)) == "psps"
    assert [c.query["op"] for c in busi.calls("/TransIn")] == ["action", "action"]
    assert balances(bank.db) == MOVED
    assert barrier_rows(bank.db, gid) == rows("saga", ("01", "action", "action"), ("02", "action", "action"))
    # The second delivery met its own barrier row and never reached the business SQL.
    assert bank.ran(gid) == [("/TransOut", "01", "action"), ("/TransIn", "02", "action")]


def test_s22c_a_tcc_confirm_delivered_twice_is_applied_once(node: FastdtmNode, busi: BusiServer, bank: Bank) -> None:
    bank.lose_reply_once.add("/TransInConfirm")
    gid = tcc_transfer(node, busi)
    assert gid
    assert statuses(wait_status(node, gid, {"succeed"}, timeout=15)) == "psps"
    assert len(busi.calls("/TransInConfirm")) == 2
    assert balances(bank.db) == MOVED
    assert barrier_rows(bank.db, gid) == rows(
        "tcc", ("01", "try", "try"), ("02", "try", "try"), ("02", "confirm", "confirm"), ("01", "confirm", "confirm")
    )
    assert bank.ran(gid) == [
        ("/TransOutTry", "01", "try"),
        ("/TransInTry", "02", "try"),
        ("/TransInConfirm", "02", "confirm"),
        ("/TransOutConfirm", "01", "confirm"),
    ]


def test_s22d_cancel_before_try_then_the_late_try_changes_nothing(
    node_factory: NodeFactory, store_url: str, busi: BusiServer, bank: Bank
) -> None:
    node = node_factory(store_url, "--timeout-to-fail", "2")
    gid: str = utils.gen_gid(node.dtm)
    with httpx.Client(timeout=10.0) as client:
        # The AP prepares and registers both branches, then never calls a try: the server times it out.
        expect_success(client.post(f"{node.dtm}/prepare", json={"gid": gid, "trans_type": "tcc"}))
        for branch_id, (name, _, _) in zip(("01", "02"), ACCOUNTS, strict=True):
            registration = {"gid": gid, "branch_id": branch_id, "trans_type": "tcc", "status": "prepared"}
            registration |= {"data": json.dumps(BODY), "confirm": busi.url(f"/{name}Confirm")}
            registration |= {"cancel": busi.url(f"/{name}Cancel")}
            expect_success(client.post(f"{node.dtm}/registerBranch", json=registration))
        assert statuses(wait_status(node, gid, {"failed"}, timeout=15)) == "spsp"
        # Null compensations (cancels walk last to first): each wrote the try row itself and skipped the business.
        null_compensations = rows(
            "tcc",
            ("02", "try", "cancel"),
            ("02", "cancel", "cancel"),
            ("01", "try", "cancel"),
            ("01", "cancel", "cancel"),
        )
        assert barrier_rows(bank.db, gid) == null_compensations
        assert balances(bank.db) == UNCHANGED
        # Now the AP's tries arrive, late ("hanging"): the barrier finds their rows taken and does nothing.
        for branch_id, (name, _, _) in zip(("01", "02"), ACCOUNTS, strict=True):
            params = {"gid": gid, "trans_type": "tcc", "branch_id": branch_id, "op": "try"}
            expect_success(client.post(busi.url(f"/{name}Try"), params=params, json=BODY))
    assert balances(bank.db) == UNCHANGED
    assert barrier_rows(bank.db, gid) == null_compensations
    assert bank.ran(gid) == []
    assert query(node, gid)["transaction"]["status"] == "failed"


def expect_success(response: httpx.Response) -> None:
    assert response.status_code == 200, f"{response.request.url}: HTTP {response.status_code} {response.text}"
    assert "FAILURE" not in response.text


def msg_transfer(node: FastdtmNode, busi: BusiServer) -> tuple[Any, str]:
    """A msg whose only branch credits user 2; the debit of user 1 is the AP's local transaction."""
    gid: str = utils.gen_gid(node.dtm)
    m = msg.Msg(node.dtm, gid)
    m.add(BODY, busi.url("/TransIn"))
    # The check-back comes 2 s after prepare rather than the default 35 s.
    m.trans_base.timeout_to_fail = 2
    return m, gid


@contextlib.contextmanager
def local_cursor(db: MariaDBServer) -> Iterator[Cursor]:
    with db.connect() as conn, conn.cursor() as cursor:
        yield cursor


def test_s22e_do_and_submit_db_debits_locally_then_delivers(node: FastdtmNode, busi: BusiServer, bank: Bank) -> None:
    m, gid = msg_transfer(node, busi)
    with local_cursor(bank.db) as cursor:
        m.do_and_submit_db(busi.url("/QueryPrepared"), cursor, bank.local_debit(gid))
    assert statuses(wait_status(node, gid, {"succeed"})) == "s"
    assert balances(bank.db) == MOVED
    assert barrier_rows(bank.db, gid) == rows("msg", ("00", "msg", "msg"), ("01", "action", "action"))
    assert busi.calls("/QueryPrepared") == []


def test_s22e_check_back_submits_a_committed_local_transaction(node: FastdtmNode, busi: BusiServer, bank: Bank) -> None:
    m, gid = msg_transfer(node, busi)

    def crash_before_submit() -> NoReturn:
        raise SimulatedCrash("the AP died after its local commit, before /submit")

    m.submit = crash_before_submit
    with local_cursor(bank.db) as cursor, pytest.raises(SimulatedCrash):
        m.do_and_submit_db(busi.url("/QueryPrepared"), cursor, bank.local_debit(gid))
    assert query(node, gid)["transaction"]["status"] == "prepared"
    assert balances(bank.db) == DEBITED_ONLY
    # The check-back finds the barrier row the local transaction committed ("msg"), so the msg goes on.
    assert statuses(wait_status(node, gid, {"succeed"}, timeout=15)) == "s"
    assert sequence(busi, gid) == [("/QueryPrepared", "00", "msg", "GET"), ("/TransIn", "01", "action", "POST")]
    assert balances(bank.db) == MOVED
    assert barrier_rows(bank.db, gid) == rows("msg", ("00", "msg", "msg"), ("01", "action", "action"))


def test_s22e_check_back_fails_a_rolled_back_local_transaction(node: FastdtmNode, busi: BusiServer, bank: Bank) -> None:
    m, gid = msg_transfer(node, busi)
    debit = bank.local_debit(gid)

    def debit_then_crash(cursor: Cursor) -> NoReturn:
        debit(cursor)
        raise SimulatedCrash("the AP died inside its local transaction")

    with local_cursor(bank.db) as cursor, pytest.raises(SimulatedCrash):
        m.do_and_submit_db(busi.url("/QueryPrepared"), cursor, debit_then_crash)
    assert balances(bank.db) == UNCHANGED
    # The check-back inserts the barrier row first, with reason "rollback", and answers FAILURE.
    assert statuses(wait_status(node, gid, {"failed"}, timeout=15)) == "p"
    assert sequence(busi, gid) == [("/QueryPrepared", "00", "msg", "GET")]
    assert barrier_rows(bank.db, gid) == rows("msg", ("00", "msg", "rollback"))
    # An AP that comes back and retries its local transaction now finds that row and is refused.
    with local_cursor(bank.db) as cursor, pytest.raises(Exception, match="msg duplicate error"):
        barrier.BranchBarrier("msg", gid, "00", "msg").call(cursor, debit)
    assert balances(bank.db) == UNCHANGED
    assert bank.ran(gid) == [("local", "00", "msg")]
