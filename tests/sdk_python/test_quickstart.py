"""clients/python/examples/quickstart.py (the SDK README's quick start) runs as written against a node: one saga
succeeds, one is refused and compensated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.node import REPO_ROOT, NodeFactory, node_env

QUICKSTART = REPO_ROOT / "clients" / "python" / "examples" / "quickstart.py"


def test_quickstart_runs(node_factory: NodeFactory, tmp_path: Path) -> None:
    node = node_factory(f"sqlite:///{tmp_path / 'fastdtm.db'}")
    done = subprocess.run(
        [sys.executable, str(QUICKSTART), node.dtm], env=node_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "saga of 30: succeed" in done.stdout and "saga of 500: failed" in done.stdout, done.stdout
