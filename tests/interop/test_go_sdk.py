"""The real DTM Go SDK (github.com/dtm-labs/client v1.17.3) against fastdtm: scenarios S28, S29 (XA on
MariaDB) and S30 of reference/dtm-clients.md §6.2 plus the Redis and MariaDB (SQL) barriers, over HTTP, and
the `dtmgrpc` suite (`TestGrpc*`: saga, msg with a gRPC check-back, TCC, XA, workflow and the Redis barrier
over the node's gRPC API, with gRPC branch servers in Go). The Go test package in `go/` is compiled once per
session with `go test -c`, then run as a subprocess against a fresh node on every store, with the private
MariaDB's schemas recreated for each run."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import missing_toolchain
from tests.support.mariadb import MariaDBServer
from tests.support.node import FastdtmNode, NodeFactory
from tests.support.processes import tail
from tests.support.redis_servers import HOST

GO_DIR = Path(__file__).resolve().parent / "go"
GO_FALLBACK = Path("/usr/local/go/bin/go")
BUILD_TIMEOUT = 900.0  # a cold module cache downloads the SDK and its dependencies
RUN_TIMEOUT = 120.0
PARALLEL = "4"
AUTH_TESTS = "^TestAuth"
AUTH_TOKEN = "go-sdk-client-token-51e0a7"

# pytest-timeout's 120 s covers fixtures too, and the first test builds the binary.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT + RUN_TIMEOUT + 60)


def go_binary() -> str:
    found = shutil.which("go")
    if found:
        return found
    if GO_FALLBACK.is_file() and os.access(GO_FALLBACK, os.X_OK):
        return str(GO_FALLBACK)
    missing_toolchain("go not found on PATH nor at /usr/local/go/bin/go: the Go SDK interop suite needs Go >= 1.21")


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    flags = env.get("GOFLAGS", "")
    if "-mod=" not in flags:
        env["GOFLAGS"] = f"{flags} -mod=mod".strip()
    # The SDK rewrites localhost to host.docker.internal when this is set.
    env.pop("IS_DOCKER", None)
    # The gRPC tests talk to the node each run names, never to one from the caller's environment.
    env.pop("DTM_GRPC", None)
    return env


@pytest.fixture(scope="session")
def go_test_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = go_binary()
    out = tmp_path_factory.mktemp("go-interop") / "interop.test"
    try:
        built = subprocess.run(
            [go, "test", "-c", "-o", str(out), "."],
            cwd=GO_DIR,
            env=go_env(),
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"go test -c took longer than {BUILD_TIMEOUT:.0f} s:\n{exc.output or ''}", pytrace=False)
    if built.returncode != 0 or not out.is_file():
        pytest.fail(f"go test -c failed ({built.returncode}):\n{built.stdout}\n{built.stderr}", pytrace=False)
    return out


def run_argv(binary: Path) -> list[str]:
    return [str(binary), "-test.v", "-test.parallel", PARALLEL, "-test.timeout", f"{RUN_TIMEOUT - 10:.0f}s"]


@pytest.fixture
def redis_addr(request: pytest.FixtureRequest, store_url: str) -> str | None:
    """The standalone Redis the barrier tests keep their balances in; only with a Redis store."""
    if store_url.startswith("sqlite:"):
        return None
    url: str = request.getfixturevalue("redis_standalone").url
    return url


def test_go_sdk_suite(
    go_test_binary: Path, node: FastdtmNode, redis_addr: str | None, barrier_db: MariaDBServer
) -> None:
    env = go_env()
    env["DTM_URL"] = node.dtm
    env["DTM_GRPC"] = node.grpc
    # The XA and SQL barrier tests: dtm_busi and dtm_barrier, freshly recreated for this store's run.
    env["MARIADB_HOST"] = HOST
    env["MARIADB_PORT"] = str(barrier_db.port)
    env.pop("REDIS_ADDR", None)
    if redis_addr is not None:
        env["REDIS_ADDR"] = redis_addr
    # The TestAuth* tests need a node with --auth-file: test_go_sdk_with_a_token_in_the_server_url runs them.
    argv = [*run_argv(go_test_binary), "-test.skip", AUTH_TESTS]
    try:
        ran = subprocess.run(argv, cwd=GO_DIR, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"the Go SDK suite ran longer than {RUN_TIMEOUT:.0f} s:\n{tail(output, 200)}", pytrace=False)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, f"the Go SDK suite failed ({ran.returncode}):\n{tail(output, 400)}"
    assert "--- FAIL" not in output
    skipped = [line.strip() for line in output.splitlines() if line.strip().startswith("--- SKIP")]
    # Only the Redis barrier tests skip (on the embedded store): two over HTTP, three over gRPC; the MariaDB
    # tests always get their env.
    expected_skips = 0 if redis_addr is not None else 5
    assert len(skipped) == expected_skips, f"unexpected skips: {skipped}\n{tail(output, 100)}"


def test_go_sdk_with_a_token_in_the_server_url(go_test_binary: Path, node_factory: NodeFactory, tmp_path: Path) -> None:
    """A saga and TCCs through `http://app:<token>@host:port/api/dtmsvr` against a node with --auth-file (the
    check does not depend on the store: the embedded one)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{AUTH_TOKEN} client\n")
    tokens.chmod(0o600)
    node = node_factory(f"sqlite:///{tmp_path / 'fastdtm.db'}", "--auth-file", str(tokens))
    env = go_env()
    env["DTM_URL"] = node.dtm.replace("http://", f"http://app:{AUTH_TOKEN}@", 1)
    ran = subprocess.run(
        [*run_argv(go_test_binary), "-test.run", AUTH_TESTS],
        cwd=GO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, f"the Go SDK auth tests failed ({ran.returncode}):\n{tail(output, 200)}"
    passed = [line.split()[2] for line in output.splitlines() if line.strip().startswith("--- PASS")]
    assert sorted(passed) == [
        "TestAuthSagaTokenInServerURL",
        "TestAuthTccRollbackTokenInServerURL",
        "TestAuthTccTokenInServerURL",
    ], output
    assert AUTH_TOKEN not in node.log_text()
