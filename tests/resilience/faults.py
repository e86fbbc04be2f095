"""The bank's misbehaviour, drawn from the run's seed: this module owns which call to the bank answers 500,
hangs past the coordinator's request timeout, or is refused for business reasons. Each decision is a pure
function of (seed, gid, branch, op, attempt), so a seed replays the same faults whatever the thread timing."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from .profiles import FaultRates


class Fault(enum.StrEnum):
    NONE = "none"
    #: 500 and nothing applied: the service failed before its transaction.
    ERROR = "500"
    #: Applied, then 500: the service committed and crashed before answering.
    ERROR_AFTER_APPLY = "500-after-apply"
    #: Hangs past the timeout, then applies: a reply nobody reads any more, and a late write.
    HANG_THEN_APPLY = "hang-then-apply"
    #: Applies, then hangs past the timeout: the reply is lost, the write is not.
    APPLY_THEN_HANG = "apply-then-hang"
    #: Hangs past the timeout and applies nothing.
    HANG = "hang"


ERRORS = (Fault.ERROR, Fault.ERROR_AFTER_APPLY)
HANGS = (Fault.HANG_THEN_APPLY, Fault.APPLY_THEN_HANG, Fault.HANG)
#: Faults whose call waits before it is handled, and those that skip the handling altogether.
WAIT_FIRST = frozenset({Fault.HANG_THEN_APPLY, Fault.HANG})
NOT_APPLIED = frozenset({Fault.ERROR, Fault.HANG})


@dataclass(frozen=True, slots=True)
class FaultPlan:
    seed: int
    rates: FaultRates

    def fault(self, gid: str, branch: str, op: str, attempt: int) -> Fault:
        """The fault of the `attempt`-th call (0-based) of this (gid, branch, op)."""
        if attempt >= self.rates.max_per_op:
            return Fault.NONE
        draw = random.Random(f"{self.seed}/{gid}/{branch}/{op}/{attempt}")
        roll = draw.random()
        if roll < self.rates.error:
            return draw.choice(ERRORS)
        if roll < self.rates.error + self.rates.hang:
            return draw.choice(HANGS)
        return Fault.NONE

    def fails_business(self, gid: str, branch: str) -> bool:
        """Whether this transfer branch's action/try is refused (insufficient funds, say): always the same."""
        return random.Random(f"{self.seed}/{gid}/{branch}/business").random() < self.rates.business_failure
