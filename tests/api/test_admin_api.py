"""The console's endpoints (/api/admin/) on a real node, on the three stores: the "needs attention" view with
each failing branch's last error, retry now, pause / resume, skip / fail a branch with a reason shown by
/query, bulk actions with a confirmed count, the live figures, nodes and leases; and every refusal (finished,
wrong status, unknown branch, bad input) as a 4xx that changes nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.busi import BusiServer
from tests.support.node import FastdtmNode, query, wait_status

NEVER = 600  # timeout_to_fail (s): a failing saga keeps retrying for the whole test instead of aborting


@pytest.fixture
def busi() -> Iterator[BusiServer]:
    with BusiServer() as server:
        yield server


@pytest.fixture
def admin(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{node.base}/api/admin", timeout=15) as client:
        yield client


@pytest.fixture
def dtm(node: FastdtmNode) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=node.dtm, timeout=15) as client:
        yield client


def new_gid(prefix: str = "adm") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def submit_saga(dtm: httpx.Client, busi: BusiServer, gid: str, tag: str, **options: Any) -> None:
    body = {
        "gid": gid,
        "trans_type": "saga",
        "steps": [
            {"action": busi.url(f"/{tag}/A1"), "compensate": busi.url(f"/{tag}/C1")},
            {"action": busi.url(f"/{tag}/A2"), "compensate": busi.url(f"/{tag}/C2")},
        ],
        "payloads": ['{"n":1}', '{"n":2}'],
        "timeout_to_fail": NEVER,
        **options,
    }
    reply = dtm.post("/submit", json=body)
    assert reply.status_code == 200, reply.text


def detail(admin: httpx.Client, gid: str) -> dict[str, Any]:
    reply = admin.get("/transaction", params={"gid": gid})
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def wait_retries(admin: httpx.Client, gid: str, at_least: int = 1, timeout: float = 15) -> dict[str, Any]:
    """The detail once the transaction's rounds have ended in an error `at_least` times."""
    deadline = time.monotonic() + timeout
    found = detail(admin, gid)
    while found["transaction"]["retries"] < at_least:
        assert time.monotonic() < deadline, f"{gid}: no failed round recorded: {found}"
        time.sleep(0.05)
        found = detail(admin, gid)
    return found


def wait_unheld(admin: httpx.Client, gid: str, timeout: float = 10) -> None:
    """Until no round holds the transaction (actions are refused while one acts on it)."""
    deadline = time.monotonic() + timeout
    while (held := detail(admin, gid)["transaction"]["held_until_ms"]) and held > time.time() * 1000:
        assert time.monotonic() < deadline, f"{gid}: still held"
        time.sleep(0.05)


def act(admin: httpx.Client, action: str, gid: str, **body: Any) -> httpx.Response:
    """An action; a round acting at that moment makes it 409 "try again": try again, as an operator does."""
    deadline = time.monotonic() + 10
    while True:
        reply = admin.post(f"/{action}", json={"gid": gid, **body})
        if reply.status_code != 409 or "try again" not in reply.text or time.monotonic() > deadline:
            return reply
        time.sleep(0.05)


def failing_saga(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer, path: str, replies: list[int], **options: Any
) -> str:
    """A saga whose branch at `path` (A1, A2, C1, ...) answers `replies`, once a round of it has failed."""
    gid = new_gid()
    busi.script(f"/{gid}/{path}", replies)
    submit_saga(dtm, busi, gid, gid, **options)
    wait_retries(admin, gid)
    return gid


def finished_saga(dtm: httpx.Client, busi: BusiServer) -> str:
    gid = new_gid("done")
    submit_saga(dtm, busi, gid, gid, wait_result=True)
    return gid


# --- needs attention, last errors ------------------------------------------------------------------------


