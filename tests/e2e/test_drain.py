"""A node stops gracefully on SIGTERM, as Kubernetes stops a pod (issue 16, item 3): it releases its shard
leases at once, lets the rounds it runs finish within `--drain-timeout`, hands back any it must cut short
(due again at once, or when a call cut off mid-way would have timed out), and exits well within the grace
period. The timings these tests print are the ones docs/deploy.md ("Stopping") quotes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from tests.e2e.test_recovery import lease_holders, sync_client, wait_for
from tests.support.busi import BusiServer, Call, Reply
from tests.support.hold_start_up.sitecustomize import HELD
from tests.support.node import (
    DEFAULT_COMMAND,
    REPO_ROOT,
    FastdtmNode,
    NodeFactory,
    node_env,
    query,
    wait_status,
    with_default_timings,
)
from tests.support.processes import LoggedProcess
from tests.support.redis_servers import HOST, RedisServer, free_ports

#: Standalone Redis is enough: the drain is the same on every Redis store.
ON_REDIS = pytest.mark.parametrize("redis_url", ["redis"], indirect=True)


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis | RedisCluster]:
    client = sync_client(redis_url)
    yield client
    client.close()


def submit_saga(node: FastdtmNode, busi: BusiServer, gid: str) -> None:
    body = {
        "gid": gid,
        "trans_type": "saga",
        "steps": [{"action": busi.url("/slow"), "compensate": busi.url("/undo")}],
        "payloads": ["{}"],
    }
    reply = httpx.post(f"{node.dtm}/submit", json=body, timeout=5)
    assert reply.status_code == 200, reply.text


def slow_branch(busi: BusiServer, delay: float, *, only_first: bool = False) -> threading.Event:
    """/slow answers after `delay` (its first call only, with only_first); the event is set by the first call."""
    called = threading.Event()

    def reply(call: Call) -> Reply:
        called.set()
        late = not only_first or len(busi.calls("/slow")) == 1
        return Reply(200, delay=delay if late else 0.0)

    busi.on("/slow", reply)
    return called


def two_nodes(
    node_factory: NodeFactory, redis_url: str, store: redis.Redis | RedisCluster, *args: str
) -> tuple[FastdtmNode, FastdtmNode]:
    """A node that will be stopped and one that stays, sharing the shards."""
    leaving = node_factory(redis_url, *args, env={"FASTDTM_NODE_ID": "leaving"})
    staying = node_factory(redis_url, *args, env={"FASTDTM_NODE_ID": "staying"})
    wait_for(lambda: lease_holders(store)["leaving"] > 0, 10, "the two nodes share the shards")
    return leaving, staying


def owners(store: redis.Redis | RedisCluster) -> int:
    """How many nodes hold shard leases; 0 while any shard is free."""
    holders = lease_holders(store)
    return 0 if holders["-"] else len(holders)


def sigterm(node: FastdtmNode) -> float:
    os.kill(node.pid, signal.SIGTERM)
    return time.monotonic()


def wait_exit(node: FastdtmNode, timeout: float) -> float:
    """Wait for a clean exit: the whole shutdown done, then (as uvicorn does) the process ends by the signal."""
    wait_for(lambda: not node.alive(), timeout, f"node still running:\n{node.log_text()[-3000:]}")
    exited = time.monotonic()
    assert node.returncode in (0, -signal.SIGTERM), node.log_text()[-3000:]
    assert "Application shutdown complete" in node.log_text(), node.log_text()[-3000:]
    return exited


@ON_REDIS
def test_sigterm_releases_the_leases_at_once_and_lets_the_running_round_finish(
    node_factory: NodeFactory, redis_url: str, busi: BusiServer, store: redis.Redis | RedisCluster
) -> None:
    # A retry interval far longer than the test: a transaction finishes here only by a round that ran on.
    leaving, staying = two_nodes(node_factory, redis_url, store, "--retry-interval", "60", "--drain-timeout", "10")
    started = slow_branch(busi, 2.0)
    submit_saga(leaving, busi, "drain-finish")
    assert started.wait(5)
    signalled = sigterm(leaving)

    wait_for(lambda: lease_holders(store)["leaving"] == 0, 3, "the stopping node released its leases")
    released = time.monotonic() - signalled
    wait_for(lambda: lease_holders(store)["staying"] == 256, 5, "the other node took every shard")
    taken = time.monotonic() - signalled
    exited = wait_exit(leaving, 10) - signalled

    # The round was not cut short: the branch's 2 s reply was recorded by the stopping node itself.
    assert query(staying, "drain-finish")["transaction"]["status"] == "succeed"
    assert len(busi.calls("/slow")) == 1
    assert "draining" in leaving.log_text()
    assert released < 1.5 and exited < 4.0, (released, exited)
    print(f"\nSIGTERM -> leases released {released:.2f} s, all shards elsewhere {taken:.2f} s, exit {exited:.2f} s")


@ON_REDIS
def test_a_round_cut_short_by_the_drain_timeout_is_handed_back(
    node_factory: NodeFactory, redis_url: str, busi: BusiServer, store: redis.Redis | RedisCluster
) -> None:
    # Holds last the retry interval (60 s): without the hand-back the other node would wait that long.
    args = ("--retry-interval", "60", "--request-timeout", "2", "--drain-timeout", "0.5")
    leaving, staying = two_nodes(node_factory, redis_url, store, *args)
    started = slow_branch(busi, 1.5, only_first=True)
    submit_saga(leaving, busi, "drain-cut")
    assert started.wait(5)
    signalled = sigterm(leaving)
    exited = wait_exit(leaving, 6) - signalled

    reply = wait_status(staying, "drain-cut", {"succeed"}, timeout=10)
    finished = time.monotonic() - signalled
    assert "handed back" in leaving.log_text(), leaving.log_text()[-3000:]
    # Due again when the call cut off would have timed out (2 s), not when the 60 s hold would have ended;
    # and not before: the branch is not called twice at once.
    calls = busi.calls("/slow")
    assert len(calls) == 2 and calls[1].at - calls[0].at >= 2.0, [c.at for c in calls]
    assert exited < 3.5 and finished < 8.0, (exited, finished)
    assert reply["transaction"]["status"] == "succeed"
    print(f"\nSIGTERM -> exit {exited:.2f} s (drain timeout 0.5 s), finished by the other node {finished:.2f} s")


@ON_REDIS
@pytest.mark.parametrize("workers", [1, 2])
def test_a_node_stops_promptly_with_nothing_running(
    node_factory: NodeFactory, redis_url: str, store: redis.Redis | RedisCluster, workers: int
) -> None:
    node = node_factory(redis_url, "--workers", str(workers))
    # The node answers /api/ready as soon as one worker serves, while another may still be starting: a
    # SIGTERM then reaches that one before its drain watches the signal (uvicorn's own handler takes it, and
    # the lifespan's end drains it as a plain "stop requested"), which is the start-up case, not this one.
    # So: every worker past its start-up (uvicorn says so once the lifespan, signal watch included, is up),
    # and each one holding leases, so that "every lease released" is said of every worker.
    started = "Application startup complete"
    wait_for(lambda: node.log_text().count(started) == workers, 10, f"{workers} worker(s) serving")
    wait_for(lambda: owners(store) == workers, 10, "every worker holds shards, and no shard is free")
    signalled = sigterm(node)
    exited = wait_exit(node, 5) - signalled
    assert exited < 2.0, exited
    # Each worker process is a node of its own, and each one drained.
    assert node.log_text().count("SIGTERM: draining") == workers, node.log_text()[-3000:]
    assert lease_holders(store)["-"] == 256  # every lease released, none left to expire
    print(f"\nidle node, {workers} worker(s): SIGTERM -> exit {exited:.2f} s")


@ON_REDIS
def test_a_sigterm_while_the_workers_start_stops_them_as_promptly(
    redis_url: str, store: redis.Redis | RedisCluster, tmp_path: Path
) -> None:
    """SIGTERM reaching workers still in their start-up, before their drain watches the signal (in CI, the second
    of two workers was that slow once): uvicorn's handler takes it, the worker ends its start-up, and the end of
    the lifespan drains it ("stop requested"). It stops as promptly as a serving one, every lease released.
    Each worker is held at that very moment (tests/support/hold_start_up) until the signal has reached it."""
    release = tmp_path / "release"
    hold = os.pathsep.join([str(REPO_ROOT / "tests" / "support" / "hold_start_up"), str(REPO_ROOT)])
    port, grpc_port = free_ports(2)
    argv = [*DEFAULT_COMMAND, "serve", "--store", redis_url, "--host", HOST, "--port", str(port)]
    argv += ["--grpc-port", str(grpc_port), *with_default_timings(["--workers", "2"])]
    env = node_env({"HOLD_START_UP": str(release), "PYTHONPATH": hold})
    process = LoggedProcess(argv, log_path=tmp_path / "node.log", cwd=tmp_path, env=env)
    try:
        wait_for(lambda: process.log_text().count(HELD) == 2, 20, f"workers held:\n{process.log_tail()}")
        os.kill(process.pid, signal.SIGTERM)
        # The supervisor has sent each worker its SIGTERM once it says so; the handler of a worker held in a
        # sleep runs as the signal arrives, before the worker can see the release.
        forwarded = "Terminated child process"
        wait_for(lambda: process.log_text().count(forwarded) == 2, 5, f"signal passed on:\n{process.log_tail()}")
        release.touch()
        released = time.monotonic()
        wait_for(lambda: not process.alive(), 5, f"node still running:\n{process.log_tail()}")
        exited = time.monotonic() - released
    finally:
        release.touch()  # a held worker would not stop before that: none must outlive the test
        process.stop(grace=5.0)
    log = process.log_text()
    assert process.returncode in (0, -signal.SIGTERM), process.log_tail()
    assert log.count("stop requested: draining") == 2 and "SIGTERM: draining" not in log, process.log_tail()
    assert log.count("Application shutdown complete") == 2, process.log_tail()
    assert exited < 2.0, exited
    assert lease_holders(store)["-"] == 256  # whatever a worker took in its last moments, it gave back
    print(f"\nSIGTERM during start-up, 2 workers: exit {exited:.2f} s after the start-up went on")


@pytest.mark.parametrize("fault", ["killed", "frozen"])
def test_a_node_stops_within_its_grace_period_when_redis_is_gone(
    node_factory: NodeFactory, busi: BusiServer, fault: str
) -> None:
    """The drain's every store call is bounded: with Redis dead (connections refused) or frozen (nothing
    answers), a node with a round running still exits well within Kubernetes' grace period (30 s)."""
    with RedisServer() as server:
        node = node_factory(server.url, "--retry-interval", "60", "--redis-reply-timeout", "30")
        started = slow_branch(busi, 1.0)
        submit_saga(node, busi, f"drain-{fault}")
        assert started.wait(5)
        if fault == "killed":
            server.kill()
        else:
            server.pause()
        try:
            signalled = sigterm(node)
            exited = wait_exit(node, 25) - signalled
        finally:
            server.resume()
    # drain timeout (2 s in tests) + hand-back (<= 3 s) + lease release (<= 5 s), far from 30 s.
    assert exited < 12.0, exited
    print(f"\nRedis {fault}: SIGTERM -> exit {exited:.2f} s")
