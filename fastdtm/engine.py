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

A round acts only on a transaction it holds (`lua/take.lua`): its `create`, a `take` (the cron, a
repeated submit or abort) or a `take_over` (the submit or abort of a prepared one) records its token as
the holder, with a hold until a given time; each of its writes names the token (refused once another
round took the transaction) and moves the hold's end. No branch call is sent after the hold's `fence`:
the hold's end as this node's clock reads it, counted from when the write that set it was *sent* (its
reply may come late), less the clock skew allowed between nodes. Past it the round proves it still holds
the transaction with one write (which also carries the results not yet written) before calling on; the
branch client checks the fence again just before it writes the request, with no `await` in between. So a
paused node (a stall, a frozen VM, a slow store) can finish a call it had sent, and write nothing after
it, but never start one on a transaction it lost. See docs/architecture.md, "Failure model".
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastdtm.alerts import Alerter, retry_count
from fastdtm.branch_http import NotSent
from fastdtm.clock import Clock
from fastdtm.drain import HAND_BACK_TIMEOUT, finish_or_cancel
from fastdtm.errors import AlreadyExists, Fenced, Held, Stale, StoreError, TransNotFound
from fastdtm.grpc_syntax import is_http_url
from fastdtm.invoker import UNKNOWN_RESULT, CallResult, Invoker
from fastdtm.kinds import kind_for
from fastdtm.kinds.base import (
    CHECK_BACK,
    Call,
    Kind,
    Policy,
    Round,
    Step,
    backoff_ms,
    branch_status_after,
    reset_interval_ms,
)
from fastdtm.metrics import Metrics
from fastdtm.models import Branch, Transaction
from fastdtm.notes import error_field
from fastdtm.states import GRPC, HTTP, TERMINAL, BranchStatus, Outcome, TransStatus
from fastdtm.store.base import Change, Store

log = logging.getLogger(__name__)

#: A round that has not written for this long writes its branch results before calling on: a long
#: round records its progress as it goes, a quick one writes them with its final status.
PROGRESS_WRITE_MS = 1000

#: The result of a call with an empty URL: DTM counts it a success without calling anything.
_LOCAL_SUCCESS = CallResult(Outcome.SUCCESS, "empty url")

#: Writes a round tries in a row to prove its hold before a call (each one's reply came after the fence it
#: set: a store slower than the hold is long); then it stops, and the cron resumes the transaction.
HOLD_PROOF_ATTEMPTS = 3