def test_a_failing_branch_shows_its_last_error_retries_and_next_attempt(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer
) -> None:
    gid = new_gid()
    busi.script(f"/{gid}/A2", [(500, "database is locked <b>now</b>")])
    submit_saga(dtm, busi, gid, gid)
    found = wait_retries(admin, gid, at_least=2)
    trans, branches = found["transaction"], found["branches"]
    assert trans["status"] == "submitted" and trans["failing_since_ms"] and trans["next_cron_time_ms"]
    a2 = next(b for b in branches if b["branch_id"] == "02" and b["op"] == "action")
    assert a2["last_error"]["code"] == "HTTP 500"
    assert a2["last_error"]["outcome"] == "ERROR"
    assert "database is locked <b>now</b>" in a2["last_error"]["detail"]
    assert a2["can_skip"] and a2["can_fail"]
    a1 = next(b for b in branches if b["branch_id"] == "01" and b["op"] == "action")
    assert a1["status"] == "succeed" and a1["last_error"] is None and not a1["can_skip"]
    compensate = next(b for b in branches if b["op"] == "compensate")
    assert not compensate["can_skip"] and not compensate["can_fail"]  # not called while submitted

    listed = _attention_rows(admin)
    row = next(r for r in listed if r["gid"] == gid)
    assert row["retries"] >= 2 and [b["branch_id"] for b in row["branches"]] == ["02"]
    assert row["branches"][0]["last_error"]["code"] == "HTTP 500"
    # Oldest first.
    since = [r["failing_since_ms"] or 0 for r in listed if not r["paused"]]
    assert since == sorted(since)
    act(admin, "pause", gid)  # not left retrying for the rest of the module


def _attention_rows(admin: httpx.Client) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    position = ""
    for _ in range(100):
        reply = admin.get("/attention", params={"limit": 3, "position": position})
        assert reply.status_code == 200, reply.text
        page = reply.json()
        rows += page["transactions"]
        position = page["next_position"]
        if not position:
            return rows
    raise AssertionError("attention pages never end")


def test_attention_pages_list_each_transaction_once(admin: httpx.Client, dtm: httpx.Client, busi: BusiServer) -> None:
    gids = [new_gid("page") for _ in range(7)]
    for gid in gids:
        busi.script(f"/{gid}/A1", [500])
        submit_saga(dtm, busi, gid, gid)
    for gid in gids:
        wait_retries(admin, gid)
    listed = [row["gid"] for row in _attention_rows(admin)]
    assert len(listed) == len(set(listed))
    assert set(gids) <= set(listed)
    for gid in gids:
        assert act(admin, "pause", gid).status_code == 200


