"""Two-phase message: prepare, run the local transaction, then submit (or abort); branches only go forward.

Branch records: one `action` per step, branch_id ``%02d`` (i+1). A prepared message that outlives
its timeout is checked back through `query_prepared` (GET, branch_id ``00``, op ``msg``): SUCCESS
submits it, FAILURE fails it, anything else asks again later. Submitted branches run in order,
stopping at the first that does not succeed (or all at once with the `concurrent` option), and are
retried until they succeed: a FAILURE from a msg branch is not terminal (reference §6.2).
"""

from __future__ import annotations

from typing import ClassVar, Final

from fastdtm.errors import Invalid
from fastdtm.kinds.base import CHECK_BACK, Call, NoRegistration, Round, Step, Topics, is_timed_out
from fastdtm.models import MAX_BRANCHES, Branch, TransRequest, check_call_url
from fastdtm.states import BranchStatus, Op, Outcome, TransStatus
from fastdtm.wire import custom_data_object

TOPIC_SCHEME: Final = "topic://"


#: The longest msg delay, in seconds (a year): a later first delivery could not be scheduled or shown.
MAX_DELAY: Final = 365 * 86_400


def delay_seconds(custom_data: str) -> float:
    """`custom_data.delay`: seconds after creation before the branches may run."""
    delay = custom_data_object(custom_data).get("delay") or 0
    if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= MAX_DELAY:
        raise Invalid(f"custom_data.delay must be a number of seconds within 0..{MAX_DELAY}.")
    return float(delay)


def topic_name(url: str) -> str | None:
    """`topic://<name>` names a topic; anything else is a branch URL."""
    return url[len(TOPIC_SCHEME) :] if url.startswith(TOPIC_SCHEME) else None


class Msg(NoRegistration):
    failure_ends: ClassVar[frozenset[str]] = frozenset()

    def build(self, request: TransRequest, now_ms: int, topics: Topics) -> list[Branch]:
        delay_seconds(request.custom_data)
        if request.query_prepared:
            check_call_url(request.query_prepared, "query_prepared", request.protocol)
        branches = []
        for i, step in enumerate(request.steps):
            url = step.get(Op.ACTION, "")
            branch_id = f"{i + 1:02d}"
            topic = topic_name(url)
            if topic is None:
                check_call_url(url, f"steps[{i}].action", request.protocol)
                branches.append(Branch(branch_id, Op.ACTION, url, request.payload(i), now_ms))
                continue
            # A topic fans out to its subscribers as they are now: 01-01, 01-02, ... (01 if just one).
            urls = topics.get(topic) or []
            if not urls:
                raise Invalid("topic not found")  # DTM's text
            if len(branches) + len(urls) > MAX_BRANCHES:
                raise Invalid(f"a msg has at most {MAX_BRANCHES} branches, its topics' subscribers included.")
            for j, sub in enumerate(urls):
                sub_id = branch_id if len(urls) == 1 else f"{branch_id}-{j + 1:02d}"
                branches.append(Branch(sub_id, Op.ACTION, sub, request.payload(i), now_ms))
        return branches

    def step(self, rnd: Round) -> Step:
        if rnd.trans.status is TransStatus.PREPARED:
            return self._check_back(rnd)
        if rnd.trans.status is TransStatus.SUBMITTED:
            return self._deliver(rnd)
        return Step()

    def _check_back(self, rnd: Round) -> Step:
        outcome = rnd.finished_with(CHECK_BACK)
        if outcome is Outcome.SUCCESS:
            return Step(status=TransStatus.SUBMITTED)
        if outcome is Outcome.FAILURE:
            return Step(status=TransStatus.FAILED)  # no rollback reason, as DTM
        trans = rnd.trans
        if CHECK_BACK in rnd.attempts or not trans.query_prepared or not is_timed_out(rnd, default_applies=True):
            return Step()
        return Step(start=(Call(CHECK_BACK, "00", Op.MSG, trans.query_prepared, ""),))

    def _deliver(self, rnd: Round) -> Step:
        wake_at = rnd.trans.create_ms + int(delay_seconds(rnd.trans.custom_data) * 1000)
        if rnd.now_ms < wake_at:
            return Step(wake_at_ms=wake_at)
        if all(b.status is BranchStatus.SUCCEED for b in rnd.branches):
            return Step(status=TransStatus.SUCCEED)
        if any(o is not Outcome.SUCCESS for o in rnd.outcomes.values()):
            return Step()  # a branch did not succeed: the cron retries it
        pending = [
            Call.of(i, b)
            for i, b in enumerate(rnd.branches)
            if b.status is BranchStatus.PREPARED and i not in rnd.attempts
        ]
        if rnd.trans.options.concurrent:
            return Step(start=tuple(pending))
        return Step() if rnd.running or not pending else Step(start=(pending[0],))
