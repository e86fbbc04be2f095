"""A bank-transfer participant with DTM barrier semantics, for scenarios where a wrong coordinator loses money:
this module owns the accounts, the per-(gid, branch) barrier that makes every operation idempotent, and the
planned outcomes of actions. It answers the saga paths `/TransOut`, `/TransOutRevert`, `/TransIn`,
`/TransInRevert` of a `BusiServer` through hooks.

The barrier is DTM's (reference §7): a repeated operation does nothing and answers SUCCESS; a compensation
whose action never ran does nothing (null compensation) and bars the action; an action that arrives after its
compensation does nothing and answers SUCCESS (suspension). An action whose planned reply is 409 (FAILURE) or
500 changes nothing. So whatever the coordinator repeats, money moves only through a sequence of calls the
coordinator decided on: a transfer that ends `failed` with money moved is the coordinator's fault.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .busi import BusiServer, Call, Reply

#: path -> (account, sign of the amount) of the saga's actions; compensations undo them.
ACTIONS = {"/TransOut": ("alice", -1), "/TransIn": ("bob", +1)}
COMPENSATIONS = {"/TransOutRevert": "/TransOut", "/TransInRevert": "/TransIn"}


def transfer(busi: BusiServer, gid: str, **options: Any) -> dict[str, Any]:
    """The submit body of a saga moving 30 from alice (TransOut) to bob (TransIn), as the SDKs send it."""
    return {
        "gid": gid,
        "trans_type": "saga",
        "steps": [
            {"action": busi.url("/TransOut"), "compensate": busi.url("/TransOutRevert")},
            {"action": busi.url("/TransIn"), "compensate": busi.url("/TransInRevert")},
        ],
        "payloads": ['{"amount": 30}', '{"amount": 30}'],
        **options,
    }


@dataclass
class Bank:
    """Balances start at 0; `moves` keeps every applied change as (gid, path, amount)."""

    balances: dict[str, int] = field(default_factory=lambda: {"alice": 0, "bob": 0})
    moves: list[tuple[str, str, int]] = field(default_factory=list)
    _barrier: set[tuple[str, str, str]] = field(default_factory=set)
    _plans: dict[str, list[int]] = field(default_factory=dict)
    _before: dict[str, Callable[[Call], None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self, busi: BusiServer) -> Bank:
        for path in (*ACTIONS, *COMPENSATIONS):
            busi.on(path, self._handle)
        return self

    def plan(self, path: str, statuses: Sequence[int]) -> None:
        """The replies of the next effective calls of an action (the last repeats); 200 by default."""
        with self._lock:
            self._plans[path] = list(statuses)

    def before(self, path: str, hook: Callable[[Call], None]) -> None:
        """Run `hook` on each call to `path` as it arrives, before the bank handles it (to kill a node, say)."""
        self._before[path] = hook

    def net(self, gid: str) -> dict[str, int]:
        """What the transfer `gid` changed, per account."""
        out = {account: 0 for account, _ in ACTIONS.values()}
        with self._lock:
            for moved_gid, path, amount in self.moves:
                if moved_gid == gid:
                    out[ACTIONS[path][0]] += amount
        return out

    def _handle(self, call: Call) -> Reply:
        if hook := self._before.get(call.path):
            hook(call)
        gid, branch = call.query["gid"], call.query["branch_id"]
        amount = int(call.json()["amount"])
        with self._lock:
            if call.path in ACTIONS:
                return self._action(gid, branch, call.path, amount)
            return self._compensate(gid, branch, COMPENSATIONS[call.path], amount)

    def _action(self, gid: str, branch: str, path: str, amount: int) -> Reply:
        if (gid, branch, "action") in self._barrier:
            return Reply(200)  # a repeat, or barred by a compensation that came first
        plan = self._plans.get(path, [200])
        status = plan.pop(0) if len(plan) > 1 else plan[0]
        if status == 200:
            self._barrier.add((gid, branch, "action"))
            self._apply(gid, path, ACTIONS[path][1] * amount)
        return Reply(status)

    def _compensate(self, gid: str, branch: str, action: str, amount: int) -> Reply:
        if (gid, branch, "compensate") in self._barrier:
            return Reply(200)
        self._barrier.add((gid, branch, "compensate"))
        if (gid, branch, "action") in self._barrier:
            self._apply(gid, action, -ACTIONS[action][1] * amount)
        else:
            self._barrier.add((gid, branch, "action"))  # null compensation: a late action must do nothing
        return Reply(200)

    def _apply(self, gid: str, path: str, amount: int) -> None:
        self.balances[ACTIONS[path][0]] += amount
        self.moves.append((gid, path, amount))
