"""examples/bank_transfer end to end, as its one command runs it (`python -m examples.bank_transfer`): its own
PostgreSQL, its own fastdtm node (nothing answers at the URL given) or Go DTM, both bank services, six
transfers; it must report every balance consistent and exit 0."""

from __future__ import annotations

import subprocess
import sys

from tests.support.node import REPO_ROOT, node_env
from tests.support.redis_servers import HOST, free_port

from .harness import Coordinator


def run_example(dtm: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "examples.bank_transfer", "--dtm", dtm],
        cwd=REPO_ROOT,
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count(" ok\n") == 6, output
    assert "consistent after" in output and "WRONG" not in output
    return output


def test_bank_transfer_example_runs_end_to_end() -> None:
    output = run_example(f"http://{HOST}:{free_port()}/api/dtmsvr")
    assert "started a fastdtm node" in output


def test_bank_transfer_example_on_go_dtm(go_dtm: Coordinator) -> None:
    assert "using the coordinator" in run_example(go_dtm.dtm)
