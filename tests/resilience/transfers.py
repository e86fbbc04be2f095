"""One bank transfer from the application's side: this module owns the five ways the load issues one (saga,
saga with wait_result, tcc, msg submitted directly, msg prepared with a local step and a query-back) and,
for each, what the client learned: whether the coordinator acknowledged it, and which final statuses a
correct coordinator may reach given what the client did and what the bank's fault plan decided."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from .bank_service import IN_BRANCH, IN_PATH, LOCAL_PATH, OUT_BRANCH, OUT_PATH, QUERY_PREPARED_PATH
from .coordinator import UNKNOWN, Coordinator
from .faults import FaultPlan

SUCCEED: Final = frozenset({"succeed"})
FAILED: Final = frozenset({"failed"})
EITHER: Final = SUCCEED | FAILED
#: Per-transaction timeout of tcc and msg: long enough for a client slowed by the faults to submit in time,
#: short enough that an abandoned one is timed out (tcc) or queried back (msg) while the suite settles.
PREPARED_TIMEOUT_S: Final = 10
#: The application's own timeout when it calls a tcc try: shorter than a hang of the bank.
TRY_TIMEOUT_S: Final = 2.0
WAIT_TIMEOUT_S: Final = 20.0
#: Chance that a msg sender dies before (then after) its local transaction: only the query-back settles it.
SENDER_CRASH: Final = 0.05


class Kind(enum.StrEnum):
    SAGA = "saga"
    SAGA_WAIT = "saga-wait"
    TCC = "tcc"
    MSG = "msg"
    MSG_PREPARED = "msg-prepared"


@dataclass
class Transfer:
    gid: str
    kind: Kind
    amount: int
    payer: str
    payee: str
    acknowledged: bool = False
    #: The final statuses a correct coordinator may reach; empty = the coordinator already said something wrong.
    expected: frozenset[str] = EITHER
    notes: list[str] = field(default_factory=list)

    def payload(self) -> str:
        return f'{{"amount": {self.amount}, "from": "{self.payer}", "to": "{self.payee}"}}'


@dataclass
class Client:
    """What one application thread holds: its coordinator connection, the bank, the fault plan."""

    coordinator: Coordinator
    bank_base: str
    plan: FaultPlan
    rng: random.Random
    http: httpx.Client = field(default_factory=httpx.Client)

    def close(self) -> None:
        self.coordinator.close()
        self.http.close()


def run(client: Client, transfer: Transfer) -> None:
    RUNNERS[transfer.kind](client, transfer)


def saga_body(client: Client, transfer: Transfer, **options: Any) -> dict[str, Any]:
    out, into = client.bank_base + OUT_PATH, client.bank_base + IN_PATH
    return {
        "gid": transfer.gid,
        "trans_type": "saga",
        "steps": [{"action": out, "compensate": out}, {"action": into, "compensate": into}],
        "payloads": [transfer.payload()] * 2,
        **options,
    }


def run_saga(client: Client, transfer: Transfer, wait: bool = False) -> None:
    refused = any(client.plan.fails_business(transfer.gid, b) for b in (OUT_BRANCH, IN_BRANCH))
    transfer.expected = FAILED if refused else SUCCEED
    body = saga_body(client, transfer, wait_result=wait)
    answer = client.coordinator.call("POST", "/submit", body=body, timeout=WAIT_TIMEOUT_S if wait else 5.0)
    if answer.ok:
        transfer.acknowledged = True
        if wait and refused:
            transfer.expected = frozenset()
            transfer.notes.append("wait_result answered success for a saga whose action the bank refuses")
        return
    _acknowledge_if_stored(client, transfer, frozenset({"submitted", "aborting", "succeed", "failed"}))


def run_saga_wait(client: Client, transfer: Transfer) -> None:
    run_saga(client, transfer, wait=True)


def run_tcc(client: Client, transfer: Transfer) -> None:
    """prepare, register both branches, call both tries, then submit, or abort at the first failure."""
    coordinator = client.coordinator
    body = {"gid": transfer.gid, "trans_type": "tcc", "timeout_to_fail": PREPARED_TIMEOUT_S}
    if not coordinator.call("POST", "/prepare", body=body).ok:
        _abort(client, transfer, "prepare failed")
        return
    for branch, path in ((OUT_BRANCH, OUT_PATH), (IN_BRANCH, IN_PATH)):
        url = client.bank_base + path
        register = {**body, "branch_id": branch, "confirm": url, "cancel": url, "data": transfer.payload()}
        register.pop("timeout_to_fail")
        if not coordinator.call("POST", "/registerBranch", body=register).ok:
            _abort(client, transfer, f"registerBranch {branch} failed")
            return
    for branch, path in ((OUT_BRANCH, OUT_PATH), (IN_BRANCH, IN_PATH)):
        if not _try(client, transfer, branch, path):
            _abort(client, transfer, f"try {branch} failed")
            return
    transfer.expected = EITHER  # submitted -> succeed, but a submit that never arrived times out -> failed
    if coordinator.call("POST", "/submit", body={"gid": transfer.gid, "trans_type": "tcc"}).ok:
        transfer.acknowledged, transfer.expected = True, SUCCEED
        return
    status = coordinator.lookup(transfer.gid)
    if status in ("submitted", "succeed"):
        transfer.acknowledged, transfer.expected = True, SUCCEED
    elif status == "prepared":
        _abort(client, transfer, "submit failed", after_submit=True)


def _try(client: Client, transfer: Transfer, branch: str, path: str) -> bool:
    params = {"gid": transfer.gid, "trans_type": "tcc", "branch_id": branch, "op": "try"}
    try:
        reply = client.http.post(
            client.bank_base + path, params=params, content=transfer.payload(), timeout=TRY_TIMEOUT_S
        )
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


def _abort(client: Client, transfer: Transfer, reason: str, after_submit: bool = False) -> None:
    """The application gives up: the end must be `failed`, unless a submit it sent before (whose reply was
    lost) won the race against this abort."""
    transfer.notes.append(reason)
    transfer.expected = FAILED
    body = {"gid": transfer.gid, "trans_type": "tcc", "rollback_reason": reason}
    if client.coordinator.call("POST", "/abort", body=body).ok:
        transfer.acknowledged = True
        return
    status = client.coordinator.lookup(transfer.gid)
    if status in ("aborting", "failed"):
        transfer.acknowledged = True
    elif status in ("submitted", "succeed") and after_submit:
        transfer.acknowledged, transfer.expected = True, SUCCEED
    elif status in (UNKNOWN, "prepared") and after_submit:
        transfer.expected = EITHER


def msg_body(client: Client, transfer: Transfer, **options: Any) -> dict[str, Any]:
    return {
        "gid": transfer.gid,
        "trans_type": "msg",
        "steps": [{"action": client.bank_base + OUT_PATH}, {"action": client.bank_base + IN_PATH}],
        "payloads": [transfer.payload()] * 2,
        **options,
    }


def run_msg(client: Client, transfer: Transfer) -> None:
    # A msg branch is retried until it succeeds: once stored, a msg can only end `succeed`.
    transfer.expected = SUCCEED
    if client.coordinator.call("POST", "/submit", body=msg_body(client, transfer)).ok:
        transfer.acknowledged = True
        return
    _acknowledge_if_stored(client, transfer, frozenset({"submitted", "succeed"}))


def run_msg_prepared(client: Client, transfer: Transfer) -> None:
    """prepare (with a query-back URL) -> the sender's local transaction -> submit; the sender may die."""
    body = msg_body(
        client,
        transfer,
        query_prepared=client.bank_base + QUERY_PREPARED_PATH,
        timeout_to_fail=PREPARED_TIMEOUT_S,
    )
    transfer.expected = FAILED  # until its local transaction commits, a query-back answers FAILURE
    if not client.coordinator.call("POST", "/prepare", body=body).ok or _sender_crashes(client, transfer, "before"):
        return
    committed = _local_step(client, transfer)
    if committed is not True:
        transfer.expected = FAILED if committed is False else EITHER
        return
    transfer.expected = SUCCEED
    if _sender_crashes(client, transfer, "after"):
        return
    if client.coordinator.call("POST", "/submit", body=body).ok:
        transfer.acknowledged = True
        return
    _acknowledge_if_stored(client, transfer, frozenset({"submitted", "succeed"}))


