"""The use cases behind DTM's endpoints: prepare, submit, abort, registerBranch, forceStop, query, ...

Protocol-free: handlers (HTTP, JSON-RPC) decode a request into values, call one method here, and
encode what comes back. Every check happens before the first write, so a refused request changes
nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fastdtm.branch_policy import BranchPolicy
from fastdtm.clock import Clock
from fastdtm.engine import Claim, Engine, RoundResult
from fastdtm.errors import (
    AlreadyExists,
    Conflict,
    Invalid,
    NotFound,
    Ongoing,
    Paused,
    ProtocolMismatch,
    Refused,
    ServerError,
    Stale,
    TransNotFound,
)
from fastdtm.grpc_syntax import is_http_url
from fastdtm.kinds import kind_for
from fastdtm.kinds.base import Policy, Topics, reset_interval_ms
from fastdtm.kinds.msg import topic_name
from fastdtm.kinds.workflow import FINAL
from fastdtm.models import (
    Branch,
    BranchRequest,
    Transaction,
    TransRequest,
    check_branch_headers,
    check_branch_url,
    convert_body,
    parse_trans_type,
)
from fastdtm.notes import Notes
from fastdtm.states import GRPC, TERMINAL, Outcome, TransStatus, TransType
from fastdtm.store.base import Change, ListPage, ListQuery, Store

#: Kinds whose submit normally follows a prepare.
PREPARED_FIRST = frozenset({TransType.MSG, TransType.TCC, TransType.XA})

_BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def new_gid() -> str:
    """A 22-character base57 id from a random UUID, the shape DTM's shortuuid gives."""
    value = uuid.uuid4().int
    digits = []
    for _ in range(22):
        value, rem = divmod(value, 57)
        digits.append(_BASE57[rem])
    return "".join(digits)


class Subscribers(Protocol):
    """Where msg topics are resolved (topics.Topics)."""

    async def subscribers(self, topic: str) -> Sequence[str]: ...


def _missing(gid: str) -> NotFound:
    return NotFound(f"no transaction with gid '{gid}'.")


