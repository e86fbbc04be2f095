"""Fixtures of the differential suite: Go DTM and fastdtm, each started once per session on a private Redis
with its own participant server. Without Go DTM (no `go` to build it) the suite is skipped locally and fails
under CI, as the SDK interop suites do."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_toolchain, start_or_give_up
from tests.support.busi import BusiServer
from tests.support.node import REPO_ROOT, FastdtmNode
from tests.support.processes import tail
from tests.support.redis_servers import RedisServer

from .coordinators import FASTDTM_ARGS, GO_DTM_BIN, GoDtm, Side

INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-go-dtm.sh"
GO_FALLBACK = Path("/usr/local/go/bin/go")
INSTALL_TIMEOUT = 900.0


def ensure_go_dtm() -> None:
    """The binary scripts/install-go-dtm.sh builds; built here when `go` is there and it is not yet."""
    if GO_DTM_BIN.exists():
        return
    if shutil.which("go") is None and not GO_FALLBACK.exists():
        missing_toolchain("go not found on PATH nor at /usr/local/go/bin/go: the differential suite builds Go DTM")
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{GO_FALLBACK.parent}"}
    done = subprocess.run([str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=INSTALL_TIMEOUT, env=env)
    if done.returncode != 0:
        pytest.fail(f"install-go-dtm.sh failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def go_side() -> Iterator[Side]:
    ensure_go_dtm()
    with start_or_give_up(RedisServer) as redis:
        server = GoDtm(redis.port)
        busi = BusiServer()
        try:
            yield Side("go-dtm", server.base, redis, busi)
        finally:
            busi.close()
            server.stop()


@pytest.fixture(scope="session")
def fastdtm_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    with start_or_give_up(RedisServer) as redis:
        node = FastdtmNode(redis.url, FASTDTM_ARGS, workdir=tmp_path_factory.mktemp("differential-node"))
        busi = BusiServer()
        try:
            yield Side("fastdtm", node.base, redis, busi)
        finally:
            busi.close()
            node.stop()
            print(f"--- fastdtm node log tail ---\n{tail(node.log_text(), 40)}")