def test_a_transaction_leaves_the_view_when_it_finishes(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    gid = failing_saga(admin, dtm, busi, "A1", [500, 500, 200])
    wait_status(node, gid, {"succeed"}, timeout=20)
    assert gid not in [row["gid"] for row in _attention_rows(admin)]


# --- skip and fail ---------------------------------------------------------------------------------------


def test_skip_a_failing_action_and_the_saga_goes_on_to_succeed(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    gid = failing_saga(admin, dtm, busi, "A2", [500])
    reply = act(admin, "skip", gid, branch_id="02", op="action", reason="applied by hand, ticket OPS-7")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"gid": gid, "branch_id": "02", "op": "action", "status": "succeed"}
    shown = wait_status(node, gid, {"succeed"})
    a2 = next(b for b in shown["branches"] if b["branch_id"] == "02" and b["op"] == "action")
    assert a2["status"] == "succeed"
    assert a2["operator"]["action"] == "skip"
    assert a2["operator"]["reason"] == "applied by hand, ticket OPS-7"
    assert gid not in [row["gid"] for row in _attention_rows(admin)]
    # Finished: every action is refused, nothing changes.
    for action, extra in (
        ("skip", {"branch_id": "01", "op": "compensate", "reason": "x"}),
        ("fail", {"branch_id": "01", "op": "compensate", "reason": "x"}),
        ("pause", {}),
        ("resume", {}),
        ("retry", {}),
    ):
        refused = admin.post(f"/{action}", json={"gid": gid, **extra})
        assert refused.status_code == 409, (action, refused.text)
    assert query(node, gid) == shown


def test_fail_a_failing_action_and_the_saga_compensates(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    gid = failing_saga(admin, dtm, busi, "A2", [500])
    reply = act(admin, "fail", gid, branch_id="02", op="action", reason="the payee account is closed")
    assert reply.status_code == 200, reply.text
    shown = wait_status(node, gid, {"failed"})
    busi.wait_calls(f"/{gid}/C1", 1)
    a2 = next(b for b in shown["branches"] if b["branch_id"] == "02" and b["op"] == "action")
    assert a2["status"] == "failed" and a2["operator"]["reason"] == "the payee account is closed"


def test_skip_a_compensation_retried_forever_and_the_saga_ends_failed(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    gid = new_gid()
    busi.script(f"/{gid}/A2", [409])
    busi.script(f"/{gid}/C1", [500])
    submit_saga(dtm, busi, gid, gid)
    wait_retries(admin, gid)
    found = detail(admin, gid)
    assert found["transaction"]["status"] == "aborting"
    c1 = next(b for b in found["branches"] if b["branch_id"] == "01" and b["op"] == "compensate")
    assert c1["can_skip"] and not c1["can_fail"]
    refused = act(admin, "fail", gid, branch_id="01", op="compensate", reason="no")
    assert refused.status_code == 409 and "cannot be failed" in refused.json()["message"]
    reply = act(admin, "skip", gid, branch_id="01", op="compensate", reason="refunded manually")
    assert reply.status_code == 200, reply.text
    shown = wait_status(node, gid, {"failed"})
    c1 = next(b for b in shown["branches"] if b["branch_id"] == "01" and b["op"] == "compensate")
    assert c1["operator"]["action"] == "skip"


def test_mark_refusals_change_nothing(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    gid = failing_saga(admin, dtm, busi, "A2", [500])
    act(admin, "pause", gid)  # nothing moves meanwhile
    before = query(node, gid)
    cases: list[tuple[dict[str, Any], int]] = [
        ({"branch_id": "09", "op": "action", "reason": "x"}, 404),  # no such branch
        ({"branch_id": "01", "op": "action", "reason": "x"}, 409),  # succeeded already
        ({"branch_id": "02", "op": "compensate", "reason": "x"}, 409),  # not called while submitted
        ({"branch_id": "02", "op": "action", "reason": ""}, 422),  # no reason
        ({"branch_id": "02", "op": "action", "reason": "   "}, 422),
        ({"branch_id": "02", "op": "action", "reason": "x" * 501}, 422),
        ({"branch_id": "02", "op": "action"}, 422),
        ({"branch_id": 2, "op": "action", "reason": "x"}, 422),
        ({"op": "action", "reason": "x"}, 422),
    ]
    for body, status in cases:
        reply = admin.post("/skip", json={"gid": gid, **body})
        assert reply.status_code == status, (body, reply.text)
        assert reply.json()["message"]
    assert (
        admin.post("/skip", json={"gid": new_gid(), "branch_id": "01", "op": "action", "reason": "x"}).status_code
        == 404
    )
    assert query(node, gid) == before


# --- pause, resume, retry now -----------------------------------------------------------------------------


def test_pause_stops_the_retries_and_resume_starts_them_again(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    gid = failing_saga(admin, dtm, busi, "A1", [500])
    reply = act(admin, "pause", gid)
    assert reply.status_code == 200 and reply.json() == {"gid": gid, "paused": True, "changed": True}
    assert admin.post("/pause", json={"gid": gid}).json()["changed"] is False  # paused already: no change
    shown = query(node, gid)
    assert shown["transaction"]["paused"] is True and "next_cron_time" not in shown["transaction"]
    assert detail(admin, gid)["transaction"]["paused"] is True
    calls = len(busi.calls(f"/{gid}/A1"))
    # Retries would come every 0.5-2 s: several intervals pass without a call.
    time.sleep(2.5)
    assert len(busi.calls(f"/{gid}/A1")) == calls
    # Paused: DTM's resetNextCronTime, retry now and resetCronTime leave it alone.
    assert dtm.post("/resetNextCronTime", json={"gid": gid}).status_code == 409
    assert admin.post("/retry", json={"gid": gid}).status_code == 409
    assert dtm.post("/resetCronTime", json={"timeout": 0, "limit": 1000}).status_code == 200
    assert query(node, gid)["transaction"].get("paused") is True
    assert gid in [row["gid"] for row in _attention_rows(admin)]

    busi.script(f"/{gid}/A1", [200])
    assert admin.post("/resume", json={"gid": gid}).json() == {"gid": gid, "paused": False}
    assert admin.post("/resume", json={"gid": gid}).status_code == 409  # not paused any more
    wait_status(node, gid, {"succeed"})


def test_pause_is_for_retrying_transactions_only(admin: httpx.Client, dtm: httpx.Client, busi: BusiServer) -> None:
    prepared = new_gid()
    body = {"gid": prepared, "trans_type": "tcc"}
    assert dtm.post("/prepare", json=body).status_code == 200
    reply = admin.post("/pause", json={"gid": prepared})
    assert reply.status_code == 409 and "prepared" in reply.json()["message"]
    assert admin.post("/pause", json={"gid": new_gid()}).status_code == 404
    assert admin.post("/resume", json={"gid": new_gid()}).status_code == 404
    assert admin.post("/pause", json={"gid": finished_saga(dtm, busi)}).status_code == 409


def test_retry_now_makes_it_due_at_once(admin: httpx.Client, dtm: httpx.Client, busi: BusiServer) -> None:
    gid = new_gid()
    busi.script(f"/{gid}/A1", [500])
    submit_saga(dtm, busi, gid, gid, retry_interval=60)  # the next attempt would be a minute away
    wait_retries(admin, gid)
    wait_unheld(admin, gid)
    calls = len(busi.calls(f"/{gid}/A1"))
    reply = act(admin, "retry", gid)
    assert reply.status_code == 200, reply.text
    busi.wait_calls(f"/{gid}/A1", calls + 1)
    assert admin.post("/retry", json={"gid": new_gid()}).status_code == 404
    assert admin.post("/retry", json={"gid": finished_saga(dtm, busi)}).status_code == 409
    act(admin, "pause", gid)


# --- bulk ---------------------------------------------------------------------------------------------------


def test_bulk_force_stop_needs_the_count_it_previewed(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer, node: FastdtmNode
) -> None:
    start = int(time.time() * 1000)
    gids = [new_gid("bulk") for _ in range(5)]
    for gid in gids:
        busi.script(f"/{gid}/A1", [500])
        submit_saga(dtm, busi, gid, gid)
    end = int(time.time() * 1000) + 1
    selection = {"status": "submitted", "trans_type": "saga", "create_from_ms": start, "create_to_ms": end}
    preview = admin.post("/bulk", json={"action": "force_stop", "filter": selection})
    assert preview.status_code == 200, preview.text
    count = preview.json()["count"]
    assert count >= len(gids) and not preview.json()["capped"]
    assert set(preview.json()["sample"]) <= set(gids) | {r["gid"] for r in _attention_rows(admin)} | set(
        preview.json()["sample"]
    )
    wrong = admin.post("/bulk", json={"action": "force_stop", "filter": selection, "confirm": count + 1})
    assert wrong.status_code == 409 and wrong.json()["message"]
    for gid in gids:
        assert query(node, gid)["transaction"]["status"] == "submitted"
    applied = admin.post("/bulk", json={"action": "force_stop", "filter": selection, "confirm": count})
    assert applied.status_code == 200, applied.text
    assert applied.json()["done"] + applied.json()["refused"] == count
    for gid in gids:
        assert query(node, gid)["transaction"]["status"] == "failed"
    again = admin.post("/bulk", json={"action": "force_stop", "filter": selection})
    assert again.json()["count"] == count - applied.json()["done"]


def test_bulk_retry_now(admin: httpx.Client, dtm: httpx.Client, busi: BusiServer) -> None:
    start = int(time.time() * 1000)
    gids = [new_gid("bulkr") for _ in range(3)]
    for gid in gids:
        busi.script(f"/{gid}/A1", [500, 200])
        submit_saga(dtm, busi, gid, gid, retry_interval=60)
    for gid in gids:
        wait_retries(admin, gid)
        wait_unheld(admin, gid)
    selection = {"trans_type": "saga", "create_from_ms": start, "create_to_ms": int(time.time() * 1000) + 1}
    count = admin.post("/bulk", json={"action": "retry", "filter": selection}).json()["count"]
    applied = admin.post("/bulk", json={"action": "retry", "filter": selection, "confirm": count})
    assert applied.status_code == 200 and applied.json()["done"] >= len(gids), applied.text
    for gid in gids:
        busi.wait_calls(f"/{gid}/A2", 1)  # A1 answered 200 on the retry: the saga went on


@pytest.mark.parametrize(
    "body",
    [
        {"action": "delete_everything"},
        {"action": "retry", "filter": []},
        {"action": "retry", "filter": {"create_from_ms": "yesterday"}},
        {"action": "retry", "filter": {"create_from_ms": -1}},
        {"action": "retry", "filter": {"status": 3}},
        {"action": "retry", "filter": {"status": "stuck"}},
        {"action": "retry", "filter": {"trans_type": "2pc"}},
        {"action": "retry", "confirm": "all"},
        {"action": "retry", "confirm": True},
        {"action": "retry", "confirm": -1},
        {},
    ],
)
def test_bulk_bad_input_is_422(admin: httpx.Client, body: dict[str, Any]) -> None:
    reply = admin.post("/bulk", json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["message"]


def test_bulk_on_finished_statuses_selects_nothing(admin: httpx.Client) -> None:
    reply = admin.post("/bulk", json={"action": "force_stop", "filter": {"status": "succeed"}})
    assert reply.json()["count"] == 0


# --- figures, nodes -------------------------------------------------------------------------------------------


def test_stats_count_outcomes_and_branch_latency(admin: httpx.Client, dtm: httpx.Client, busi: BusiServer) -> None:
    finished_saga(dtm, busi)
    stats = admin.get("/stats").json()
    assert stats["node_id"] and stats["now_ms"] > 0 and stats["unfinished"] >= 0
    succeeded = [t for t in stats["transactions"] if t["trans_type"] == "saga" and t["status"] == "succeed"]
    assert succeeded and succeeded[0]["count"] >= 1
    latency = stats["branch_latency"]
    assert latency["count"] >= 2 and latency["sum_s"] > 0
    assert latency["buckets"][-1] == ["+Inf", latency["count"]]
    assert stats["branch_calls"]["count"] >= latency["count"]


def test_nodes_show_who_owns_every_shard(admin: httpx.Client, node: FastdtmNode) -> None:
    deadline = time.monotonic() + 10
    while True:
        found = admin.get("/nodes").json()
        owned = sorted(s for n in found["nodes"] for s in n["shards"])
        if owned == list(range(found["shards"])) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert owned == list(range(found["shards"])) and found["unowned"] == []
    me = next(n for n in found["nodes"] if n["node_id"] == found["node_id"])
    assert me["heartbeat_age_ms"] >= 0 and me["expires_in_ms"] > 0


# --- input -----------------------------------------------------------------------------------------------------


def test_a_gid_with_slashes_and_percent_signs_is_found(
    admin: httpx.Client, dtm: httpx.Client, busi: BusiServer
) -> None:
    gid = f"odd/{uuid.uuid4().hex[:8]}?x=%2F#y"
    submit_saga(dtm, busi, gid, "odd", wait_result=True)
    assert detail(admin, gid)["transaction"]["gid"] == gid


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/transaction", {}, 422),
        ("GET", "/transaction", {"params": {"gid": "has space"}}, 422),
        ("GET", "/transaction", {"params": {"gid": "never-created-gid"}}, 404),
        ("POST", "/retry", {"content": b"{not json"}, 400),
        ("POST", "/retry", {"json": ["gid"]}, 400),
        ("POST", "/retry", {"json": {}}, 422),
        ("POST", "/pause", {"json": {"gid": 7}}, 422),
        ("GET", "/attention", {"params": {"limit": "0"}}, 422),
        ("GET", "/attention", {"params": {"limit": "x"}}, 422),
        ("GET", "/attention", {"params": {"position": "not-a-cursor"}}, 400),
        ("GET", "/retry", {}, 405),
    ],
)
def test_bad_requests(admin: httpx.Client, method: str, path: str, kwargs: dict[str, Any], status: int) -> None:
    reply = admin.request(method, path, **kwargs)
    assert reply.status_code == status, reply.text
