"""The two coordinators the differential suite compares: this module owns starting Go DTM v1.19.0 (the binary
scripts/install-go-dtm.sh builds) on a private Redis with a YAML config, starting fastdtm on another private
Redis with the same timings, and the `Side` each scenario runs on: a coordinator, its Redis, its own
participant server."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.busi import BusiServer
from tests.support.node import REPO_ROOT, FastdtmNode
from tests.support.processes import LoggedProcess, tail
from tests.support.redis_servers import HOST, RedisServer, free_port

GO_DTM_BIN = REPO_ROOT / ".tools" / "go-dtm" / "bin" / "dtm"

# Go DTM refuses a RetryInterval under 10 s and a TimeoutToFail under RetryInterval, and takes whole seconds;
# scenarios that retry set their own `retry_interval` (1 s) and `timeout_to_fail`, which both servers honour.
# TransCronInterval 1: the cron sleeps 0-1 s between empty polls; ConfigUpdateInterval 1: topics reload.
RETRY_INTERVAL = 10
TIMEOUT_TO_FAIL = 10
REQUEST_TIMEOUT = 3
GO_DTM_CONF = """Store:
  Driver: redis
  Host: {host}
  Port: {redis_port}
HttpPort: {http_port}
GrpcPort: {grpc_port}
JsonRpcPort: {json_rpc_port}
TransCronInterval: 1
ConfigUpdateInterval: 1
RetryInterval: {retry_interval}
TimeoutToFail: {timeout_to_fail}
RequestTimeout: {request_timeout}
LogLevel: warn
"""
FASTDTM_ARGS = (
    f"--retry-interval={RETRY_INTERVAL}",
    f"--timeout-to-fail={TIMEOUT_TO_FAIL}",
    f"--request-timeout={REQUEST_TIMEOUT}",
)


class GoDtm:
    """A `dtm -c <yaml>` process on the given Redis; answering /api/ping from construction until `stop()`."""

    def __init__(self, redis_port: int, startup_timeout: float = 30.0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="fastdtm-godtm-"))
        self.port = free_port()
        conf = self._dir / "dtm.yml"
        conf.write_text(
            GO_DTM_CONF.format(
                host=HOST,
                redis_port=redis_port,
                http_port=self.port,
                grpc_port=free_port(),
                json_rpc_port=free_port(),
                retry_interval=RETRY_INTERVAL,
                timeout_to_fail=TIMEOUT_TO_FAIL,
                request_timeout=REQUEST_TIMEOUT,
            )
        )
        argv = [str(GO_DTM_BIN), "-c", str(conf)]
        self._process = LoggedProcess(argv, log_path=self._dir / "dtm.log", cwd=self._dir)
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        return self._process.log_text()

    def stop(self) -> None:
        self._process.stop(grace=5.0)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                if not self._process.alive():
                    raise RuntimeError(f"Go DTM exited with {self._process.returncode}:\n{self._process.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base}/api/ping").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Go DTM not ready in {timeout}s:\n{self._process.log_tail()}")
                time.sleep(0.05)


@dataclass
class Side:
    """One coordinator under comparison, with the Redis it alone uses and the participant it alone calls."""

    name: str
    base: str
    redis: RedisServer
    busi: BusiServer

    def reset(self) -> None:
        """Before a scenario: an empty Redis (Go DTM reloads topics from a single SCAN page) and no scripts."""
        self.redis.flush()
        self.busi.reset()


def log_tail(process: GoDtm | FastdtmNode) -> str:
    return tail(process.log_text(), 80)
