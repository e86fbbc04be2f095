"""Self-check of the test support: this module owns the proof that the fixtures in `conftest.py` and
`tests/support/` do what end-to-end tests rely on (real Redis standalone and cluster, the scripted branch
server, the node launcher), before and independently of the fastdtm package itself."""

from __future__ import annotations

import hashlib
import http.client
import socket
import sys
import threading
import time
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import httpx
import pytest
import redis
from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

from tests.support import compiled
from tests.support.busi import BusiServer, Call, Reply
from tests.support.node import REPO_ROOT, FastdtmNode, NodeFactory, query, wait_status
from tests.support.redis_servers import CLUSTER_SLOTS, ClusterTarget, RedisServer, RedisTarget, free_port

# Stands in for `python -m fastdtm`: same command line, /api/ready and a /query whose status advances.
STAND_IN = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit
args = sys.argv[1:]
print("argv", " ".join(args), "env", os.environ.get("STAND_IN_ENV"), os.environ.get("FASTDTM_LEAK"), flush=True)
if os.environ.get("STAND_IN_FAIL"):
    sys.exit("boom: stand-in refuses to start")
queries = []
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.path == "/api/ready":
            body = {"ready": True}
        else:
            queries.append(1)
            gid = parse_qs(parts.query)["gid"][0]
            status = "succeed" if len(queries) > 3 else "submitted"
            body = {"transaction": {"gid": gid, "status": status}, "branches": []}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
