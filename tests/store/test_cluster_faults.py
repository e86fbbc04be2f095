"""The store's Redis Cluster client (`fastdtm.store.redis_client.Cluster`) through what a production cluster does
(issue 13), on a private 3 masters + 3 replicas cluster: a manual failover, `kill -9` of a master and the
promotion of its replica, a restart that comes back without the script cache, a slot migration in progress
(ASK, TRYAGAIN), a map read while slots had no owner yet, a frozen replica during a failover, a frozen master
until its replica takes over. Each test gets it emptied and healed (`cluster` in tests/store/conftest.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Final

import pytest
import redis

from fastdtm.sharding import slot_of
from fastdtm.store.redis import Script
from fastdtm.store.redis_client import Cluster, connect
from fastdtm.store.resp import NotSent, ReplyError, Timeouts
from tests.conftest import missing_toolchain
from tests.support.redis_servers import Address, RedisCluster, RedisUnavailable

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

#: A script the client loads on demand (NOSCRIPT) or up front: any of the store's.
TOUCHED: Final = Script("lease_renew")
#: Long enough for a promotion (node-timeout 2 s, then an election) inside one command's retries.
PATIENT: Final = Timeouts(retry=15.0)


@pytest.fixture
async def client(cluster: RedisCluster) -> AsyncIterator[Cluster]:
    client = connect(cluster.url, PATIENT, preload=[TOUCHED.source])
    assert isinstance(client, Cluster)
    try:
        await client.ready()
        yield client
    finally:
        await client.aclose()


def slot_ranges(cluster: RedisCluster) -> list[tuple[int, int, Address]]:
    host, port = cluster.live_nodes()[0]
    with redis.Redis(host=host, port=port, decode_responses=True) as control:
        ranges = control.execute_command("CLUSTER", "SLOTS")
    return [(int(first), int(last), (str(owner[0]), int(owner[1]))) for first, last, owner, *_ in ranges]


def keys_of(cluster: RedisCluster, master: Address, count: int = 1, prefix: str = "k") -> list[str]:
    """`count` keys whose slots `master` serves."""
    ranges = [(first, last) for first, last, owner in slot_ranges(cluster) if owner == master]
    found = (f"{prefix}{i}" for i in itertools.count())
    return list(itertools.islice((k for k in found if any(f <= slot_of(k) <= la for f, la in ranges)), count))


def everywhere(cluster: RedisCluster, per_master: int = 20) -> list[str]:
    return [k for master in cluster.masters() for k in keys_of(cluster, master, per_master)]


async def write_all(client: Cluster, keys: list[str], value: str) -> list[BaseException]:
    replies = await asyncio.gather(*(client.execute(k, "SET", k, value) for k in keys), return_exceptions=True)
    return [r for r in replies if isinstance(r, BaseException)]


class Traffic:
    """Commands over every master, `concurrency` at a time, until stopped: when each ended and how."""

    def __init__(self, client: Cluster, keys: list[str], concurrency: int = 20) -> None:
        self.client = client
        self.keys = keys
        self.done: list[tuple[float, float, str, BaseException | None]] = []  # (started, ended, key, error)
        self._stop = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._run(i)) for i in range(concurrency)]

    async def _run(self, worker: int) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            key = self.keys[(worker + n * 7) % len(self.keys)]
            started = time.monotonic()
            error: BaseException | None = None
            try:
                await TOUCHED.run(self.client, [key], ["nobody", 60_000])
                await self.client.execute(key, "SET", key, f"{worker}:{n}")
            except (ConnectionError, ReplyError) as exc:
                error = exc
            self.done.append((started, time.monotonic(), key, error))
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def errors(self, since: float = 0.0) -> list[BaseException]:
        return [e for started, _, _, e in self.done if e is not None and started >= since]

    def longest(self, since: float = 0.0) -> float:
        return max((ended - started for started, ended, _, _ in self.done if started >= since), default=0.0)

    def silent_gap(self, start: float, end: float) -> float:
        """The longest time within [start, end] in which no command completed, successfully or not."""
        ends = sorted(ended for _, ended, _, _ in self.done if start <= ended <= end)
        points = [start, *ends, end]
        return max(b - a for a, b in itertools.pairwise(points))


async def test_a_manual_failover_costs_no_command(cluster: RedisCluster, client: Cluster) -> None:
    traffic = Traffic(client, everywhere(cluster))
    await asyncio.sleep(0.5)
    master = cluster.masters()[0]

    promoted = await asyncio.to_thread(cluster.failover, master)
    await asyncio.sleep(1.0)
    await traffic.stop()

    assert traffic.errors() == []
    assert promoted in cluster.masters() and master not in cluster.masters()
    # The promoted node is where those slots' commands go now: one MOVED and the map was read again.
    assert client._slots[slot_of(keys_of(cluster, promoted)[0])] is client._nodes[f"{promoted[0]}:{promoted[1]}"]


async def test_kill_9_of_a_master_is_ridden_out_by_its_replica(cluster: RedisCluster, client: Cluster) -> None:
    """Only commands the dead master had received may fail (they may have run); every later one waits for the
    promotion and succeeds, scripts included: the promoted replica never loaded them."""
    victim = cluster.masters()[1]
    traffic = Traffic(client, everywhere(cluster))
    await asyncio.sleep(0.5)

    killed_at = time.monotonic()
    promoted = await asyncio.to_thread(cluster.kill_master, victim)
    await asyncio.sleep(1.0)
    await traffic.stop()

    in_flight = [e for s, _, _, e in traffic.done if e is not None and s < killed_at]
    assert all("connection lost" in str(e) for e in in_flight), in_flight
    assert traffic.errors(since=killed_at + 0.05) == []
    keys = keys_of(cluster, promoted, 5)
    assert await write_all(client, keys, "after") == []
    assert [await TOUCHED.run(client, [k], ["nobody", 1000]) for k in keys] == [0] * 5


async def test_a_node_back_from_a_crash_without_its_scripts_serves_them_once_promoted(
    cluster: RedisCluster, client: Cluster
) -> None:
    victim = cluster.masters()[2]
    key = keys_of(cluster, victim)[0]
    assert await TOUCHED.run(client, [key], ["nobody", 1000]) == 0
    await asyncio.to_thread(cluster.kill_master, victim)
    await asyncio.to_thread(cluster.restart, victim)  # empty: no AOF, no script cache
    with redis.Redis(host=victim[0], port=victim[1]) as control:
        assert control.script_exists(TOUCHED.sha) == [False]

    await asyncio.to_thread(cluster.failover, cluster.topology()[victim] or victim)

    assert victim in cluster.masters()
    assert await TOUCHED.run(client, [key], ["nobody", 1000]) == 0


async def test_a_slot_in_migration_is_followed_with_ask_and_waited_for_on_tryagain(
    cluster: RedisCluster, client: Cluster
) -> None:
    source, target = cluster.masters()[:2]
    tag = keys_of(cluster, source, prefix="m")[0]
    slot = slot_of(tag)
    moved, stays = f"{{{tag}}}:moved", f"{{{tag}}}:stays"
    await client.execute(moved, "SET", moved, "1")
    await client.execute(stays, "SET", stays, "2")
    source_id, target_id = (_node_id(node) for node in (source, target))
    with redis.Redis(*target) as on_target, redis.Redis(*source) as on_source:
        on_target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        on_source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        on_source.execute_command("MIGRATE", target[0], target[1], "", 0, 5000, "KEYS", moved)

        # A key already moved: the source answers ASK, the target serves it after ASKING.
        assert await client.execute(moved, "GET", moved) == "1"

        def finish_migration() -> None:
            time.sleep(0.5)
            on_source.execute_command("MIGRATE", target[0], target[1], "", 0, 5000, "KEYS", stays)
            for node in cluster.masters():
                with redis.Redis(*node) as each:
                    each.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

        # A command over both keys while they are split between the nodes: TRYAGAIN until the slot has moved.
        finishing = asyncio.ensure_future(asyncio.to_thread(finish_migration))
        started = time.monotonic()
        both = await client.execute(moved, "MGET", moved, stays)
        await finishing

    assert both == ["1", "2"]
    assert time.monotonic() - started >= 0.4  # it did wait for the migration, not fail
    assert await client.execute(stays, "GET", stays) == "2"


async def test_a_frozen_replica_does_not_stall_the_map_after_a_failover(cluster: RedisCluster) -> None:
    """The replica is the first node this client knows: a map read that waited for it would stop every
    command that needs the new map (it was 0 commands/s for 9 s)."""
    master, other = cluster.masters()[:2]
    frozen = cluster.replicas_of(other)[0]
    seeds = [frozen, *(n for n in cluster.startup_nodes if n != frozen)]
    url = "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in seeds)
    client = connect(url, PATIENT)
    assert isinstance(client, Cluster)
    try:
        await client.ready()
        traffic = Traffic(client, everywhere(cluster))
        await asyncio.sleep(0.3)
        cluster.pause(frozen)
        failed_over_at = time.monotonic()
        await asyncio.to_thread(cluster.failover, master)
        await asyncio.sleep(2.0)
        await traffic.stop()
        end = time.monotonic()
    finally:
        cluster.resume(frozen)
        await client.aclose()

    assert traffic.errors() == []
    assert traffic.silent_gap(failed_over_at, end) < 1.5
    assert traffic.longest(since=failed_over_at) < 2.5


async def test_a_frozen_master_costs_its_slots_until_the_replica_takes_over_not_the_reply_timeout(
    cluster: RedisCluster, client: Cluster
) -> None:
    """SIGSTOP: the master keeps accepting connections and answers nothing. Its replica is promoted after
    node-timeout; commands waiting on the frozen node are failed then (they may have run), later ones go to the
    new master. Nothing waits the 10 s reply timeout."""
    victim = cluster.masters()[0]
    replica = cluster.replicas_of(victim)[0]
    traffic = Traffic(client, everywhere(cluster))
    await asyncio.sleep(0.3)

    cluster.pause(victim)
    paused_at = time.monotonic()
    try:
        await asyncio.to_thread(_wait_until_master, cluster, replica, 20.0)
        promoted_at = time.monotonic()
        await asyncio.sleep(1.5)
        await traffic.stop()
    finally:
        cluster.resume(victim)

    assert traffic.longest(since=paused_at) < promoted_at - paused_at + 2.5
    waited_for_the_frozen_node = [e for e in traffic.errors(since=paused_at) if not isinstance(e, NotSent)]
    assert all(isinstance(e, ConnectionError) for e in waited_for_the_frozen_node), waited_for_the_frozen_node
    assert traffic.errors(since=promoted_at + 1.0) == []


async def test_a_map_read_while_slots_had_no_owner_is_read_again() -> None:
    """The client read CLUSTER SLOTS while the cluster was being set up: once the slots are assigned, their
    commands work at once (before: `no master serves the slot` forever)."""
    try:
        cluster = RedisCluster(formed=False)
    except RedisUnavailable as exc:
        missing_toolchain(str(exc))
    with cluster:
        cluster.form(skip_slots=100)
        client = connect(cluster.url, Timeouts(retry=0.3))
        assert isinstance(client, Cluster)
        try:
            unserved = next(k for k in (f"k{i}" for i in itertools.count()) if slot_of(k) >= 16384 - 100)
            with pytest.raises(NotSent, match=r"\d+ of 16384 slots have no master yet"):
                await client.ready()
            with pytest.raises((NotSent, ReplyError)):
                await client.execute(unserved, "SET", unserved, "early")

            cluster.add_slots(16384 - 100, 16383)
            await asyncio.to_thread(cluster.wait_healthy)

            await client.ready()
            assert await client.execute(unserved, "SET", unserved, "now") == "OK"
        finally:
            await client.aclose()


def _wait_until_master(cluster: RedisCluster, node: Address, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with redis.Redis(*node, socket_timeout=1) as control:
            if control.info("replication")["role"] == "master":
                return
        time.sleep(0.05)
    raise AssertionError(f"{node} was not promoted in {timeout} s")


def _node_id(node: Address) -> str:
    with redis.Redis(*node, decode_responses=True) as control:
        return str(control.execute_command("CLUSTER", "MYID"))
