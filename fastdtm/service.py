"""The use cases behind DTM's endpoints: prepare, submit, abort, forceStop, query, list, ...

Protocol-free: handlers decode a request into values, call one method here, and encode what comes
back. Every check happens before the first write, so a refused request changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fastdtm.clock import Clock
from fastdtm.engine import Engine, RoundResult
from fastdtm.errors import Conflict, Invalid, NotFound, Ongoing, ServerError, Stale, TransNotFound
from fastdtm.kinds import kind_for
from fastdtm.kinds.base import Policy, reset_interval_ms
from fastdtm.models import Branch, Transaction, TransRequest
from fastdtm.states import TERMINAL, Outcome, TransStatus, TransType
from fastdtm.store.base import Change, ListPage, ListQuery, Store

_BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def new_gid() -> str:
    """A 22-character base57 id from a random UUID, the shape DTM's shortuuid gives."""
    value = uuid.uuid4().int
    digits = []
    for _ in range(22):
        value, rem = divmod(value, 57)
        digits.append(_BASE57[rem])
    return "".join(digits)


@dataclass(frozen=True, slots=True)
class Service:
    store: Store
    engine: Engine
    clock: Clock
    policy: Policy

    def _new(self, req: TransRequest, status: TransStatus) -> tuple[Transaction, list[Branch]]:
        trans_type = req.trans_type_enum()
        now = self.clock.now_ms()
        branches = kind_for(trans_type).build(req, now)
        interval = reset_interval_ms(req.options, self.policy)
        trans = Transaction(
            gid=req.gid,
            trans_type=trans_type,
            status=status,
            options=req.options,
            create_ms=now,
            update_ms=now,
            custom_data=req.custom_data,
            query_prepared=req.query_prepared,
            protocol=req.protocol,
            next_cron_interval_ms=interval,
            next_cron_ms=now + interval,
        )
        return trans, branches

    async def prepare(self, req: TransRequest) -> None:
        trans, branches = self._new(req, TransStatus.PREPARED)
        if trans.trans_type is TransType.MSG and not trans.query_prepared:
            # Without a check-back URL a prepared msg whose AP died could never be decided.
            raise Invalid("a msg prepare needs query_prepared, the URL to check the local transaction.")
        existing = await self.store.create(trans, branches)
        if existing not in (None, TransStatus.PREPARED):
            raise Conflict(f"current status '{existing}', cannot prepare.")

    async def submit(self, req: TransRequest) -> None:
        trans, branches = self._new(req, TransStatus.SUBMITTED)
        existing = await self.store.create(trans, branches)
        if existing is not None:
            trans, branches = await self._resubmit(req, existing)
        if not req.options.wait_result:
            self.engine.spawn(trans, branches)
            return
        result = await self.engine.run(trans, branches)
        # A round that lost a race (another node, forceStop) reports what the store now says.
        status = result.trans.status if result.completed else await self._status(trans.gid)
        _report(result, status)

    async def _resubmit(self, req: TransRequest, existing: TransStatus) -> tuple[Transaction, list[Branch]]:
        """Submit of a known gid: promote a prepared one, re-drive a submitted one, refuse others."""
        if existing is TransStatus.PREPARED:
            now = self.clock.now_ms()
            interval = reset_interval_ms(req.options, self.policy)
            # The submit body may carry custom_data the prepare did not (the Go SDK sends a msg
            # delay only on submit); it is kept for every later round too.
            fields = {"custom_data": req.custom_data} if req.custom_data else {}
            change = Change(
                req.gid,
                TransStatus.PREPARED,
                TransStatus.SUBMITTED,
                now,
                fields=fields,
                next_cron_ms=now + interval,
                interval_ms=interval,
            )
            try:
                await self.store.transition(change)
            except Stale as exc:
                existing = TransStatus(exc.current)
        if existing not in (TransStatus.PREPARED, TransStatus.SUBMITTED):
            raise Conflict(f"current status '{existing}', cannot submit.")
        loaded = await self.store.load(req.gid)
        if loaded is None:
            raise NotFound(f"no transaction with gid '{req.gid}'.")
        return loaded

    async def _status(self, gid: str) -> TransStatus:
        loaded = await self.store.load(gid)
        if loaded is None:
            raise NotFound(f"no transaction with gid '{gid}'.")
        return loaded[0].status

    async def abort(self, req: TransRequest) -> None:
        trans, _ = await self._load(req.gid)
        if trans.trans_type is TransType.MSG and trans.status is TransStatus.PREPARED:
            await self._change(trans, TransStatus.FAILED, req.rollback_reason)
            return
        raise Conflict(f"trans type: '{trans.trans_type}' current status '{trans.status}', cannot abort.")

    async def force_stop(self, gid: str) -> None:
        """Operators' tool: fail an unfinished transaction now, without compensation."""
        for _ in range(5):
            trans, _ = await self._load(gid)
            if trans.status in TERMINAL:
                raise Conflict(f"current status '{trans.status}', cannot forceStop.")
            try:
                await self._change(trans, TransStatus.FAILED, "")
                return
            except Stale:
                continue  # it moved meanwhile: look again
        raise ServerError(f"transaction '{gid}' keeps changing; try forceStop again.")

    async def reset_next_cron_time(self, gid: str) -> None:
        now = self.clock.now_ms()
        try:
            await self.store.touch(gid, now, now)
        except TransNotFound:
            raise NotFound(f"no transaction with gid '{gid}'.") from None

    async def query(self, gid: str) -> tuple[Transaction, list[Branch]] | None:
        return await self.store.load(gid)

    async def list_transactions(self, query: ListQuery) -> ListPage:
        return await self.store.list_transactions(query)

    async def _load(self, gid: str) -> tuple[Transaction, list[Branch]]:
        loaded = await self.store.load(gid)
        if loaded is None:
            raise NotFound(f"no transaction with gid '{gid}'.")
        return loaded

    async def _change(self, trans: Transaction, status: TransStatus, reason: str) -> None:
        change = Change(trans.gid, trans.status, status, self.clock.now_ms(), rollback_reason=reason)
        await self.store.transition(change)


def _report(result: RoundResult, stored: TransStatus) -> None:
    """`wait_result`: 200 only if the transaction succeeded in this round (reference §4.2)."""
    if stored is TransStatus.SUCCEED:
        return
    trans = result.trans
    error = result.last_error
    if trans.trans_type is not TransType.SAGA and error is not None and stored is not TransStatus.FAILED:
        if error.outcome is Outcome.ONGOING:
            raise Ongoing(error.detail)
        if error.outcome is Outcome.ERROR:
            raise ServerError(error.detail)
    raise Conflict(trans.rollback_reason or "wait result not return success:")
