"""Msg scenarios: direct submit, prepare then submit or abort, the check-back's answers, branch retries."""

from __future__ import annotations

from ..scenario import WaitStatus, msg_body as body, post, query, scenario, script

# Prepared and left alone: the cron asks query_prepared once it has timed out (1 s).
CHECKED = {"timeout_to_fail": 1}

SCENARIOS = (
    scenario("msg-submit", "msg", post("submit", body(["/m1", "/m2"])), WaitStatus()),
    scenario(
        "msg-prepare-submit",
        "msg",
        post("prepare", body(["/m1"])),
        query(),
        post("submit", body(["/m1"])),
        WaitStatus(),
    ),
    scenario("msg-prepare-twice", "msg", post("prepare", body(["/m1"])), post("prepare", body(["/m1"])), query()),
    scenario(
        "msg-prepare-abort",
        "msg",
        post("prepare", body(["/m1"])),
        post("abort", {"gid": "{gid}", "trans_type": "msg"}),
        query(),
    ),
    scenario(
        "msg-submit-after-abort",
        "msg",
        post("prepare", body(["/m1"])),
        post("abort", {"gid": "{gid}", "trans_type": "msg"}),
        post("submit", body(["/m1"])),
    ),
    scenario(
        "msg-check-success", "msg", script("/msg/query", 200), post("prepare", body(["/m1"], **CHECKED)), WaitStatus()
    ),
    scenario(
        "msg-check-failure", "msg", script("/msg/query", 409), post("prepare", body(["/m1"], **CHECKED)), WaitStatus()
    ),
    scenario(
        "msg-check-ongoing",
        "msg",
        script("/msg/query", 425, 200),
        post("prepare", body(["/m1"], **CHECKED)),
        WaitStatus(timeout=20),
    ),
    scenario(
        "msg-check-500",
        "msg",
        script("/msg/query", 500, 200),
        post("prepare", body(["/m1"], **CHECKED)),
        WaitStatus(timeout=20),
    ),
    scenario(
        "msg-action-500-then-success",
        "msg",
        script("/m2", 500, 200),
        post("submit", body(["/m1", "/m2"])),
        WaitStatus(),
    ),
    scenario("msg-action-409", "msg", script("/m1", 409, 200), post("submit", body(["/m1"])), WaitStatus()),
    scenario("msg-wait-result", "msg", post("submit", body(["/m1"], wait_result=True)), query()),
    scenario(
        "msg-concurrent",
        "msg",
        post("submit", body(["/m1", "/m2", "/m3"], concurrent=True)),
        WaitStatus(),
        ordered_calls=False,
    ),
)
