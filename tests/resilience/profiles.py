"""How much load and how many faults one run of the resilience suite brings: this module owns the named
profiles (`short` for CI, `long` behind `--resilience-profile=long`) and the seed that reproduces a run."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Final

SEED_ENV: Final = "RESILIENCE_SEED"
PROFILE_ENV: Final = "RESILIENCE_PROFILE"


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Chances that one call to the bank misbehaves; a call key (gid, branch, op) misbehaves at most
    `max_per_op` times, so every transfer converges however unlucky the draw."""

    #: The call answers 500 (before or after applying, half each).
    error: float
    #: The call hangs past the node's request timeout (and then applies, or applied before, or never does).
    hang: float
    #: A transfer branch's action (saga) or try (tcc) is refused for business reasons (409), every time.
    business_failure: float
    max_per_op: int = 2
    #: Longer than the node's --request-timeout (3 s in tests/support/node.py).
    hang_s: float = 3.6


@dataclass(frozen=True, slots=True)
class Profile:
    """One run: `clients` threads submit transfers while the chaos schedule runs (at most `max_transfers`)."""

    name: str
    clients: int
    max_transfers: int
    #: A client's pause between two transfers: spreads the load over the whole chaos schedule.
    think_s: float
    node_kills: int
    sigterms: int
    master_kills: int
    pauses: int
    failovers: int
    #: Quiet time before each chaos event, so each fault hits transfers in flight, not the previous fault.
    gap_s: tuple[float, float]
    #: How long a killed fastdtm node stays down before it is restarted.
    down_s: tuple[float, float]
    #: How long a Redis master stays SIGSTOPped: past the nodes' lease TTL (1.5 s).
    pause_s: tuple[float, float]
    #: Bounded wait, after the load, for every transaction to finish.
    settle_s: float
    faults: FaultRates
    #: pytest-timeout for the whole test: load, chaos, settling, teardown.
    test_timeout_s: int


PROFILES: Final = {
    "short": Profile(
        name="short",
        clients=4,
        max_transfers=240,
        think_s=0.15,
        node_kills=2,
        sigterms=1,
        master_kills=1,
        pauses=1,
        failovers=1,
        gap_s=(1.0, 2.0),
        down_s=(0.5, 1.5),
        pause_s=(2.0, 2.0),
        settle_s=60.0,
        faults=FaultRates(error=0.05, hang=0.02, business_failure=0.06),
        test_timeout_s=240,
    ),
    "long": Profile(
        name="long",
        clients=6,
        # The chaos schedule (about 10 minutes here) ends the load, not this cap.
        max_transfers=12000,
        think_s=0.1,
        node_kills=36,
        sigterms=10,
        master_kills=10,
        pauses=10,
        failovers=10,
        gap_s=(3.0, 8.0),
        down_s=(0.5, 4.0),
        pause_s=(2.0, 4.0),
        settle_s=120.0,
        faults=FaultRates(error=0.06, hang=0.03, business_failure=0.06),
        test_timeout_s=1800,
    ),
}


def pick_profile(option: str | None) -> Profile:
    name = option or os.environ.get(PROFILE_ENV) or "short"
    if name not in PROFILES:
        raise ValueError(f"unknown resilience profile {name!r}; known: {sorted(PROFILES)}")
    return PROFILES[name]


def pick_seed(option: str | None) -> int:
    """The given seed (option, then env), else a fresh one: printed with the results to reproduce the run."""
    text = option or os.environ.get(SEED_ENV)
    return int(text) if text else random.SystemRandom().randrange(1, 1_000_000)