@dataclass(slots=True)
class Claim:
    """A transaction a round may act on: as read when it was taken, the token its writes name, and
    `fence`, the `time.monotonic()` after which no branch call is sent without proving the hold again.
    created=False: not stored yet, the round's first write is its `create`."""

    trans: Transaction
    branches: list[Branch]
    holder: str
    fence: float = -math.inf
    created: bool = True


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
        *,
        max_clock_skew_ms: int = 500,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.alerter = alerter
        self.invoker = invoker
        self.policy = policy
        self.clock = clock
        #: How far another node's clock may run ahead of this one's: a hold ends this much sooner here.
        self.skew_ms = max_clock_skew_ms
        self._holder_prefix = f"{secrets.token_hex(6)}."
        self._holders = itertools.count(1)
        #: gids with a round running on this node: the cron does not start a second one here.
        self._active: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        #: True once the node stops: a round cancelled from then on hands its transaction back.
        self.closing = False

    def hold_ms(self, interval_ms: int) -> int:
        """How long a round's write holds the transaction: its retry interval (also when the cron would
        resume it), and at least twice the skew, so that a hold always leaves the round time to call."""
        return max(interval_ms, 2 * self.skew_ms)

    def fence(self, sent: float, sent_ms: int, held_until_ms: int) -> float:
        """The `time.monotonic()` after which a hold until `held_until_ms` may have ended for another node,
        for a write sent at monotonic time `sent` and wall time `sent_ms`: however late its reply comes.

        Not the loop's time: uvloop's is cached per loop iteration, so a long iteration (a GC pause) would
        make it read early."""
        return sent + (held_until_ms - sent_ms - self.skew_ms) / 1000

    async def run(
        self, claim: Claim, *, stored: asyncio.Future[None] | None = None, reserved: bool = False
    ) -> RoundResult:
        """One round on a claimed transaction; none if this node already runs one for the gid.

        claim.created=False: the transaction is not in the store yet (see `start`); `stored`, if given,
        resolves once it is, or fails with whatever kept it from being stored. reserved=True: the caller
        marked the gid active for this round already (`_reserve`); the round releases it either way.
        """
        gid = claim.trans.gid
        active = self._active
        if not reserved:
            if gid in active:
                return RoundResult(claim.trans, completed=False)
            # _reserve and _release spelled out: every round of the hot path passes here.
            active.add(gid)
            self.metrics.rounds_in_flight(len(active))
        ok = False
        try:
            result = await _Runner(self, claim, stored).run()
            ok = result.completed and result.last_error is None  # DTM's: no error; ONGOING counts as fail
            return result
        finally:
            active.discard(gid)
            self.metrics.rounds_in_flight(len(active))
            trans = claim.trans
            self.metrics.round_done(trans.trans_type, ok, (self.clock.now_ms() - trans.create_ms) / 1000)

    def _reserve(self, gid: str) -> None:
        self._active.add(gid)
        self.metrics.rounds_in_flight(len(self._active))

    def _release(self, gid: str) -> None:
        self._active.discard(gid)
        self.metrics.rounds_in_flight(len(self._active))

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
        claim = Claim(trans, branches, self.new_holder(), created=False)
        if wait:
            return await self.run(claim)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Reserved now, not when the task starts: a second submit of this gid arriving before then must
        # see a round running (and create nothing) rather than start another one.
        self._reserve(trans.gid)
        self.spawn(claim, stored=stored, reserved=True)
        await stored
        return None

    def spawn(self, claim: Claim, *, stored: asyncio.Future[None] | None = None, reserved: bool = False) -> None:
        """Run a round in the background; a failure is logged and left to the cron."""
        run = functools.partial(self.run, claim, stored=stored, reserved=reserved)
        self._background_task(claim.trans.gid, run, stored)

    def _background_task(
        self, gid: str, work: Callable[[], Awaitable[object]], stored: asyncio.Future[None] | None = None
    ) -> None:
        # The coroutine is made inside the task: a task cancelled before it starts leaves none unawaited.
        task = asyncio.get_running_loop().create_task(self._logged(gid, work, stored))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def take(self, gid: str) -> Claim | None:
        """Take a transaction no round holds, for one retry interval; None if absent or finished.
        Raises Held if another round holds it."""
        holder = self.new_holder()
        sent, now = time.monotonic(), self.clock.now_ms()
        taken = await self.store.take(gid, now, now + self.hold_ms(self.policy.retry_interval_ms), holder)
        if taken is None:
            return None
        return Claim(taken.trans, taken.branches, holder, self.fence(sent, now, taken.held_until_ms))

    async def take_over(self, change: Change) -> Claim:
        """The status change that hands a prepared transaction to a new round (see Store.take_over)."""
        holder = self.new_holder()
        sent, now = time.monotonic(), self.clock.now_ms()
        taken = await self.store.take_over(change, holder)
        return Claim(taken.trans, taken.branches, holder, self.fence(sent, now, taken.held_until_ms))

    def new_holder(self) -> str:
        """A token no other round has: this engine's random prefix and a counter (unique, unlike a
        counter kept in the store, even when a failover loses the write that recorded the last one)."""
        return f"{self._holder_prefix}{next(self._holders):x}"

    async def advance(self, gid: str) -> RoundResult | None:
        """Take and run one round (the cron's entry point, and a repeated submit's or abort's); None if
        there is nothing to do here: a round of this node or another holds it, or it is finished."""
        if gid in self._active:
            return None
        self._reserve(gid)  # before the take: no other round of this node starts meanwhile
        try:
            claim = await self.take(gid)
        except Held:
            claim = None
        except BaseException:
            self._release(gid)
            raise
        if claim is None:
            self._release(gid)
            return None
        return await self.run(claim, reserved=True)

    def advance_later(self, gid: str) -> None:
        """`advance` in the background; a failure is logged and left to the cron."""
        self._background_task(gid, functools.partial(self.advance, gid))

    async def _logged(
        self, gid: str, work: Callable[[], Awaitable[object]], stored: asyncio.Future[None] | None
    ) -> None:
        try:
            await work()
        except StoreError as exc:
            if stored is not None and stored.done() and not stored.cancelled() and stored.exception() is exc:
                return  # its create failed (the gid is taken, by another type...): the caller reports it
            log.warning("round stopped: %s; the cron will resume it", exc, extra={"gid": gid})
        except Exception:
            log.exception("round failed; the cron will resume it", extra={"gid": gid})
        finally:
            if stored is not None and not stored.done():
                # Stopped before its first write (the caller reports the failure): nothing stored.
                stored.set_exception(StoreError(f"transaction '{gid}' was not stored"))

    async def close(self, deadline: float) -> None:
        """Let background rounds finish until `deadline` (time.monotonic()), then cancel the rest; each hands
        its transaction back as it stops (`_Runner.run`)."""
        self.closing = True
        await finish_or_cancel(self._background, deadline)


