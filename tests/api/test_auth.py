"""Authentication and roles (`--auth-file`) on a real node: every endpoint family without a token (401),
with an unknown one (401), with a role too small (403) and with the right one; nothing is written on a
refusal; the health checks stay open; /api/metrics only with `--metrics-auth`; SIGHUP re-reads the file.

Authentication does not touch the store, so these tests run on the embedded store only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import fresh_store_url
from tests.support.node import FastdtmNode, NodeFactory, node_env

CLIENT = "client-token-4f0c2a9d1e7b"
OPERATOR = "operator-token-9b3e51c07a2d"
UNKNOWN = "unknown-token-000000000000"
TOKEN_FILE = f"# test tokens\n{CLIENT} client\n{OPERATOR} operator\n"
CHALLENGE = 'Basic realm="fastdtm", Bearer'


def write_tokens(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    write_tokens(path, TOKEN_FILE)
    return path


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    nodes = NodeFactory(lambda: tmp_path_factory.mktemp("node"))
    try:
        yield nodes
    finally:
        nodes.stop_all()


@pytest.fixture(scope="module")
def node(factory: NodeFactory, auth_file: Path, tmp_path_factory: pytest.TempPathFactory) -> FastdtmNode:
    store = tmp_path_factory.mktemp("store") / "fastdtm.db"
    return factory(f"sqlite:///{store}", "--auth-file", str(auth_file))


@pytest.fixture
def api(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.base, timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def trans(gid: str, trans_type: str = "tcc") -> dict[str, Any]:
    return {"gid": gid, "trans_type": trans_type}


#: (method, path, request keywords, access): one request of every route, named by what it asks for.
CALLS: list[tuple[str, str, dict[str, Any], str]] = [
    ("GET", "/api/dtmsvr/newGid", {}, "client"),
    ("POST", "/api/dtmsvr/newGid", {}, "client"),
    ("GET", "/api/dtmsvr/version", {}, "client"),
    ("POST", "/api/dtmsvr/prepare", {"json": trans("auth-prepare")}, "client"),
    ("POST", "/api/dtmsvr/submit", {"json": trans("auth-submit", "msg")}, "client"),
    ("POST", "/api/dtmsvr/abort", {"json": trans("auth-abort")}, "client"),
    ("POST", "/api/dtmsvr/registerBranch", {"json": {"gid": "auth-rb", "trans_type": "tcc"}}, "client"),
    ("POST", "/api/dtmsvr/registerTccBranch", {"json": {"gid": "auth-rb", "trans_type": "tcc"}}, "client"),
    ("POST", "/api/dtmsvr/registerXaBranch", {"json": {"gid": "auth-rb", "trans_type": "xa"}}, "client"),
    ("POST", "/api/dtmsvr/prepareWorkflow", {"json": trans("auth-wf", "workflow")}, "client"),
    ("GET", "/api/dtmsvr/query", {"params": {"gid": "auth-query"}}, "client"),
    ("GET", "/api/openapi.json", {}, "client"),
    ("POST", "/api/dtmsvr/forceStop", {"json": {"gid": "auth-stop"}}, "operator"),
    ("POST", "/api/dtmsvr/resetNextCronTime", {"json": {"gid": "auth-next"}}, "operator"),
    ("GET", "/api/dtmsvr/resetCronTime", {}, "operator"),
    ("POST", "/api/dtmsvr/resetCronTime", {}, "operator"),
    ("GET", "/api/dtmsvr/all", {}, "operator"),
    ("HEAD", "/api/dtmsvr/all", {}, "operator"),
    ("GET", "/api/dtmsvr/subscribe", {"params": {"topic": "auth-t", "url": "http://busi.example/A"}}, "operator"),
    ("GET", "/api/dtmsvr/unsubscribe", {"params": {"topic": "auth-t", "url": "http://busi.example/A"}}, "operator"),
    ("DELETE", "/api/dtmsvr/topic/auth-gone", {}, "operator"),
    ("GET", "/api/dtmsvr/scanKV", {"params": {"cat": "topics"}}, "operator"),
    ("GET", "/api/dtmsvr/queryKV", {"params": {"cat": "topics"}}, "operator"),
    ("GET", "/api/admin/transaction", {"params": {"gid": "auth-console"}}, "operator"),
    ("POST", "/api/admin/retry", {"json": {"gid": "auth-console"}}, "operator"),
    ("POST", "/api/admin/pause", {"json": {"gid": "auth-console"}}, "operator"),
    ("POST", "/api/admin/resume", {"json": {"gid": "auth-console"}}, "operator"),
    ("POST", "/api/admin/skip", {"json": {"gid": "auth-console", "branch_id": "01", "op": "action"}}, "operator"),
    ("POST", "/api/admin/fail", {"json": {"gid": "auth-console", "branch_id": "01", "op": "action"}}, "operator"),
    ("GET", "/api/admin/attention", {}, "operator"),
    ("POST", "/api/admin/bulk", {"json": {"action": "retry"}}, "operator"),
    ("GET", "/api/admin/stats", {}, "operator"),
    ("GET", "/api/admin/nodes", {}, "operator"),
    ("GET", "/admin", {}, "open"),
    ("GET", "/admin/", {}, "open"),
    ("GET", "/admin/static/console.js", {}, "open"),
    ("GET", "/api/ping", {}, "open"),
    ("POST", "/api/ping", {}, "open"),
    ("GET", "/api/live", {}, "open"),
    ("GET", "/api/ready", {}, "open"),
    ("GET", "/api/metrics", {}, "open"),
]
GUARDED = [pytest.param(*call, id=f"{call[0]} {call[1]}") for call in CALLS if call[3] != "open"]
OPERATOR_ONLY = [pytest.param(*call, id=f"{call[0]} {call[1]}") for call in CALLS if call[3] == "operator"]


def assert_refused(reply: httpx.Response, status: int) -> None:
    assert reply.status_code == status, reply.text
    if reply.request.method != "HEAD":
        body = reply.json()
        assert set(body) == {"message"}
        assert "FAILURE" not in body["message"]  # an SDK would read FAILURE as the transaction's outcome
    if status == 401:
        assert reply.headers["www-authenticate"] == CHALLENGE


@pytest.mark.parametrize(("method", "path", "kwargs", "access"), GUARDED)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param(bearer(UNKNOWN), id="unknown-bearer"),
        pytest.param(bearer(CLIENT[:-1]), id="client-token-prefix"),
        pytest.param({"Authorization": "Basic !!"}, id="garbled-basic"),
        pytest.param({"Authorization": f"Token {CLIENT}"}, id="other-scheme"),
    ],
)
def test_no_token_or_an_unknown_one_is_401(
    api: httpx.Client, method: str, path: str, kwargs: dict[str, Any], access: str, headers: dict[str, str]
) -> None:
    assert_refused(api.request(method, path, headers=headers, **kwargs), 401)


def test_an_unknown_basic_password_is_401(api: httpx.Client) -> None:
    assert_refused(api.get("/api/dtmsvr/newGid", auth=("app", UNKNOWN)), 401)
    # The token belongs in the password: as the user name it is not one.
    assert_refused(api.get("/api/dtmsvr/newGid", auth=(CLIENT, "")), 401)


@pytest.mark.parametrize(("method", "path", "kwargs", "access"), OPERATOR_ONLY)
def test_a_client_token_on_an_operator_route_is_403(
    api: httpx.Client, method: str, path: str, kwargs: dict[str, Any], access: str
) -> None:
    reply = api.request(method, path, headers=bearer(CLIENT), **kwargs)
    assert_refused(reply, 403)
    if method != "HEAD":
        assert "needs an operator token" in reply.json()["message"]


@pytest.mark.parametrize(("method", "path", "kwargs", "access"), [pytest.param(*c, id=f"{c[0]} {c[1]}") for c in CALLS])
@pytest.mark.parametrize("scheme", ["bearer", "basic"])
def test_the_right_role_gets_through(
    api: httpx.Client, method: str, path: str, kwargs: dict[str, Any], access: str, scheme: str
) -> None:
    token = OPERATOR if access == "operator" else CLIENT
    auth = {"headers": bearer(token)} if scheme == "bearer" else {"auth": ("app", token)}
    reply = api.request(method, path, **auth, **kwargs)
    # Past the check: whatever the endpoint answers (a refused abort is 409, an unknown topic 404).
    assert reply.status_code not in (401, 403, 415), reply.text


def test_an_operator_token_may_call_client_routes(api: httpx.Client) -> None:
    assert api.get("/api/dtmsvr/newGid", headers=bearer(OPERATOR)).status_code == 200


def test_nothing_is_written_on_401_or_403(api: httpx.Client) -> None:
    busi = "http://busi.example/Confirm"
    api.post("/api/dtmsvr/prepare", json=trans("auth-nothing"))
    api.post("/api/dtmsvr/submit", json={**trans("auth-nothing-saga", "saga"), "steps": [], "payloads": []})
    api.get("/api/dtmsvr/subscribe", params={"topic": "auth-nothing", "url": busi})
    api.get("/api/dtmsvr/subscribe", params={"topic": "auth-nothing", "url": busi}, headers=bearer(CLIENT))
    # A real transaction, then refused changes to it.
    ops = bearer(OPERATOR)
    assert api.post("/api/dtmsvr/prepare", json=trans("auth-kept"), headers=bearer(CLIENT)).status_code == 200
    branch = {"gid": "auth-kept", "trans_type": "tcc", "branch_id": "01", "data": "{}", "confirm": busi, "cancel": busi}
    api.post("/api/dtmsvr/registerBranch", json=branch, headers=bearer(UNKNOWN))
    api.post("/api/dtmsvr/forceStop", json={"gid": "auth-kept"}, headers=bearer(CLIENT))
    api.post("/api/dtmsvr/abort", json=trans("auth-kept"))
    for gid in ("auth-nothing", "auth-nothing-saga"):
        assert api.get("/api/dtmsvr/query", params={"gid": gid}, headers=ops).json()["transaction"] is None
    kept = api.get("/api/dtmsvr/query", params={"gid": "auth-kept"}, headers=ops).json()
    assert kept["transaction"]["status"] == "prepared"
    assert kept["branches"] == []
    assert api.get("/api/dtmsvr/queryKV", params={"cat": "topics", "key": "auth-nothing"}, headers=ops).json() == {
        "kv": []
    }


def rpc(method: str, rpc_id: str = "7") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": {"gid": "auth-rpc", "trans_type": "tcc"}}


@pytest.mark.parametrize("headers", [{}, bearer(UNKNOWN)], ids=["no-token", "unknown"])
def test_json_rpc_without_a_token_is_401_in_its_own_shape(api: httpx.Client, headers: dict[str, str]) -> None:
    reply = api.post("/api/json-rpc", json=rpc("prepare"), headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == CHALLENGE
    body = reply.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None and body["result"] is None
    assert body["error"]["code"] == -32001
    ops = bearer(OPERATOR)
    assert api.get("/api/dtmsvr/query", params={"gid": "auth-rpc"}, headers=ops).json()["transaction"] is None


@pytest.mark.parametrize("method", ["newGid", "prepare", "submit", "abort", "registerBranch"])
@pytest.mark.parametrize("token", [CLIENT, OPERATOR], ids=["client", "operator"])
def test_json_rpc_methods_with_a_token(api: httpx.Client, method: str, token: str) -> None:
    reply = api.post("/api/json-rpc", json=rpc(method), headers=bearer(token))
    assert reply.status_code == 200
    assert reply.json()["id"] == "7"


def test_json_rpc_with_basic(api: httpx.Client) -> None:
    reply = api.post("/api/json-rpc", json=rpc("newGid"), auth=("app", CLIENT))
    assert reply.status_code == 200 and reply.json()["error"] is None


def test_a_simple_post_with_a_token_is_still_415(api: httpx.Client) -> None:
    reply = api.post(
        "/api/dtmsvr/prepare",
        content=b'{"gid":"auth-form","trans_type":"tcc"}',
        headers={
            **bearer(CLIENT),
            "Content-Type": "text/plain",
        },
    )
    assert reply.status_code == 415
    # Without a token the caller learns only that it needs one.
    assert api.post("/api/dtmsvr/prepare", content=b"{}", headers={"Content-Type": "text/plain"}).status_code == 401


def test_the_metrics_ask_for_an_operator_with_metrics_auth(
    factory: NodeFactory, auth_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store = tmp_path_factory.mktemp("store") / "fastdtm.db"
    node = factory(f"sqlite:///{store}", "--auth-file", str(auth_file), "--metrics-auth")
    with httpx.Client(base_url=node.base, timeout=10) as client:
        assert_refused(client.get("/api/metrics"), 401)
        assert_refused(client.get("/api/metrics", headers=bearer(CLIENT)), 403)
        assert client.get("/api/metrics", headers=bearer(OPERATOR)).status_code == 200
        assert client.get("/api/ready").status_code == 200


def test_sighup_rereads_the_file_and_a_bad_file_keeps_the_tokens(
    factory: NodeFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = tmp_path_factory.mktemp("reload")
    path = directory / "tokens"
    write_tokens(path, f"{CLIENT} client\n")
    node = factory(f"sqlite:///{directory / 'fastdtm.db'}", "--auth-file", str(path))
    new = "rotated-token-5d1f0e2c8a"
    with httpx.Client(base_url=node.base, timeout=10) as client:

        def status(token: str) -> int:
            return client.get("/api/dtmsvr/newGid", headers=bearer(token)).status_code

        assert (status(CLIENT), status(new)) == (200, 401)
        write_tokens(path, f"{new} client\n")
        os.kill(node.pid, signal.SIGHUP)
        wait_for(lambda: (status(CLIENT), status(new)) == (401, 200))
        write_tokens(path, f"{CLIENT} client\n{new} admin\n")
        os.kill(node.pid, signal.SIGHUP)
        wait_for(lambda: "line 2: unknown role 'admin'" in node.log_text())
        assert (status(CLIENT), status(new)) == (401, 200)
    assert node.alive()
    log = node.log_text()
    assert "keeping the 1 tokens (0 operator) read before" in log
    for token in (CLIENT, new):
        assert token not in log


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_tokens_never_reach_the_log(node: FastdtmNode, api: httpx.Client) -> None:
    api.get("/api/dtmsvr/all", headers=bearer(CLIENT))
    api.get("/api/dtmsvr/newGid", auth=("app", UNKNOWN))
    log = node.log_text()
    assert "authentication on: 2 tokens (1 operator)" in log
    for token in (CLIENT, OPERATOR, UNKNOWN):
        assert token not in log


@pytest.mark.parametrize(
    ("text", "error"),
    [(None, "cannot be read"), (f"{CLIENT} client\n{OPERATOR} root\n", "line 2: unknown role 'root'")],
    ids=["missing", "bad-role"],
)
def test_a_file_that_cannot_be_used_stops_the_start(tmp_path: Path, text: str | None, error: str) -> None:
    path = tmp_path / "tokens"
    if text is not None:
        write_tokens(path, text)
    argv = [sys.executable, "-m", "fastdtm", "serve", "--store", f"sqlite:///{tmp_path / 's.db'}"]
    ran = subprocess.run(
        [*argv, "--auth-file", str(path)], env=node_env(), capture_output=True, text=True, timeout=30, check=False
    )
    assert ran.returncode == 2
    assert error in ran.stderr
    assert CLIENT not in ran.stderr + ran.stdout


def test_with_workers_sighup_restarts_them_on_the_new_file(
    factory: NodeFactory, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """uvicorn's supervisor replaces each worker on SIGHUP; a worker that cannot start keeps the old one."""
    path = tmp_path / "tokens"
    write_tokens(path, f"{CLIENT} client\n")
    node = factory(fresh_store_url(request, "redis", tmp_path), "--auth-file", str(path), "--workers", "2")
    new = "rotated-token-for-workers"

    def statuses(token: str) -> set[int]:  # a connection per call: both workers answer some
        return {status(token) for _ in range(8)}

    def status(token: str) -> int:
        try:
            return httpx.get(f"{node.base}/api/dtmsvr/newGid", headers=bearer(token)).status_code
        except httpx.TransportError:  # a worker the restart stops may close a connection it just accepted
            return 0

    write_tokens(path, f"{new} client\n")
    os.kill(node.pid, signal.SIGHUP)
    wait_for(lambda: (statuses(CLIENT), statuses(new)) == ({401}, {200}), timeout=30)
    write_tokens(path, f"{new} admin\n")
    os.kill(node.pid, signal.SIGHUP)
    wait_for(lambda: "aborting the restart" in node.log_text(), timeout=30)
    assert statuses(new) == {200}
    assert new not in node.log_text()
