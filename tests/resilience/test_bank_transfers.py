"""Issue 13's resilience run: transfers through three fastdtm nodes on a 3+3 Redis Cluster while the chaos
schedule kills, stops, pauses and fails over; then nothing acknowledged is lost, nothing is stuck, the money
adds up, and every transfer ended as its client and the bank's books say it must."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_toolchain
from tests.support.busi import BusiServer
from tests.support.redis_servers import RedisCluster, RedisUnavailable

from .bank_service import ChaosBank
from .chaos import Chaos
from .checks import judge, settle, summary
from .faults import FaultPlan
from .load import Load
from .nodes import NodePool
from .profiles import Profile

pytestmark = [pytest.mark.resilience, pytest.mark.cluster, pytest.mark.slow]

ACCOUNTS = 10
#: Once the chaos schedule is over, the load goes on this long: transfers that meet a healed system.
LOAD_TAIL_S = 2.0


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    """A private 3 masters + 3 replicas cluster: the suite kills its nodes, so it cannot be the shared one."""
    try:
        started = RedisCluster(masters=3, replicas=1)
    except RedisUnavailable as exc:
        missing_toolchain(str(exc))
    with started:
        yield started


@pytest.fixture
def bank(resilience_profile: Profile, resilience_seed: int) -> Iterator[tuple[ChaosBank, BusiServer]]:
    bank = ChaosBank(FaultPlan(resilience_seed, resilience_profile.faults), accounts=ACCOUNTS)
    server = BusiServer()
    bank.serve(server)
    try:
        yield bank, server
    finally:
        bank.close()
        server.close()


def test_transfers_survive_node_and_redis_faults(
    cluster: RedisCluster,
    bank: tuple[ChaosBank, BusiServer],
    resilience_profile: Profile,
    resilience_seed: int,
    tmp_path: Path,
    report: Callable[[str], None],
) -> None:
    profile, seed = resilience_profile, resilience_seed
    chaos_bank, server = bank
    print(f"resilience: profile {profile.name} seed {seed} (node logs in {tmp_path})")
    pool = NodePool(cluster.url, 3, tmp_path)
    load = Load(profile, seed, pool.bases, server.base, chaos_bank.plan, ACCOUNTS)
    chaos = Chaos(profile, seed, pool, cluster)
    try:
        chaos.start()
        load.start()
        chaos.done.wait(profile.test_timeout_s / 2)
        load.stop.wait(LOAD_TAIL_S)
        load.join(timeout=60)
        chaos.join(timeout=60)
        _heal(pool, cluster)
        final = settle(load.transfers, pool.bases, profile.settle_s)
    finally:
        load.stop.set()
        with contextlib.suppress(AssertionError):
            chaos.join(timeout=60)
        pool.close()
    verdict = judge(load.transfers, final, chaos_bank)
    text = summary(verdict, chaos_bank, chaos, profile.name, seed)
    report(text)
    problems = [f"load threads raised (a harness bug):\n{error}" for error in load.errors]
    problems += [f"the chaos schedule failed:\n{chaos.error}"] if chaos.error else []
    problems += [f"bank handlers raised:\n{error}" for error in server.errors]
    problems += verdict.failures()
    if problems:
        pytest.fail("\n".join([*problems, f"seed {seed}; node logs in {tmp_path}"]), pytrace=False)


def _heal(pool: NodePool, cluster: RedisCluster) -> None:
    """After a failed chaos step, bring everything back so settling measures the coordinator, not the fault."""
    cluster.heal()
    for slot in range(len(pool.ports)):
        if slot not in pool.up():
            pool.restart(slot)
