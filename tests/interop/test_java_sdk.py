"""The real Java SDK (`io.github.dtm-labs:dtmcli-java:2.1.5`, the newest on Maven Central) against fastdtm (S27).

The Maven module in `java/` is compiled once per session (offline first, online when the local repository lacks
something); then, on every store, a node is started and `fastdtm.interop.JavaSdkInterop` runs as a plain `java`
process: saga normal/rollback/enableWaitResult/concurrent with addBranchOrder, TCC normal/rollback through
`tccGlobalTransaction`, each checked through `/query` and the branch calls its JDK HttpServer recorded. The SDK
talks to the node through a recording proxy; the bytes it sent are checked here against the Java templates that
`tests/e2e/test_replays.py` replays, so those replays stay the real SDK's bytes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_toolchain
from tests.e2e.raw import lit
from tests.e2e.test_replays import JAVA_SAGA, JAVA_TCC_BRANCH, JAVA_TCC_TRANS
from tests.support.node import FastdtmNode
from tests.support.processes import tail

MODULE = Path(__file__).resolve().parent / "java"
CLASSPATH_FILE = MODULE / "target" / "classpath.txt"
MAIN_CLASS = "fastdtm.interop.JavaSdkInterop"
#: Compiles the module and writes its runtime classpath; `.ci/run` warms the Maven cache with the same goals.
BUILD_GOALS = ("compile", "dependency:build-classpath", f"-Dmdep.outputFile={CLASSPATH_FILE}")
BUILD_TIMEOUT = 900.0
RUN_TIMEOUT = 180.0
SCENARIOS = ("sagaNormal", "sagaRollback", "sagaWaitResult", "sagaConcurrent", "tccNormal", "tccRollback")


def _mvn(mvn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [mvn, "-q", "-B", "-f", str(MODULE / "pom.xml"), *args],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="session")
def java_classpath() -> tuple[str, str]:
    """(java executable, classpath of the compiled suite), built once per session."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        missing_toolchain("the Java SDK suite needs `java` (17+) and `mvn` on PATH")
    started = time.monotonic()
    built = _mvn(mvn, "-o", *BUILD_GOALS)
    if built.returncode != 0:
        # Offline failed (cold ~/.m2): resolve from Maven Central once.
        built = _mvn(mvn, *BUILD_GOALS)
    if built.returncode != 0:
        pytest.fail(
            f"building {MODULE} failed (exit {built.returncode}):\n{tail(built.stdout + built.stderr, 200)}",
            pytrace=False,
        )
    print(f"java suite built in {time.monotonic() - started:.1f} s")
    classpath = f"{MODULE / 'target' / 'classes'}:{CLASSPATH_FILE.read_text().strip()}"
    return java, classpath


def test_java_sdk_suite(java_classpath: tuple[str, str], node: FastdtmNode, tmp_path: Path) -> None:
    java, classpath = java_classpath
    capture = tmp_path / "captured.json"
    env = {"PATH": "/usr/bin:/bin", "DTM_HOSTPORT": f"127.0.0.1:{node.port}", "DTM_CAPTURE_FILE": str(capture)}
    try:
        run = subprocess.run(
            [java, "-cp", classpath, MAIN_CLASS, *SCENARIOS],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            env=env,
            cwd=tmp_path,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"the Java suite did not finish within {RUN_TIMEOUT:.0f} s:\n{tail(out, 200)}", pytrace=False)
    output = run.stdout + run.stderr
    summary = f"java-sdk: {len(SCENARIOS)} passed, 0 failed"
    if run.returncode != 0 or summary not in run.stdout:
        pytest.fail(f"the Java suite failed (exit {run.returncode}):\n{tail(output, 300)}", pytrace=False)
    check_captured_bytes(json.loads(capture.read_text()))


def check_captured_bytes(rows: list[dict[str, Any]]) -> None:
    """Every request the SDK made got a 2xx, and its body is the replay template filled with its own values."""
    seen: set[tuple[str, str]] = set()
    for row in rows:
        scenario, target, body = row["scenario"], row["target"], row["body"]
        path = target.split("?", 1)[0].removeprefix("/api/dtmsvr")
        where = f"{scenario} {row['method']} {target}: {body!r} -> {row['status']} {row['reply']!r}"
        assert row["status"] == 200, where
        seen.add((scenario, path))
        if path == "/newGid":
            assert (row["method"], body) == ("GET", ""), where
            assert '"dtm_result":"SUCCESS"' in row["reply"], where
            continue
        assert row["method"] == "POST", where
        # Python keeps the last of the duplicate `subType` keys; the values are put back into the template.
        sent = json.loads(body)
        gid = sent["gid"]
        if scenario.startswith("saga"):
            assert path == "/submit", where
            if scenario == "sagaConcurrent":
                custom = r'"custom_data" : "{\"concurrent\":true,\"orders\":{\"2\":[0,1],\"3\":[0,1]}}",'
                assert custom in body, where
                continue
            urls = {f"{key}{i}": step[name] for i, step in enumerate(sent["steps"]) for key, name in _STEP_KEYS}
            assert body == lit(JAVA_SAGA, gid=gid, wait=scenario == "sagaWaitResult", **urls), where
        elif path == "/registerBranch":
            fields = {name: sent[name] for name in ("branch_id", "data")}
            expected = lit(JAVA_TCC_BRANCH, gid=gid, confirm_url=sent["confirm"], cancel_url=sent["cancel"], **fields)
            assert body == expected, where
        else:
            assert path in {"/prepare", "/submit", "/abort"}, where
            assert body == lit(JAVA_TCC_TRANS, gid=gid), where
    for scenario in SCENARIOS:
        assert (scenario, "/newGid") in seen, (scenario, sorted(seen))
    assert {("tccNormal", p) for p in ("/prepare", "/registerBranch", "/submit")} <= seen, sorted(seen)
    assert {("tccRollback", p) for p in ("/prepare", "/registerBranch", "/abort")} <= seen, sorted(seen)


_STEP_KEYS = (("a", "action"), ("c", "compensate"))