def _sender_crashes(client: Client, transfer: Transfer, when: str) -> bool:
    if client.rng.random() < SENDER_CRASH:
        transfer.notes.append(f"sender died {when} its local transaction")
        return True
    return False


def _local_step(client: Client, transfer: Transfer) -> bool | None:
    """True: committed; False: refused (a query-back rolled it back first); None: no answer."""
    try:
        reply = client.http.post(client.bank_base + LOCAL_PATH, params={"gid": transfer.gid}, timeout=5.0)
    except httpx.HTTPError:
        return None
    return {200: True, 409: False}.get(reply.status_code)


def _acknowledge_if_stored(client: Client, transfer: Transfer, statuses: frozenset[str]) -> None:
    """A call whose reply was lost counts as acknowledged only if a later query finds the transaction."""
    status = client.coordinator.lookup(transfer.gid)
    if status in statuses:
        transfer.acknowledged = True
        transfer.notes.append(f"acknowledged by query ({status}) after a failed call")
    elif status == UNKNOWN:
        transfer.notes.append("no node answered the query after a failed call")


RUNNERS: Final[dict[Kind, Callable[[Client, Transfer], None]]] = {
    Kind.SAGA: run_saga,
    Kind.SAGA_WAIT: run_saga_wait,
    Kind.TCC: run_tcc,
    Kind.MSG: run_msg,
    Kind.MSG_PREPARED: run_msg_prepared,
}
