"""Smoke run of the Locust load test (`loadtest/`): a short headless run of every user class against a real node
on the embedded store, with the real participant service. No thresholds: it passes when every transaction type
made progress and fastdtm answered no request with a failure. Locust (gevent) runs as a subprocess, so it
shares nothing with pytest's process or its warning filters."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.node import REPO_ROOT, NodeFactory
from tests.support.processes import LoggedProcess
from tests.support.redis_servers import HOST, free_port

LOCUSTFILE = REPO_ROOT / "loadtest" / "locustfile.py"
PARTICIPANT = REPO_ROOT / "loadtest" / "participant.py"
SUBMITS = ("saga submit", "msg submit", "tcc submit")


@pytest.fixture
def participant(tmp_path: Path) -> Iterator[str]:
    """The load test's participant service on a free port; its base URL."""
    port = free_port()
    process = LoggedProcess(
        [sys.executable, str(PARTICIPANT), "--host", HOST, "--port", str(port)], log_path=tmp_path / "participant.log"
    )
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 15
        with httpx.Client(timeout=1.0) as client:
            while True:
                assert process.alive(), f"participant exited:\n{process.log_tail()}"
                try:
                    if client.get(f"{base}/ready").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"participant not ready:\n{process.log_tail()}"
                time.sleep(0.05)
        yield base
    finally:
        process.stop(grace=5.0)


def test_locust_headless_run_has_no_failures(node_factory: NodeFactory, participant: str, tmp_path: Path) -> None:
    if importlib.util.find_spec("locust") is None:  # looked up, not imported: locust would monkey-patch pytest
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail("locust is not installed (CI is set, so this fails instead of skipping)", pytrace=False)
        pytest.skip("locust is not installed (pip install -e '.[dev]')")
    node = node_factory(f"sqlite:///{tmp_path / 'fastdtm.db'}")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LOCUST_", "FASTDTM_"))}
    env["FASTDTM_PARTICIPANT"] = participant
    argv = [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)),
        *("--headless", "-u", "4", "-r", "4", "-t", "5s", "--host", node.base),
        *("--only-summary", "--exit-code-on-error", "0", "--csv", str(tmp_path / "run")),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False)
    output = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, output
    with (tmp_path / "run_stats.csv").open(newline="") as stats_file:
        rows = {row["Name"]: row for row in csv.DictReader(stats_file)}
    for name in SUBMITS:
        assert name in rows and int(rows[name]["Request Count"]) > 0, f"no {name!r} requests\n{output}"
    failed = {name: row["Failure Count"] for name, row in rows.items() if int(row["Failure Count"]) != 0}
    assert not failed, f"requests failed: {failed}\n{output}"
