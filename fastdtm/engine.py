"""Drives one transaction through one processing round: ask its kind, call branches, record results.

A round runs on the node that received `submit` (in the background, or inline with `wait_result`)
or on the shard's cron owner. Branch results are written with the round's next write: a status
change (so the last results ride with `succeed`), a pause, or its end; a round that keeps calling
branches for longer than PROGRESS_WRITE_MS also writes them as it goes. Calls are at-least-once: a
crash before a result is written makes the cron call that branch again, and branches are
idempotent (barrier), as DTM requires.

A new transaction's round (`start`) does not write it first: its first write is the `create`, made
when the round must write anyway: before the first branch call goes out, or when it is over. So a
saga whose branches all need no I/O is stored once, already finished, by one script.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fastdtm.alerts import Alerter, retry_count
from fastdtm.clock import Clock
from fastdtm.errors import AlreadyExists, Stale, StoreError, TransNotFound
from fastdtm.invoker import CallResult, Invoker
from fastdtm.kinds import kind_for
from fastdtm.kinds.base import Call, Kind, Policy, Round, Step, branch_status_after, reset_interval_ms
from fastdtm.metrics import Metrics
from fastdtm.models import Branch, Transaction
from fastdtm.states import TERMINAL, BranchStatus, Outcome, TransStatus
from fastdtm.store.base import Change, Store

log = logging.getLogger(__name__)

#: A round that has not written for this long writes its branch results before calling on: a long
#: round records its progress as it goes, a quick one writes them with its final status.
PROGRESS_WRITE_MS = 1000

#: The result of a call with an empty URL: DTM counts it a success without calling anything.
_LOCAL_SUCCESS = CallResult(Outcome.SUCCESS, "empty url")


@dataclass(slots=True)
class RoundResult:
    trans: Transaction
    #: The last call in the round that did not succeed, if any (wait_result reports it).
    last_error: CallResult | None = None
    #: False when the round stopped because another writer changed the transaction first.
    completed: bool = True


@dataclass(slots=True)
class _Schedule:
    interval_ms: int
    next_cron_ms: int
    dirty: bool = False


class Engine:
    def __init__(
        self,
        store: Store,
        invoker: Invoker,
        policy: Policy,
        clock: Clock,
        metrics: Metrics,
        alerter: Alerter | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.alerter = alerter
        self.invoker = invoker
        self.policy = policy
        self.clock = clock
        #: gids with a round running on this node: the cron does not start a second one here.
        self._active: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()

    async def run(
        self,
        trans: Transaction,
        branches: list[Branch],
        *,
        created: bool = True,
        stored: asyncio.Future[None] | None = None,
    ) -> RoundResult:
        """One round on already loaded state; none if this node already runs one for the gid.

        created=False: the transaction is not in the store yet (see `start`); `stored`, if given,
        resolves once it is, or fails with whatever kept it from being stored.
        """
        if trans.gid in self._active:
            return RoundResult(trans, completed=False)
        self._active.add(trans.gid)
        self.metrics.rounds_in_flight(len(self._active))
        ok = False
        try:
            result = await _Runner(self, trans, branches, created, stored).run()
            ok = result.completed and result.last_error is None  # DTM's: no error; ONGOING counts as fail
            return result
        finally:
            self._active.discard(trans.gid)
            self.metrics.rounds_in_flight(len(self._active))
            self.metrics.round_done(trans.trans_type, ok, (self.clock.now_ms() - trans.create_ms) / 1000)

    async def start(self, trans: Transaction, branches: list[Branch], *, wait: bool) -> RoundResult | None:
        """The first round of a transaction not stored yet: stored by the round's first write.

        Returns once it is stored (wait=False: the round goes on in the background; None) or once
        the round is over (wait=True). Raises AlreadyExists if the gid is taken, having written nothing.
        """
        if trans.gid in self._active:
            # The same gid submitted twice at once to this node: store it the plain way; this
            # round defers to the one running.
            existing = await self.store.create(trans, branches)
            if existing is not None:
                raise AlreadyExists(existing)
            return RoundResult(trans, completed=False) if wait else None
        if wait:
            return await self.run(trans, branches, created=False)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.spawn(trans, branches, stored=stored)
        await stored
        return None

    def spawn(self, trans: Transaction, branches: list[Branch], *, stored: asyncio.Future[None] | None = None) -> None:
        """Run a round in the background; a failure is logged and left to the cron."""
        task = asyncio.get_running_loop().create_task(self._run_logged(trans, branches, stored))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def advance(self, gid: str) -> RoundResult | None:
        """Load and run one round (the cron's entry point); None if there is nothing to do here."""
        if gid in self._active:
            return None
        loaded = await self.store.load(gid)
        if loaded is None:
            await self.store.forget(gid)  # its data is gone: stop scheduling it
            return None
        trans, branches = loaded
        if trans.status in TERMINAL:
            await self.store.forget(gid)
            return None
        return await self.run(trans, branches)

    async def _run_logged(
        self, trans: Transaction, branches: list[Branch], stored: asyncio.Future[None] | None = None
    ) -> None:
        try:
            await self.run(trans, branches, created=stored is None, stored=stored)
        except AlreadyExists:
            pass  # reported to the caller through `stored`: nothing was written
        except StoreError as exc:
            log.warning("round stopped: %s; the cron will resume it", exc, extra={"gid": trans.gid})
        except Exception:
            log.exception("round failed; the cron will resume it", extra={"gid": trans.gid})
        finally:
            if stored is not None and not stored.done():
                # Stopped before its first write (the caller reports the failure): nothing stored.
                stored.set_exception(StoreError(f"transaction '{trans.gid}' was not stored"))

    async def close(self, grace: float = 5.0) -> None:
        """Let background rounds finish for a while, then cancel them (the cron resumes them)."""
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)