HTTPServer((args[args.index("--host") + 1], int(args[args.index("--port") + 1])), Handler).serve_forever()
"""

FASTDTM_MISSING = not (REPO_ROOT / "fastdtm" / "__main__.py").exists()


@pytest.fixture
def stand_in(tmp_path: Path) -> list[str]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    return [sys.executable, str(script)]


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_standalone_ping_set_get(redis_standalone: RedisTarget) -> None:
    redis_standalone.flush()
    with redis.Redis.from_url(redis_standalone.url, decode_responses=True) as client:
        assert client.ping()
        client.set("selfcheck", "value")
        assert client.get("selfcheck") == "value"


def test_redis_server_that_cannot_start_shows_its_log(redis_standalone: RedisTarget) -> None:
    with pytest.raises(RuntimeError, match="no-such-directive"):
        RedisServer(["--no-such-directive", "1"])


def test_store_url_is_flushed(redis_url: str) -> None:
    if redis_url.startswith("redis+cluster://"):
        host, _, port = redis_url.removeprefix("redis+cluster://").split(",")[0].rpartition(":")
        with ClusterClient(host=host, port=int(port), decode_responses=True) as cluster:
            assert cluster.dbsize() == 0
            cluster.set("{selfcheck}:k", "v")
            assert cluster.get("{selfcheck}:k") == "v"
        return
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


@pytest.mark.cluster
def test_cluster_has_three_masters_covering_all_slots(redis_cluster: ClusterTarget) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3
    assert len(redis_cluster.startup_nodes) == 3
    owners = slot_owners(redis_cluster)
    assert len(owners) == CLUSTER_SLOTS
    assert set(owners.values()) == set(masters)


@pytest.mark.cluster
def test_cluster_spreads_hash_tags_over_masters(redis_cluster: ClusterTarget) -> None:
    redis_cluster.flush()
    owners = slot_owners(redis_cluster)
    tag_of: dict[tuple[str, int], str] = {}
    for i in range(1000):
        tag_of.setdefault(owners[key_slot(f"t{i}".encode())], f"t{i}")
    assert len(tag_of) == 3
    host, port = redis_cluster.startup_nodes[0]
    with ClusterClient(host=host, port=port, decode_responses=True) as cluster:
        for tag in tag_of.values():
            cluster.set(f"{{{tag}}}:key", tag)
    for (host, port), tag in tag_of.items():
        with redis.Redis(host=host, port=port, decode_responses=True) as master:
            assert master.keys("*") == [f"{{{tag}}}:key"]


def slot_owners(cluster: ClusterTarget) -> dict[int, tuple[str, int]]:
    host, port = cluster.startup_nodes[0]
    with redis.Redis(host=host, port=port, decode_responses=True) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    return {slot: (r[2][0], int(r[2][1])) for r in ranges for slot in range(int(r[0]), int(r[1]) + 1)}


def test_busi_records_every_call(busi: BusiServer) -> None:
    with httpx.Client() as client:
        posted = client.post(
            busi.url("/api/TransIn"),
            params={"gid": "g1", "op": "action", "branch_id": "01"},
            content=b'{"amount":30}',
            headers={"X-Trace": "t1", "Content-Type": "application/json"},
        )
        got = client.get(busi.url("/api/Query?gid=g1&gid=ignored"))
    for response in (posted, got):
        assert (response.status_code, response.text) == (200, '{"dtm_result":"SUCCESS"}')
        assert response.headers["content-type"] == "application/json"
    first, second = busi.calls()
    assert (first.method, first.path, first.body) == ("POST", "/api/TransIn", b'{"amount":30}')
    assert first.query == {"gid": "g1", "op": "action", "branch_id": "01"}
    assert first.headers["x-trace"] == "t1"
    assert first.json() == {"amount": 30}
    assert (second.method, second.path, second.query, second.body) == ("GET", "/api/Query", {"gid": "g1"}, b"")
    assert first.at <= second.at <= time.monotonic()
    assert busi.calls("/api/Query") == [second]


def test_busi_follows_its_script_and_repeats_the_last_entry(busi: BusiServer) -> None:
    busi.script("/TransIn", [425, 409, 500, 200])
    busi.script("/Legacy", [(200, '{"dtm_result":"FAILURE"}')])
    with httpx.Client() as client:
        replies = [client.post(busi.url("/TransIn")) for _ in range(5)]
        legacy = [client.get(busi.url("/Legacy")).text for _ in range(3)]
    assert [(r.status_code, r.text) for r in replies] == [
        (425, '{"dtm_result":"ONGOING"}'),
        (409, '{"dtm_result":"FAILURE"}'),
        (500, '{"message":"ERROR"}'),
        (200, '{"dtm_result":"SUCCESS"}'),
        (200, '{"dtm_result":"SUCCESS"}'),
    ]
    assert legacy == ['{"dtm_result":"FAILURE"}'] * 3


def test_busi_delays_a_reply(busi: BusiServer) -> None:
    busi.script("/Slow", [Reply(200, delay=0.5), 200])
    done = threading.Event()
    statuses: list[int] = []

    def call_slow() -> None:
        with httpx.Client() as client:
            statuses.append(client.get(busi.url("/Slow")).status_code)
        done.set()

    started = time.monotonic()
    thread = threading.Thread(target=call_slow)
    thread.start()
    busi.wait_calls("/Slow", 1, timeout=5)
    assert not done.is_set()
    thread.join(5)
    assert statuses == [200]
    assert time.monotonic() - started >= 0.5


def test_busi_close_ends_a_delayed_reply() -> None:
    server = BusiServer()
    server.script("/Stuck", [Reply(200, delay=60)])
    errors: list[BaseException] = []

    def call_stuck() -> None:
        try:
            with httpx.Client(timeout=30) as client:
                client.get(server.url("/Stuck"))
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call_stuck)
    thread.start()
    server.wait_calls("/Stuck", 1)
    server.close()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1


def test_busi_hook_decides_or_falls_back_to_the_script(busi: BusiServer) -> None:
    def try_hook(call: Call) -> Reply | None:
        return Reply(409) if call.query.get("gid") == "bad" else None

    busi.on("/TransInTry", try_hook)
    busi.script("/TransInTry", [425])
    with httpx.Client() as client:
        assert client.get(busi.url("/TransInTry?gid=bad")).status_code == 409
        assert client.get(busi.url("/TransInTry?gid=good")).status_code == 425


def test_busi_hook_that_raises_answers_500_and_is_reported(busi: BusiServer) -> None:
    def broken(call: Call) -> Reply | None:
        raise ValueError("broken hook")

    busi.on("/Broken", broken)
    with httpx.Client() as client:
        assert client.post(busi.url("/Broken")).status_code == 500
    assert "ValueError: broken hook" in busi.errors[0]
    busi.reset()  # else the fixture fails this test at teardown, as it should for a real one
    assert busi.calls() == [] and busi.errors == []


def test_busi_keeps_connections_alive_and_reads_chunked_bodies(busi: BusiServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", busi.port, timeout=5)
    try:
        conn.request("POST", "/A", body=b"plain")
        first = conn.getresponse()
        assert (first.status, first.read(), first.will_close) == (200, b'{"dtm_result":"SUCCESS"}', False)
        sock = conn.sock
        conn.request("POST", "/B", body=iter([b"chun", b"ked"]), encode_chunked=True)
        second = conn.getresponse()
        assert (second.status, second.read()) == (200, b'{"dtm_result":"SUCCESS"}')
        conn.request("GET", "/C")
        conn.getresponse().read()
        assert conn.sock is sock
    finally:
        conn.close()
    assert [(c.path, c.body) for c in busi.calls()] == [("/A", b"plain"), ("/B", b"chunked"), ("/C", b"")]


def test_busi_wait_calls_times_out_with_what_it_saw(busi: BusiServer) -> None:
    with httpx.Client() as client:
        client.get(busi.url("/Other"))
    with pytest.raises(AssertionError, match="/Other"):
        busi.wait_calls("/Never", 1, timeout=0.1)


def test_node_launches_waits_and_stops(stand_in: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTDTM_LEAK", "leaked")
    node = FastdtmNode("redis://127.0.0.1:1/0", ["--cron-interval", "0.2"], env={"STAND_IN_ENV": "x"}, command=stand_in)
    with node:
        assert node.dtm == f"http://127.0.0.1:{node.port}/api/dtmsvr"
        assert httpx.get(f"{node.base}/api/ready").status_code == 200
        assert node.alive()
    assert not node.alive()
    log = node.log_text()
    assert f"serve --store redis://127.0.0.1:1/0 --host 127.0.0.1 --port {node.port}" in log
    assert "--retry-interval 0.5" in log and "--lease-ttl 1.5" in log and "--node-heartbeat 0.3" in log
    assert log.count("--cron-interval") == 1 and "--cron-interval 0.2" in log
    assert "env x None" in log


def test_node_kill_is_sigkill(stand_in: list[str]) -> None:
    factory = NodeFactory(command=stand_in)
    nodes = [factory("redis://127.0.0.1:1/0"), factory("redis://127.0.0.1:1/0")]
    nodes[0].kill()
    assert nodes[0].returncode == -9
    factory.stop_all()
    assert not any(node.alive() for node in nodes)


def test_node_that_dies_at_startup_shows_its_log(stand_in: list[str]) -> None:
    with pytest.raises(RuntimeError, match="boom: stand-in refuses to start"):
        FastdtmNode("redis://127.0.0.1:1/0", env={"STAND_IN_FAIL": "1"}, command=stand_in)


def test_query_and_wait_status(stand_in: list[str]) -> None:
    with FastdtmNode("redis://127.0.0.1:1/0", command=stand_in) as node:
        assert query(node, "g1")["transaction"] == {"gid": "g1", "status": "submitted"}
        assert wait_status(node.base, "g1", {"succeed"})["transaction"]["status"] == "succeed"
        with pytest.raises(AssertionError, match="last reply"):
            wait_status(node, "g1", {"failed"}, timeout=0.3)


@pytest.mark.skipif(FASTDTM_MISSING, reason="fastdtm serve is not written yet")
def test_real_node_is_ready(node: FastdtmNode) -> None:
    assert httpx.get(f"{node.base}/api/ready").status_code == 200
    assert httpx.get(f"{node.base}/api/ping").json() == {"msg": "pong"}


def test_compiled_modules_are_stale_once_their_source_changes(tmp_path: Path) -> None:
    """The guard of `make compiled` trees: pure passes, matching hashes pass, an edited source or a missing
    manifest is refused (tests/conftest.py stops the session then)."""
    package = tmp_path / "fastdtm"
    package.mkdir()
    source = package / "engine.py"
    source.write_text("x = 1\n")
    assert compiled.stale(tmp_path) is None  # no extension: the pure build
    (package / f"engine{EXTENSION_SUFFIXES[0]}").write_bytes(b"")
    assert compiled.stale(tmp_path) == f"1 compiled modules but no {compiled.MANIFEST}"
    manifest = tmp_path / compiled.MANIFEST
    manifest.parent.mkdir(parents=True)
    manifest.write_text(f"{hashlib.sha256(source.read_bytes()).hexdigest()}  fastdtm/engine.py\n")
    assert compiled.stale(tmp_path) is None
    source.write_text("x = 2\n")
    assert compiled.stale(tmp_path) == "fastdtm/engine.py changed since it was compiled"
