"""`fastdtm serve` started before its Redis Cluster is ready (issue 13, item 2): while slots have no master the
node waits, says why once, and is not ready; once the cluster covers every slot it starts and serves. It used
to crash (`coroutine raised StopIteration`, application startup failed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import missing_toolchain
from tests.support.node import FastdtmNode
from tests.support.redis_servers import RedisCluster, RedisUnavailable

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_a_node_waits_for_every_slot_to_have_a_master(tmp_path: Path) -> None:
    try:
        cluster = RedisCluster(formed=False)
    except RedisUnavailable as exc:
        missing_toolchain(str(exc))
    with cluster:
        started: list[FastdtmNode] = []
        failed: list[BaseException] = []

        def launch() -> None:
            try:
                started.append(FastdtmNode(cluster.url, workdir=tmp_path, startup_timeout=40.0))
            except BaseException as exc:  # reported by the test below
                failed.append(exc)

        launcher = threading.Thread(target=launch)
        launcher.start()
        try:
            time.sleep(3.0)  # the node has been waiting a while: long enough to crash, or to log every second
            assert not started and not failed, failed
            cluster.form()
            launcher.join(30.0)
            assert not failed, failed
            assert started, "the node did not start once the cluster was ready"
            node = started[0]
            reply = httpx.post(f"{node.dtm}/newGid", timeout=10)
            assert reply.status_code == 200 and reply.json()["gid"]
            log = node.log_text()
            assert "slots have no master yet" in log, log
            # Said once, then a summary every 30 s: not a line per attempt.
            assert log.count("start-up waits") == 2, log  # the first failure, and the recovery
            assert "start-up waits: the store" in log and "recovered after" in log, log
        finally:
            launcher.join(30.0)
            for node in started:
                node.stop()
