"""The operator console's use cases (the endpoints under /api/admin/, fastdtm/api/admin.py).

Every action is one store script (`lua/admin_*.lua`, or `touch` / `transition` as DTM's own operator
endpoints use), checked first and refused on a finished transaction, counted in
`fastdtm_operator_actions_total` and logged at WARNING with the gid and the operator's reason: a human
changed a transaction's course, and the log is where that is looked for afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from fastdtm.clock import Clock
from fastdtm.errors import (
    ApiError,
    BranchDecided,
    Conflict,
    Held,
    Invalid,
    NoSuchBranch,
    NotFound,
    NotPaused,
    Paused,
    Stale,
    TransNotFound,
)
from fastdtm.metrics import Metrics
from fastdtm.models import Branch, Transaction
from fastdtm.notes import ACTION_STATUS, MAX_REASON, SKIP, Notes, can_fail, can_skip, mark_value
from fastdtm.service import Service
from fastdtm.states import TERMINAL, BranchStatus, TransStatus, TransType
from fastdtm.store.base import BranchMarking, ListQuery, Store

log = logging.getLogger(__name__)

#: The most transactions one bulk action takes: a larger selection is narrowed by its filter first.
BULK_MAX: Final = 1000
#: Gids a bulk preview shows.
BULK_SAMPLE: Final = 10
#: How many transactions a bulk action acts on at once.
BULK_CONCURRENCY: Final = 16
RETRY = "retry"
FORCE_STOP = "force_stop"
BULK_ACTIONS: Final = (FORCE_STOP, RETRY)
#: Transactions a bulk action can change: the unfinished ones.
_UNFINISHED: Final = (TransStatus.PREPARED, TransStatus.SUBMITTED, TransStatus.ABORTING)

Loaded = tuple[Transaction, list[Branch], Notes]


@dataclass(frozen=True, slots=True)
class BulkResult:
    count: int
    capped: bool
    sample: Sequence[str]
    done: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Console:
    store: Store
    service: Service
    clock: Clock
    metrics: Metrics
    node_id: str
    heartbeat_ttl_ms: int

    async def detail(self, gid: str) -> Loaded:
        loaded = await self.store.load_notes(gid)
        if loaded is None:
            raise NotFound(f"no transaction with gid '{gid}'.")
        return loaded

    async def retry(self, gid: str) -> int:
        """Retry now: the transaction is due at once (after a running round's hold). Returns its schedule."""
        now = self.clock.now_ms()
        try:
            status = await self.store.touch(gid, now, now)
        except TransNotFound:
            raise self._refused(RETRY, NotFound(f"no transaction with gid '{gid}'."), gid) from None
        except Paused:
            raise self._refused(RETRY, Conflict(f"transaction '{gid}' is paused: resume it to retry."), gid) from None
        if status in TERMINAL:
            raise self._refused(RETRY, Conflict(f"transaction '{gid}' is {status}: nothing to retry."), gid)
        self._done(RETRY, gid)
        return now

    async def pause(self, gid: str) -> bool:
        """Pause the retries; False if it was paused already (nothing changed)."""
        try:
            changed = await self.store.pause(gid, self.clock.now_ms(), self.service.engine.new_holder())
        except (TransNotFound, Stale, Held) as exc:
            raise self._refused("pause", self._explain(gid, exc, "pause"), gid) from None
        if changed:
            self._done("pause", gid)
        return changed

    async def resume(self, gid: str) -> None:
        try:
            await self.store.resume(gid, self.clock.now_ms())
        except (TransNotFound, NotPaused) as exc:
            raise self._refused("resume", self._explain(gid, exc, "resume"), gid) from None
        self._done("resume", gid)

    async def mark(self, gid: str, branch_id: str, op: str, action: str, reason: str) -> BranchStatus:
        """Skip (record as succeeded) or fail one branch, with the operator's reason; the cron carries the
        transaction on at once. Returns the branch's new status."""
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise self._refused(action, Invalid(f"a reason of 1..{MAX_REASON} characters is required."), gid)
        trans, branches, _ = await self.detail(gid)
        index = next((i for i, b in enumerate(branches) if b.branch_id == branch_id and b.op == op), None)
        if index is None:
            raise self._refused(action, NotFound(f"transaction '{gid}' has no branch {branch_id} {op}."), gid)
        allowed = can_skip if action == SKIP else can_fail
        if not allowed(trans, branches[index]):
            raise self._refused(action, Conflict(_why_not(trans, branches[index], action)), gid)
        status = ACTION_STATUS[action]
        now = self.clock.now_ms()
        marking = BranchMarking(
            gid,
            index,
            branch_id,
            op,
            trans.status,
            status,
            mark_value(action, reason, now),
            now,
            self.service.engine.new_holder(),
        )
        try:
            await self.store.mark_branch(marking)
        except (TransNotFound, Stale, Held, NoSuchBranch, BranchDecided) as exc:
            raise self._refused(action, self._explain(gid, exc, action), gid) from None
        self._done(action, gid, f"branch {branch_id} {op}: {reason}")
        return status

    async def attention(self, position: str, limit: int) -> tuple[list[Loaded], str]:
        page = await self.store.attention(position, limit)
        loaded = await asyncio.gather(*(self.store.load_notes(gid) for gid, _ in page.gids))
        # A transaction that finished or expired after the index was read is no longer anyone's concern.
        return [item for item in loaded if item is not None and item[0].status not in TERMINAL], page.next_position

    async def bulk(self, action: str, selection: ListQuery, confirm: int | None) -> BulkResult:
        """Preview (no `confirm`): how many unfinished transactions the filter selects. Apply: `confirm` must be
        that count as it is now, or nothing is done (the selection changed since the operator saw it). The
        selection is `/all`'s filters (its limit and position are not used)."""
        if action not in BULK_ACTIONS:
            raise Invalid(f"action must be one of {', '.join(BULK_ACTIONS)}, got '{action[:40]}'.")
        gids, capped = await self._select(selection)
        sample = gids[:BULK_SAMPLE]
        if confirm is None:
            return BulkResult(len(gids), capped, sample)
        if confirm != len(gids):
            raise self._refused(
                f"bulk_{action}",
                Conflict(f"the selection now has {len(gids)} transactions, not {confirm}: preview it again."),
                "",
            )
        act = self._force_stop if action == FORCE_STOP else self.retry
        done = await _bounded(act, gids)
        log.warning("operator: bulk %s on %d transactions (%d refused)", action, len(gids), len(gids) - done)
        return BulkResult(len(gids), capped, sample, done, len(gids) - done)

    async def _force_stop(self, gid: str) -> object:
        try:
            await self.service.force_stop(gid)
        except (Conflict, NotFound) as exc:
            raise self._refused(FORCE_STOP, exc, gid) from None
        self._done(FORCE_STOP, gid)
        return None

    async def _select(self, selection: ListQuery) -> tuple[list[str], bool]:
        statuses = [selection.status] if selection.status else [str(s) for s in _UNFINISHED]
        if any(s not in _UNFINISHED for s in statuses):
            return [], False  # a finished transaction is changed by no action
        gids: list[str] = []
        for status in statuses:
            position = ""
            while True:
                query = replace(selection, limit=200, position=position, status=status)
                page = await self.store.list_transactions(query)
                gids += [t.gid for t in page.transactions]
                if len(gids) > BULK_MAX:
                    return gids[:BULK_MAX], True
                if not page.next_position:
                    break
                position = page.next_position
        return gids, False

    async def stats(self) -> dict[str, object]:
        figures = self.metrics.snapshot()
        return {
            "node_id": self.node_id,
            "now_ms": self.clock.now_ms(),
            "unfinished": await self.store.unfinished_count(),
            **figures,
        }

    async def nodes(self) -> dict[str, object]:
        now = self.clock.now_ms()
        live = await self.store.nodes()
        holders = await asyncio.gather(*(self.store.lease_holder(s) for s in range(self.store.shards)))
        owned: dict[str, list[int]] = {node: [] for node, _ in live}
        unowned = []
        for shard, holder in enumerate(holders):
            node = holder.split(" ")[0] if holder else None
            if node is None:
                unowned.append(shard)
            else:
                owned.setdefault(node, []).append(shard)
        expiries = dict(live)
        listed = []
        for node in sorted(owned):
            expiry = expiries.get(node)
            listed.append(
                {
                    "node_id": node,
                    "heartbeat_age_ms": None if expiry is None else max(0, now - (expiry - self.heartbeat_ttl_ms)),
                    "expires_in_ms": None if expiry is None else expiry - now,
                    "shards": owned[node],
                }
            )
        return {
            "now_ms": now,
            "node_id": self.node_id,
            "shards": self.store.shards,
            "nodes": listed,
            "unowned": unowned,
        }

    def _done(self, action: str, gid: str, what: str = "") -> None:
        self.metrics.operator_action(action, True)
        log.warning("operator: %s %s", action, what, extra={"gid": gid})

    def _refused(self, action: str, exc: Exception, gid: str) -> Exception:
        self.metrics.operator_action(action, False)
        log.info("operator: %s refused: %s", action, exc, extra={"gid": gid})
        return exc

    @staticmethod
    def _explain(gid: str, exc: Exception, action: str) -> Exception:
        if isinstance(exc, TransNotFound):
            return NotFound(f"no transaction with gid '{gid}'.")
        if isinstance(exc, Stale):
            return Conflict(f"cannot {action} transaction '{gid}': its status is '{exc.current}' now.")
        if isinstance(exc, Held):
            return Conflict(f"a round is acting on transaction '{gid}' now: try again in a moment.")
        if isinstance(exc, NotPaused):
            return Conflict(f"transaction '{gid}' is not paused (status '{exc.current}').")
        if isinstance(exc, BranchDecided):
            return Conflict(f"that branch of '{gid}' is {exc.status} already.")
        if isinstance(exc, NoSuchBranch):
            return NotFound(str(exc))
        return Conflict(str(exc))


def _why_not(trans: Transaction, branch: Branch, action: str) -> str:
    what = f"branch {branch.branch_id} {branch.op} of '{trans.gid}'"
    if trans.status in TERMINAL:
        return f"transaction '{trans.gid}' is {trans.status}: it can no longer change."
    if branch.status is not branch.status.PREPARED:
        return f"{what} is {branch.status} already."
    if trans.trans_type is TransType.WORKFLOW:
        return "a workflow's branches are decided by the workflow's own code, not by the coordinator."
    if not can_skip(trans, branch):
        return f"the coordinator does not call {what} while the transaction is {trans.status}."
    return f"a {branch.op} of a {trans.trans_type} is retried until it succeeds: it cannot be failed, only skipped."


async def _bounded(act: Callable[[str], Awaitable[object]], gids: Sequence[str]) -> int:
    """Run `act` on every gid, BULK_CONCURRENCY at a time; the number that succeeded (a refusal is counted
    and logged by `act`, and the others go on)."""
    gate = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(gid: str) -> bool:
        async with gate:
            try:
                await act(gid)
            except ApiError:  # refused (finished meanwhile, ...): counted, and the others go on
                return False
            return True

    results = await asyncio.gather(*(one(gid) for gid in gids))
    return sum(results)