class _Runner:
    """The state of one round: the kind's view plus unrecorded branch results, the schedule and the hold."""

    def __init__(self, engine: Engine, claim: Claim, stored: asyncio.Future[None] | None = None) -> None:
        self.engine = engine
        trans = claim.trans
        #: The token every write names.
        self.holder = claim.holder
        #: False until the transaction is in the store: the first write is then its `create`.
        self.created = claim.created
        #: time.monotonic() after which the hold must be proved again before a call (Engine.fence).
        self.fence = claim.fence
        self.stored = stored
        self.kind: Kind = kind_for(trans.trans_type)
        now = engine.clock.now_ms()
        self.rnd = Round(trans, list(claim.branches), now, engine.policy)
        self.reset_ms = reset_interval_ms(trans.options, engine.policy)
        interval = trans.next_cron_interval_ms or self.reset_ms
        self.schedule = _Schedule(interval, now + interval)
        self.pending: dict[int, Branch] = {}
        #: When the round last wrote (or began), in ms.
        self.written_ms = now
        self.tasks: dict[asyncio.Task[CallResult], Call] = {}
        #: A call awaited alone was cancelled mid-way (the node is stopping).
        self.cut_off_call = False
        self.last_error: CallResult | None = None
        #: The last error of each branch called this round, as hash fields (`notes.error_field`), until written.
        self.error_fields: dict[str, str] = {}
        #: A call ended in an error (or a branch in ONGOING): the round ends as a retry (the console's view).
        self.retrying = False
        self.loop = asyncio.get_running_loop()

    async def run(self) -> RoundResult:
        try:
            completed = await self._loop()
        except (Stale, Fenced, TransNotFound) as exc:
            # Another writer (forceStop, another round) moved the transaction first: stand down.
            log.info("round stopped: %s", exc, extra={"gid": self.rnd.trans.gid})
            completed = False
        except asyncio.CancelledError as cancelled:
            if self.engine.closing and self.created:
                await self._hand_back()
            # Named, not a bare `raise`: compiled by mypyc, a bare raise after an await in the handler re-raised
            # a lost exception and crashed the process (docs/compiled.md).
            raise cancelled
        finally:
            for task in self.tasks:
                task.cancel()
        return RoundResult(self.rnd.trans, self.last_error, completed)

    async def _hand_back(self) -> None:
        """The node is stopping and cut this round short: write what it learnt and release the hold, the
        transaction due again at once, so another node's cron resumes it within a tick instead of when the
        hold ends. With a branch call cut off mid-way it is due when that call would have timed out, so the
        branch is not called twice at the same time. Best effort: if the write fails, the hold ends as usual."""
        calling = bool(self.tasks) or self.cut_off_call
        for task in self.tasks:
            task.cancel()
        now = self.engine.clock.now_ms()
        timeout_ms = int(1000 * self.engine.invoker.timeout(self.rnd.trans)) if calling else 0
        self.schedule.next_cron_ms = now + timeout_ms
        try:
            await asyncio.wait_for(self._flush(final=True), HAND_BACK_TIMEOUT)
        except (StoreError, TimeoutError) as exc:
            log.info("could not hand the round back (%s): it resumes when its hold ends", exc)
        else:
            log.info("round cut short by the stop: handed back", extra={"gid": self.rnd.trans.gid})

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
            if remote and self._must_write_first(step.record_first):
                await self._write_before_calls(step.record_first)
            if len(remote) == 1 and not self.tasks:
                # The usual case (a sequential saga, a two-phase commit): one call, nothing else
                # running, so await it here rather than through a task and asyncio.wait.
                await self._call_alone(remote[0])
                continue
            self._launch(remote)
            if not self.tasks:
                break
            await self._wait_one()
        if self.pending or self.schedule.dirty or not self.created or self.error_fields:
            await self._flush(final=True, attention=str(self.rnd.now_ms) if self.retrying else "-")
        return True

    def _must_write_first(self, record_first: bool) -> bool:
        """Whether calls may go out only after a write: the transaction is not stored yet, results they
        depend on are not, or the round is past its fence (it may have lost the transaction).

        Results otherwise wait for the round's next write (a status change, a pause, its end); a round
        that has not written for PROGRESS_WRITE_MS writes them before calling on (/query shows its
        progress, a crash re-runs little), and so does one whose step needs them recorded first.
        """
        # A transaction not stored yet has no fence (-inf): it is written first either way.
        return time.monotonic() >= self.fence or self._results_due(record_first)

    def _results_due(self, record_first: bool) -> bool:
        """The transaction, or results the next calls depend on, must be written before they go out."""
        return not self.created or (bool(self.pending) and (record_first or self._progress_is_old()))

    async def _write_before_calls(self, record_first: bool) -> None:
        """The write `_must_write_first` asks for; past the fence it proves the hold (it names the token)
        and extends it, again if even its reply came after the new fence."""
        if self._results_due(record_first):
            await self._flush()
        for _ in range(HOLD_PROOF_ATTEMPTS):
            if time.monotonic() < self.fence:
                return
            await self._flush()
        if time.monotonic() >= self.fence:
            raise StoreError(f"the store answered too late to prove the hold {HOLD_PROOF_ATTEMPTS} times in a row")

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

    def _not_sent(self, call: Call) -> None:
        """A call the fence kept from going out: as if never started, so the kind starts it again."""
        attempts = self.rnd.attempts
        attempts[call.index] -= 1
        if not attempts[call.index]:
            del attempts[call.index]

    def _launch(self, calls: list[Call]) -> None:
        for call in calls:
            coro = self.engine.invoker.call(self.rnd.trans, call, self.fence)
            task = self.loop.create_task(coro)
            self.tasks[task] = call
            self.rnd.running.add(call.index)

    async def _call_alone(self, call: Call) -> None:
        running = self.rnd.running
        running.add(call.index)
        try:
            result = await self.engine.invoker.call(self.rnd.trans, call, self.fence)
        except NotSent:
            self._not_sent(call)
            return
        except asyncio.CancelledError:
            self.cut_off_call = True  # it may still run at the branch: see _hand_back
            raise
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
            try:
                result = task.result()
            except NotSent:
                self._not_sent(call)
                continue
            self._record(call, result)

    def _record(self, call: Call, result: CallResult) -> None:
        rnd = self.rnd
        protocol = GRPC if call.url and not is_http_url(call.url) else HTTP
        self.engine.metrics.branch_done(
            rnd.trans.trans_type, call.branch_id, call.op, result.outcome is Outcome.SUCCESS, protocol, result.seconds
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
            if call.index != CHECK_BACK:
                shown = result.detail.removeprefix(UNKNOWN_RESULT)  # DTM's preamble says nothing here
                name, value = error_field(call.index, rnd.now_ms, result.outcome, result.code, shown)
                self.error_fields[name] = value
            # A msg's check-back answering ONGOING is its client still deciding, not a fault.
            self.retrying |= result.outcome is Outcome.ERROR or (
                result.outcome is Outcome.ONGOING and call.index != CHECK_BACK
            )
            log.info(
                "branch %s %s %s: %s", call.branch_id, call.op, call.url, result.detail, extra={"gid": rnd.trans.gid}
            )
            if self.engine.alerter is not None:
                retries = retry_count(self.schedule.interval_ms, self.reset_ms)
                self.engine.alerter.branch_failing(rnd.trans.gid, rnd.trans.status, call.url, result.detail, retries)

    def _reschedule(self, outcome: Outcome, *, moved: bool) -> None:
        """DTM's rule: progress resets the interval, ONGOING keeps it, any error doubles it."""
        schedule = self.schedule
        if moved:
            schedule.interval_ms = self.reset_ms
        elif outcome is not Outcome.ONGOING:
            schedule.interval_ms = backoff_ms(schedule.interval_ms, self.reset_ms)
        schedule.next_cron_ms = self.rnd.now_ms + schedule.interval_ms
        schedule.dirty = True

    async def _transition(self, status: TransStatus, reason: str) -> None:
        trans = self.rnd.trans
        now = self.engine.clock.now_ms()
        interval = self.schedule.interval_ms
        # A round goes on after a status change (aborting: the compensations), so it keeps its hold.
        held_until = 0 if status in TERMINAL else now + self.engine.hold_ms(interval)
        await self._write(
            Change(
                gid=trans.gid,
                expected=trans.status,
                status=status,
                now_ms=now,
                branches=dict(self.pending),
                rollback_reason=reason,
                fields=self.error_fields,
                next_cron_ms=held_until or now + interval,
                interval_ms=interval,
                holder=self.holder,
                held_until_ms=held_until,
            )
        )
        if status in TERMINAL:
            self.engine.metrics.finished(trans.trans_type, status)
        # The happy path is logged at debug: at thousands of transactions per second a line each costs.
        level = logging.DEBUG if status in (TransStatus.SUBMITTED, TransStatus.SUCCEED) else logging.INFO
        log.log(level, "%s -> %s %s", trans.status, status, reason, extra={"gid": trans.gid})

    async def _flush(self, *, final: bool = False, attention: str = "") -> None:
        """Write the pending results; a round going on keeps its hold (and proves it), a round that is over
        (final) releases it and leaves the transaction scheduled for its next retry. `attention`: Change's."""
        trans = self.rnd.trans
        now = self.engine.clock.now_ms()
        schedule = self.schedule
        if final:
            next_cron, held_until = schedule.next_cron_ms, 0
        else:
            next_cron = held_until = now + self.engine.hold_ms(schedule.interval_ms)
        await self._write(
            Change(
                gid=trans.gid,
                expected=trans.status,
                status=trans.status,
                now_ms=now,
                branches=dict(self.pending),
                fields=self.error_fields,
                next_cron_ms=next_cron,
                interval_ms=schedule.interval_ms,
                holder=self.holder,
                held_until_ms=held_until,
                attention=attention,
            )
        )

    async def _write(self, change: Change) -> None:
        """One script: the change as a transition, or the transaction's `create` in its changed state."""
        trans = self.rnd.trans
        # Measured as the write goes out (change.now_ms was read just before, with no await in between):
        # its reply, however late, says nothing about how long ago the hold it sets began.
        sent = time.monotonic()
        if self.created:
            if change.status is not trans.status:
                trans = trans.with_status(change.status, change.now_ms, change.rollback_reason)
            await self.engine.store.transition(change)
        else:
            assert change.next_cron_ms is not None and change.interval_ms is not None
            schedule = (change.next_cron_ms, change.interval_ms)
            trans = trans.with_status(change.status, change.now_ms, change.rollback_reason, schedule=schedule)
            try:
                holder = self.holder if change.held_until_ms else ""
                existing = await self.engine.store.create(trans, self.rnd.branches, holder=holder)
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
        held_until = change.held_until_ms
        self.fence = self.engine.fence(sent, change.now_ms, held_until) if held_until else -math.inf
        self.rnd.trans = trans
        self.pending.clear()
        if self.error_fields:
            self.error_fields = {}  # not cleared in place: the Change just written holds this dict
        self.schedule.dirty = False
        self.written_ms = change.now_ms
