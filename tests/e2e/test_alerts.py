"""The alert webhook (DTM's AlertWebHook): a branch that keeps failing is reported once its retry
interval has doubled `--alert-retry-limit` times; the transaction still finishes."""

from __future__ import annotations

import httpx

from tests.support.busi import BusiServer
from tests.support.node import NodeFactory, wait_status


def test_a_branch_that_keeps_failing_is_reported(node_factory: NodeFactory, store_url: str, busi: BusiServer) -> None:
    node = node_factory(
        store_url, "--alert-webhook", busi.url("/alert"), "--alert-retry-limit", "2", "--retry-interval", "0.2"
    )
    busi.script("/TransIn", [500, 500, 500, 200])
    gid = "alerted-msg"
    body = {"gid": gid, "trans_type": "msg", "steps": [{"action": busi.url("/TransIn")}], "payloads": ["{}"]}
    assert httpx.post(f"{node.dtm}/submit", json=body).status_code == 200
    wait_status(node, gid, {"succeed"}, timeout=15)
    alerts = [c.json() for c in busi.calls("/alert")]
    # Intervals 0.4, 0.8, 1.6 s after the three errors: doubled 1, 2, 3 times; alerts from 2 on.
    assert [a["retry_count"] for a in alerts] == [2, 3]
    assert all(a["gid"] == gid and a["status"] == "submitted" for a in alerts)
    assert alerts[0]["branch"] == busi.url("/TransIn")
    assert alerts[0]["error"].endswith('unkown result will be retried: {"message":"ERROR"}')  # DTM's words