@dataclass(frozen=True, slots=True)
class Service:
    store: Store
    engine: Engine
    clock: Clock
    policy: Policy
    topics: Subscribers
    #: Where branch calls may go: every URL a request hands over is checked before anything is written.
    branch_urls: BranchPolicy = field(default_factory=BranchPolicy)

    async def _new(self, req: TransRequest, status: TransStatus) -> tuple[Transaction, list[Branch]]:
        trans_type = req.trans_type_enum()
        now = self.clock.now_ms()
        topics = await self._topics(req) if trans_type is TransType.MSG else {}
        branches = kind_for(trans_type).build(req, now, topics)
        check_branch_url(self.branch_urls, req.query_prepared, "query_prepared")
        _check_branch_urls(self.branch_urls, branches)
        if req.options.branch_headers and req.protocol != GRPC and any(_grpc_url(b.url) for b in branches):
            # An HTTP transaction may still call gRPC branches (a topic's gRPC subscribers): its headers then go
            # out as metadata too, checked as a gRPC transaction's are.
            check_branch_headers(req.options.branch_headers, grpc=True)
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

    async def _topics(self, req: TransRequest) -> Topics:
        if req.trans_type != TransType.MSG:
            return {}
        names = {name for step in req.steps if (name := topic_name(step.get("action", ""))) is not None}
        return {name: await self.topics.subscribers(name) for name in names}

    async def prepare(self, req: TransRequest) -> None:
        trans, branches = await self._new(req, TransStatus.PREPARED)
        _check_prepare(trans)
        try:
            existing = await self.store.create(trans, branches)
        except Refused as exc:  # the gid is a transaction of another type
            raise Conflict(str(exc)) from None
        if existing not in (None, TransStatus.PREPARED):
            raise Conflict(f"current status '{existing}', cannot prepare.")

    async def prepare_workflow(self, req: TransRequest) -> tuple[Transaction, list[Branch]]:
        """Start a workflow, or return it as stored (with its progress) if the gid is known."""
        trans, branches = await self._new(req, TransStatus.PREPARED)
        _check_prepare(trans)
        try:
            if await self.store.create(trans, branches) is None:
                return trans, branches
        except Refused as exc:
            raise Conflict(str(exc)) from None
        return await self._load(req.gid)

    async def submit(self, req: TransRequest) -> None:
        if req.trans_type == TransType.WORKFLOW:
            await self._finish_workflow(req)
            return
        trans, branches = await self._new(req, TransStatus.SUBMITTED)
        wait = req.options.wait_result
        # Not a helper with its own try: the round is awaited here, and every await level is paid again
        # at each of the round's I/O resumptions.
        try:
            if trans.trans_type in PREPARED_FIRST:
                # Its prepare stored it, as a rule: submit it and hand it to this node's round in one script.
                try:
                    claim = await self._submit_prepared(req)
                except TransNotFound:
                    pass  # submitted without a prepare: created below like a saga
                except Stale as exc:
                    await self._resubmit(req, TransStatus(exc.current), wait=wait)
                    return
                else:
                    await self._process(claim, wait=wait)
                    return
            try:
                # Stored by the round's first write: one script for a saga that needs no branch I/O.
                result = await self.engine.start(trans, branches, wait=wait)
            except AlreadyExists as exc:
                await self._resubmit(req, TransStatus(exc.status), wait=wait)
                return
        except Refused as exc:  # the gid is a transaction of another type: nothing was written
            raise Conflict(str(exc)) from None
        if result is not None:
            await self._report_round(result)

    async def _report_round(self, result: RoundResult) -> None:
        if result.completed:
            _report(result, result.trans.status)
            return
        # A round that lost a race (another round, forceStop) reports what the store now says.
        _report_stored(result, (await self._load(result.trans.gid))[0])

    async def _process(self, claim: Claim, *, wait: bool) -> None:
        if not wait:
            self.engine.spawn(claim)
            return
        await self._report_round(await self.engine.run(claim))

    async def _redrive(self, gid: str, *, wait: bool) -> None:
        """A round on a transaction already under way (a repeated submit, an abort of an aborting one):
        none if another round holds it now (it is being driven); that one's result is not this reply's."""
        if not wait:
            self.engine.advance_later(gid)
            return
        result = await self.engine.advance(gid)
        if result is not None:
            await self._report_round(result)
            return
        # Held by another round, or finished meanwhile: report what the store says.
        trans, _ = await self._load(gid)
        _report_stored(RoundResult(trans, completed=False), trans)

    async def _resubmit(self, req: TransRequest, existing: TransStatus, *, wait: bool) -> None:
        """Submit of a known gid: promote a prepared one, re-drive a submitted one, refuse others.

        Re-driving uses the stored branches, never a list rebuilt from the request: DTM rebuilds it,
        and for tcc/xa an empty list then reads as "all confirmed" (its quirk 1). Raises
        TransNotFound if the gid is absent.
        """
        if existing is TransStatus.PREPARED:
            try:
                claim = await self._submit_prepared(req)
            except Stale as exc:
                existing = TransStatus(exc.current)
            else:
                await self._process(claim, wait=wait)
                return
        if existing is not TransStatus.SUBMITTED:
            raise Conflict(f"current status '{existing}', cannot submit.")
        await self._redrive(req.gid, wait=wait)

    async def _submit_prepared(self, req: TransRequest) -> Claim:
        """prepared -> submitted, handed to a round of this node; raises Stale / TransNotFound."""
        now = self.clock.now_ms()
        interval = reset_interval_ms(req.options, self.policy)
        # The submit body may carry custom_data the prepare did not (the Go SDK sends a msg delay only on
        # submit); it is kept for every later round too.
        fields = {"custom_data": req.custom_data} if req.custom_data else {}
        change = Change(
            req.gid,
            TransStatus.PREPARED,
            TransStatus.SUBMITTED,
            now,
            fields=fields,
            next_cron_ms=now + self.engine.hold_ms(interval),
            interval_ms=interval,
            trans_type=req.trans_type,
        )
        return await self.engine.take_over(change)

    async def _finish_workflow(self, req: TransRequest) -> None:
        """The workflow client's own verdict: prepared -> req_extra.status, keeping every other field."""
        status = FINAL.get(req.req_extra.get("status", ""))
        if status is None:
            raise Conflict("a workflow submit needs req_extra.status 'succeed' or 'failed'.")
        fields = {"result": result} if (result := req.req_extra.get("result")) else {}
        change = Change(
            req.gid,
            TransStatus.PREPARED,
            status,
            self.clock.now_ms(),
            rollback_reason=req.req_extra.get("rollback_reason", ""),
            fields=fields,
            trans_type=TransType.WORKFLOW,
        )
        try:
            await self.store.transition(change)
        except Stale as exc:
            raise Conflict(f"current status '{exc.current}', cannot submit.") from None
        except Refused as exc:  # a workflow's verdict cannot finish a tcc or xa without its second phase
            raise Conflict(str(exc)) from None
        except TransNotFound:
            raise _missing(req.gid) from None

    async def register_branch(self, req: BranchRequest) -> None:
        kind = kind_for(parse_trans_type(req.trans_type))
        now = self.clock.now_ms()
        branches = kind.register(req, now)
        _check_branch_urls(self.branch_urls, branches)
        try:
            try:
                await self.store.register_branches(req.gid, req.trans_type, branches, now, req.protocol)
            except ProtocolMismatch as exc:
                # Registered over the other API (DTM allows it): the bodies as the transaction keeps them.
                bodies = [convert_body(b.data, req.protocol, exc.stored) for b in branches]
                again = [
                    Branch(b.branch_id, b.op, b.url, body, b.create_ms, b.status)
                    for b, body in zip(branches, bodies, strict=True)
                ]
                await self.store.register_branches(req.gid, req.trans_type, again, now, exc.stored)
        except (TransNotFound, Stale):
            raise Conflict(f"no trans with gid: {req.gid} status: prepared found") from None
        except Refused as exc:
            raise Conflict(str(exc)) from None

    async def abort(self, req: TransRequest) -> None:
        trans, _ = await self._load(req.gid)
        if req.trans_type and req.trans_type != trans.trans_type:
            raise Conflict(f"transaction '{req.gid}' is a {trans.trans_type}, not a {req.trans_type}.")
        if trans.trans_type is TransType.MSG and trans.status is TransStatus.PREPARED:
            await self._change(trans, TransStatus.FAILED, req.rollback_reason)
            return
        abortable = (TransStatus.PREPARED, TransStatus.ABORTING)
        if trans.trans_type not in (TransType.TCC, TransType.XA) or trans.status not in abortable:
            raise Conflict(f"trans type: '{trans.trans_type}' current status '{trans.status}', cannot abort.")
        wait = trans.options.wait_result
        if trans.status is TransStatus.ABORTING:
            await self._redrive(req.gid, wait=wait)
            return
        now = self.clock.now_ms()
        interval = trans.next_cron_interval_ms or reset_interval_ms(trans.options, self.policy)
        change = Change(
            trans.gid,
            TransStatus.PREPARED,
            TransStatus.ABORTING,
            now,
            rollback_reason=req.rollback_reason,
            next_cron_ms=now + self.engine.hold_ms(interval),
            interval_ms=interval,
            trans_type=trans.trans_type,
        )
        try:
            claim = await self.engine.take_over(change)
        except Stale as exc:
            raise Conflict(f"current status '{exc.current}', cannot abort.") from None
        await self._process(claim, wait=wait)

    async def force_stop(self, gid: str) -> None:
        """Operators' tool: fail an unfinished transaction now, without compensation."""
        for _ in range(5):
            trans, _ = await self._load(gid)
            if trans.status in TERMINAL:
                raise Conflict(f"global transaction force stop error. status: {trans.status}. error: FAILURE")
            try:
                await self._change(trans, TransStatus.FAILED, "")
            except Stale:
                continue  # it moved meanwhile: look again
            self.engine.metrics.finished(trans.trans_type, TransStatus.FAILED)
            return
        raise ServerError(f"transaction '{gid}' keeps changing; try forceStop again.")

    async def reset_next_cron_time(self, gid: str) -> None:
        now = self.clock.now_ms()
        try:
            await self.store.touch(gid, now, now)
        except TransNotFound:
            raise _missing(gid) from None
        except Paused:
            raise Conflict(f"transaction '{gid}' is paused by an operator: resume it first. FAILURE") from None

    async def reset_cron_time(self, timeout_s: int | None, limit: int) -> tuple[int, bool]:
        """Operators' tool: transactions scheduled more than `timeout` ahead run now."""
        now = self.clock.now_ms()
        ahead_ms = timeout_s * 1000 if timeout_s is not None else 3 * self.policy.timeout_to_fail_ms
        return await self.store.reset_cron(now + ahead_ms, now, limit)

    async def query(self, gid: str) -> tuple[Transaction, list[Branch]] | None:
        return await self.store.load(gid)

    async def query_notes(self, gid: str) -> tuple[Transaction, list[Branch], Notes] | None:
        """`query` with the console's notes: /query shows an operator's decisions on branches."""
        return await self.store.load_notes(gid)

    async def list_transactions(self, query: ListQuery) -> ListPage:
        return await self.store.list_transactions(query)

    async def _load(self, gid: str) -> tuple[Transaction, list[Branch]]:
        loaded = await self.store.load(gid)
        if loaded is None:
            raise _missing(gid)
        return loaded

    async def _change(self, trans: Transaction, status: TransStatus, reason: str) -> None:
        now = self.clock.now_ms()
        next_cron = now + trans.next_cron_interval_ms if status not in TERMINAL else None
        change = Change(trans.gid, trans.status, status, now, rollback_reason=reason, next_cron_ms=next_cron)
        await self.store.transition(change)


def _check_branch_urls(policy: BranchPolicy, branches: Sequence[Branch]) -> None:
    for branch in branches:
        if branch.url and policy.url_refusal(branch.url) is not None:  # the message is built only then
            check_branch_url(policy, branch.url, f"the URL of branch {branch.branch_id} ({branch.op})")


def _grpc_url(url: str) -> bool:
    return bool(url) and not is_http_url(url)


def _check_prepare(trans: Transaction) -> None:
    if trans.trans_type is TransType.MSG and not trans.query_prepared:
        # Without a check-back URL a prepared msg whose app died could never be decided.
        raise Invalid("a msg prepare needs query_prepared, the URL to check the local transaction.")


def _report_stored(result: RoundResult, stored: Transaction) -> None:
    """`wait_result` of a round that did not reach the outcome itself: the stored one, if there is one yet
    (the round that took over reaches it otherwise)."""
    if stored.status not in TERMINAL:
        raise Ongoing(f"transaction '{stored.gid}' is being processed by another round; query it for the outcome.")
    _report(result, stored.status)


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
