"""The embedded store survives its process: kill the node mid-saga, start it again on the same file,
and the transaction finishes; a second process on the same file is refused with a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dtmcli import saga, utils

from tests.e2e.helpers import paths, statuses
from tests.support.busi import BusiServer, Reply
from tests.support.node import NodeFactory, node_env, query, wait_status


def test_a_saga_interrupted_by_a_crash_finishes_after_restart(
    node_factory: NodeFactory, tmp_path: Path, busi: BusiServer
) -> None:
    store = f"sqlite:///{tmp_path / 'fastdtm.db'}"
    first = node_factory(store)
    busi.script("/TransIn", [Reply(200, delay=5.0), 200])
    s = saga.Saga(first.dtm, utils.gen_gid(first.dtm))
    s.add({"amount": 30}, busi.url("/TransOut"), busi.url("/TransOutRevert"))
    s.add({"amount": 30}, busi.url("/TransIn"), busi.url("/TransInRevert"))
    s.submit()
    gid = s.trans_base.gid
    busi.wait_calls("/TransIn", 1)
    first.kill()
    # The same file, a new process: what was committed before the crash is there.
    second = node_factory(store)
    assert query(second, gid)["transaction"]["status"] == "submitted"
    reply = wait_status(second, gid, {"succeed"}, timeout=15)
    assert statuses(reply) == "psps"
    # TransOut's result was to be written with the next write, which the crash prevented (the round had
    # run for less than engine.PROGRESS_WRITE_MS): the restarted node calls it again, as DTM allows
    # (at-least-once; branches are idempotent).
    assert paths(busi, gid) == ["/TransOut", "/TransIn", "/TransOut", "/TransIn"]
    second.stop()
    third = node_factory(store)
    assert query(third, gid)["transaction"]["status"] == "succeed"


def test_a_second_process_on_the_same_file_is_refused(node_factory: NodeFactory, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'fastdtm.db'}"
    node = node_factory(store)
    second = subprocess.run(
        [sys.executable, "-m", "fastdtm", "serve", "--store", store, "--host", "127.0.0.1", "--port", "0"],
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 2
    assert "is in use by another fastdtm process" in second.stderr
    assert "serves one node" in second.stderr
    assert node.alive()


def test_several_workers_on_the_embedded_store_are_refused(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'fastdtm.db'}"
    refused = subprocess.run(
        [sys.executable, "-m", "fastdtm", "serve", "--store", store, "--workers", "2"],
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "serves one node" in refused.stderr
