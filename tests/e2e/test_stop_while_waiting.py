"""`fastdtm serve` stops on SIGTERM or SIGINT while it still waits for its store (issue 12, item 11): it used
to need SIGKILL, in the single-process mode and with `--workers N` alike."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.hold_start_up.sitecustomize import HELD_BEFORE_THE_STORE
from tests.support.node import DEFAULT_COMMAND, REPO_ROOT, node_env
from tests.support.processes import LoggedProcess
from tests.support.redis_servers import HOST, free_ports


def wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_node_waiting_for_its_store_stops_on_a_signal(tmp_path: Path, workers: int, signum: int) -> None:
    nobody, port, grpc_port = free_ports(3)  # nobody: a Redis port nothing listens on
    argv = [*DEFAULT_COMMAND, "serve", "--store", f"redis://{HOST}:{nobody}/0", "--host", HOST]
    argv += ["--port", str(port), "--grpc-port", str(grpc_port), "--workers", str(workers)]
    process = LoggedProcess(argv, log_path=tmp_path / "node.log", cwd=tmp_path, env=node_env())
    try:
        waiting = "start-up waits: the store"
        wait_for(lambda: process.log_text().count(waiting) >= workers, f"not waiting:\n{process.log_tail()}", 20)
        time.sleep(1.0)
        os.kill(process.pid, signum)
        wait_for(lambda: not process.alive(), f"still running 5 s after the signal:\n{process.log_tail()}", 5)
    finally:
        # If it did not stop, its workers would outlive a SIGKILL of the supervisor: they go first.
        for child in children(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        process.kill()
    log = process.log_text()
    if workers == 1:
        assert process.returncode != 0  # it ends by the signal itself
        assert f"{signal.Signals(signum).name} while waiting for the store" in log, log
    else:
        # uvicorn's supervisor stops on the signal, with SIGTERM to each worker, which says why it ends.
        assert log.count("SIGTERM while waiting for the store") == workers, log


def test_a_signal_just_before_the_wait_for_the_store_still_stops_the_node(tmp_path: Path) -> None:
    """SIGTERM after uvicorn installed its handlers but before the wait for the store installed its own: uvicorn's
    handler only asks its server to stop, which it looks at once the lifespan has started, and the store never
    answers. The wait finds that request and stops at once. The node is held at that very moment
    (tests/support/hold_start_up, HOLD_AT=store) until the signal has reached it."""
    release = tmp_path / "release"
    hold = os.pathsep.join([str(REPO_ROOT / "tests" / "support" / "hold_start_up"), str(REPO_ROOT)])
    nobody, port, grpc_port = free_ports(3)
    argv = [*DEFAULT_COMMAND, "serve", "--store", f"redis://{HOST}:{nobody}/0", "--host", HOST]
    argv += ["--port", str(port), "--grpc-port", str(grpc_port)]
    env = node_env({"HOLD_START_UP": str(release), "HOLD_AT": "store", "PYTHONPATH": hold})
    process = LoggedProcess(argv, log_path=tmp_path / "node.log", cwd=tmp_path, env=env)
    try:
        wait_for(lambda: HELD_BEFORE_THE_STORE in process.log_text(), f"not held:\n{process.log_tail()}", 20)
        os.kill(process.pid, signal.SIGTERM)
        time.sleep(0.5)  # the held process runs uvicorn's handler as the signal arrives
        assert process.alive()
        release.touch()
        wait_for(lambda: not process.alive(), f"still running 5 s after the release:\n{process.log_tail()}", 5)
    finally:
        release.touch()
        process.kill()
    assert process.returncode != 0  # it ends by the signal itself
    assert "SIGTERM while waiting for the store" in process.log_text(), process.log_tail()


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root")
@pytest.mark.parametrize("phase", ["waiting", "serving"])
def test_as_pid_1_a_node_stops_on_sigterm(tmp_path: Path, phase: str) -> None:
    """A container's entrypoint is PID 1, for which the kernel ignores any signal left to its default action:
    a node waiting for its store that re-raised SIGTERM ran on until the kubelet's SIGKILL (seen with the
    image). Here the node is PID 1 of a PID namespace of its own, as in a container."""
    nobody, port, grpc_port = free_ports(3)
    if phase == "waiting":
        store = f"redis://{HOST}:{nobody}/0"  # nothing listens: the node waits for its store
        marker = "start-up waits: the store"
    else:
        store = f"sqlite:///{tmp_path / 'fastdtm.db'}"
        marker = "Application startup complete"
    argv = ["unshare", "--pid", "--fork", "--kill-child", *DEFAULT_COMMAND, "serve", "--store", store]
    argv += ["--host", HOST, "--port", str(port), "--grpc-port", str(grpc_port)]
    process = LoggedProcess(argv, log_path=tmp_path / "node.log", cwd=tmp_path, env=node_env())
    try:
        wait_for(lambda: marker in process.log_text(), f"not started:\n{process.log_tail()}", 20)
        pid_1 = children(process.pid)
        assert len(pid_1) == 1, pid_1
        started = time.monotonic()
        os.kill(pid_1[0], signal.SIGTERM)
        wait_for(lambda: not process.alive(), f"still running 5 s after SIGTERM:\n{process.log_tail()}", 5)
        took = time.monotonic() - started
    finally:
        process.kill()
    # unshare passes on the child's status: 128 + SIGTERM when it ended waiting, 0 after a graceful stop.
    assert process.returncode == (128 + signal.SIGTERM if phase == "waiting" else 0), process.log_tail()
    assert took < 3.0, took
