"""Operator endpoints: forceStop in each status, the cron resets, /all and its filters, /query, newGid."""

from __future__ import annotations

from ..scenario import Request, WaitStatus, get, post, query, saga_body, scenario, script
from .tcc_xa import tcc

STOP = post("forceStop", {"gid": "{gid}"})
SAGA = (("/a1", "/c1"),)

SCENARIOS = (
    scenario("op-force-stop-prepared", "operator", post("prepare", tcc()), STOP, query()),
    scenario("op-force-stop-succeed", "operator", post("submit", saga_body(SAGA, wait_result=True)), STOP),
    scenario(
        "op-force-stop-failed", "operator", script("/a1", 409), post("submit", saga_body(SAGA)), WaitStatus(), STOP
    ),
    scenario("op-force-stop-unknown", "operator", STOP),
    scenario(
        "op-reset-next-cron-time",
        "operator",
        post("prepare", tcc()),
        post("resetNextCronTime", {"gid": "{gid}"}),
        query(),
    ),
    scenario("op-reset-next-cron-time-unknown", "operator", post("resetNextCronTime", {"gid": "{gid}"})),
    scenario(
        "op-reset-cron-time",
        "operator",
        post("prepare", tcc(retry_interval=60)),
        get("resetCronTime", timeout="10", limit="5"),
    ),
    scenario("op-reset-cron-time-empty", "operator", get("resetCronTime")),
    scenario("op-all-gid", "operator", post("prepare", tcc()), get("all", gid="{gid}")),
    scenario("op-all-gid-unknown", "operator", get("all", gid="{gid}")),
    scenario(
        "op-all-filters",
        "operator",
        post("prepare", tcc()),
        post("submit", {**saga_body(SAGA, wait_result=True), "gid": "{gid}-2"}),
        get("all", status="succeed"),
        get("all", transType="tcc"),
        get("all", status="failed"),
        extra_gids=("{gid}-2",),
    ),
    scenario("op-query-unknown", "operator", query()),
    scenario("op-query-without-gid", "operator", get("query")),
    scenario("op-new-gid", "operator", get("newGid")),
    scenario("op-version", "operator", get("version")),
    scenario("op-ping", "operator", Request("GET", "/api/ping")),
)