class _Runner:
    """The state of one round: the kind's view plus unrecorded branch results and the schedule."""

    def __init__(
        self,
        engine: Engine,
        trans: Transaction,
        branches: list[Branch],
        created: bool = True,
        stored: asyncio.Future[None] | None = None,
    ) -> None:
        self.engine = engine
        #: False until the transaction is in the store: the first write is then its `create`.
        self.created = created
        self.stored = stored
        self.kind: Kind = kind_for(trans.trans_type)
        now = engine.clock.now_ms()
        self.rnd = Round(trans, list(branches), now, engine.policy)
        self.reset_ms = reset_interval_ms(trans.options, engine.policy)
        interval = trans.next_cron_interval_ms or self.reset_ms
        self.schedule = _Schedule(interval, now + interval)
        self.pending: dict[int, Branch] = {}
        #: When the round last wrote (or began), in ms.
        self.written_ms = now
        self.tasks: dict[asyncio.Task[CallResult], Call] = {}
        self.last_error: CallResult | None = None

    async def run(self) -> RoundResult:
        try:
            completed = await self._loop()
        except (Stale, TransNotFound) as exc:
            # Another writer (forceStop, another node) moved the transaction first: stand down.
            log.info("round stopped: %s", exc, extra={"gid": self.rnd.trans.gid})
            completed = False
        finally:
            for task in self.tasks:
                task.cancel()
        return RoundResult(self.rnd.trans, self.last_error, completed)

    async def _loop(self) -> bool:
        while True:
            self.rnd.now_ms = self.engine.clock.now_ms()
            step = self.kind.step(self.rnd)
            if step.status is not None:
                await self._transition(step.status, step.reason)
                if step.status in TERMINAL:
                    return True
                continue
            if step.wake_at_ms:
                self.schedule = _Schedule(self.schedule.interval_ms, step.wake_at_ms, dirty=True)
                break
            remote = self._finish_local(step)
            if step.start and not remote and not self.tasks:
                continue  # only I/O-free progress: decide again before writing anything
            if not self.created or (self.pending and remote and self._progress_is_old()):
                # Stored before any branch is called. Results are written with the round's next
                # write (a status change, a pause, its end); a round that has not written for
                # PROGRESS_WRITE_MS writes them before calling on: /query shows its progress, and a
                # crash re-runs little. Calls are at-least-once and branches idempotent either way.
                await self._flush()
            if len(remote) == 1 and not self.tasks:
                # The usual case (a sequential saga, a two-phase commit): one call, nothing else
                # running, so await it here rather than through a task and asyncio.wait.
                await self._call_alone(remote[0])
                continue
            self._launch(remote)
            if not self.tasks:
                break
            await self._wait_one()
        if self.pending or self.schedule.dirty or not self.created:
            await self._flush()
        return True

    def _progress_is_old(self) -> bool:
        return self.rnd.now_ms - self.written_ms >= PROGRESS_WRITE_MS

    def _finish_local(self, step: Step) -> list[Call]:
        """Records the calls that need no I/O (empty URL = success); returns the others."""
        remote = []
        for call in step.start:
            self.rnd.attempts[call.index] = self.rnd.attempts.get(call.index, 0) + 1
            if call.url:
                remote.append(call)
            else:
                self._record(call, _LOCAL_SUCCESS)
        return remote

    def _launch(self, calls: list[Call]) -> None:
        for call in calls:
            task = asyncio.get_running_loop().create_task(self.engine.invoker.call(self.rnd.trans, call))
            self.tasks[task] = call
            self.rnd.running.add(call.index)

    async def _call_alone(self, call: Call) -> None:
        running = self.rnd.running
        running.add(call.index)
        try:
            result = await self.engine.invoker.call(self.rnd.trans, call)
        finally:
            running.discard(call.index)
        self.rnd.now_ms = self.engine.clock.now_ms()
        self._record(call, result)

    async def _wait_one(self) -> None:
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        self.rnd.now_ms = self.engine.clock.now_ms()
        for task in done:
            call = self.tasks.pop(task)
            self.rnd.running.discard(call.index)
            self._record(call, task.result())

    def _record(self, call: Call, result: CallResult) -> None:
        rnd = self.rnd
        self.engine.metrics.branch_done(
            rnd.trans.trans_type, call.branch_id, call.op, result.outcome is Outcome.SUCCESS
        )
        rnd.outcomes[call.index] = result.outcome
        status = branch_status_after(self.kind, call, result.outcome)
        if status is not None:
            branch = rnd.branches[call.index].with_status(status, rnd.now_ms)
            rnd.branches[call.index] = branch
            self.pending[call.index] = branch
            if status is BranchStatus.FAILED:
                rnd.failure_reason = result.detail
        self._reschedule(result.outcome, moved=status is not None)
        if result.outcome is not Outcome.SUCCESS:
            self.last_error = result
            log.info("branch %s %s: %s", call.branch_id, call.op, result.detail, extra={"gid": rnd.trans.gid})
            if self.engine.alerter is not None:
                retries = retry_count(self.schedule.interval_ms, self.reset_ms)
                self.engine.alerter.branch_failing(rnd.trans.gid, rnd.trans.status, call.url, result.detail, retries)

    def _reschedule(self, outcome: Outcome, *, moved: bool) -> None:
        """DTM's rule: progress resets the interval, ONGOING keeps it, any error doubles it."""
        schedule = self.schedule
        if moved:
            schedule.interval_ms = self.reset_ms
        elif outcome is not Outcome.ONGOING:
            schedule.interval_ms *= 2
        schedule.next_cron_ms = self.rnd.now_ms + schedule.interval_ms
        schedule.dirty = True

    async def _transition(self, status: TransStatus, reason: str) -> None:
        trans = self.rnd.trans
        now = self.engine.clock.now_ms()
        await self._write(
            Change(
                gid=trans.gid,
                expected=trans.status,
                status=status,
                now_ms=now,
                branches=dict(self.pending),
                rollback_reason=reason,
                next_cron_ms=now + self.schedule.interval_ms,
                interval_ms=self.schedule.interval_ms,
            )
        )
        # The happy path is logged at debug: at thousands of transactions per second a line each costs.
        level = logging.DEBUG if status in (TransStatus.SUBMITTED, TransStatus.SUCCEED) else logging.INFO
        log.log(level, "%s -> %s %s", trans.status, status, reason, extra={"gid": trans.gid})

    async def _flush(self) -> None:
        trans = self.rnd.trans
        await self._write(
            Change(
                gid=trans.gid,
                expected=trans.status,
                status=trans.status,
                now_ms=self.engine.clock.now_ms(),
                branches=dict(self.pending),
                next_cron_ms=self.schedule.next_cron_ms,
                interval_ms=self.schedule.interval_ms,
            )
        )

    async def _write(self, change: Change) -> None:
        """One script: the change as a transition, or the transaction's `create` in its changed state."""
        trans = self.rnd.trans
        if self.created:
            if change.status is not trans.status:
                trans = trans.with_status(change.status, change.now_ms, change.rollback_reason)
            await self.engine.store.transition(change)
        else:
            assert change.next_cron_ms is not None and change.interval_ms is not None
            schedule = (change.next_cron_ms, change.interval_ms)
            trans = trans.with_status(change.status, change.now_ms, change.rollback_reason, schedule=schedule)
            try:
                existing = await self.engine.store.create(trans, self.rnd.branches)
                if existing is not None:
                    raise AlreadyExists(existing)
            except BaseException as exc:
                if self.stored is not None and not self.stored.done():
                    if isinstance(exc, asyncio.CancelledError):
                        self.stored.cancel()
                    else:
                        self.stored.set_exception(exc)
                raise
            self.created = True
            if self.stored is not None:
                self.stored.set_result(None)
        self.rnd.trans = trans
        self.pending.clear()
        self.schedule.dirty = False
        self.written_ms = change.now_ms
