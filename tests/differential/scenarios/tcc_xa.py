"""TCC and XA scenarios: prepare, registerBranch, submit or abort, second-phase retries, timeouts."""

from __future__ import annotations

from typing import Any

from ..scenario import WaitStatus, post, query, scenario, script


def tcc(**options: Any) -> dict[str, Any]:
    return {"gid": "{gid}", "trans_type": "tcc", "protocol": "http", "retry_interval": 1, **options}


def branch(branch_id: str) -> dict[str, str]:
    return {
        "gid": "{gid}",
        "trans_type": "tcc",
        "branch_id": branch_id,
        "data": f'{{"b":"{branch_id}"}}',
        "confirm": "{busi}/confirm" + branch_id,
        "cancel": "{busi}/cancel" + branch_id,
    }


def xa(**options: Any) -> dict[str, Any]:
    return {"gid": "{gid}", "trans_type": "xa", "protocol": "http", "retry_interval": 1, **options}


def xa_branch(branch_id: str) -> dict[str, str]:
    return {"gid": "{gid}", "trans_type": "xa", "branch_id": branch_id, "url": "{busi}/xa" + branch_id}


REGISTERED = (post("prepare", tcc()), post("registerBranch", branch("01")), post("registerBranch", branch("02")))
XA_REGISTERED = (
    post("prepare", xa()),
    post("registerBranch", xa_branch("01")),
    post("registerBranch", xa_branch("02")),
)

SCENARIOS = (
    scenario("tcc-prepare", "tcc", post("prepare", tcc()), query()),
    scenario("tcc-prepare-twice", "tcc", post("prepare", tcc()), post("prepare", tcc())),
    scenario("tcc-submit", "tcc", *REGISTERED, query(), post("submit", tcc()), WaitStatus()),
    scenario("tcc-abort", "tcc", *REGISTERED, post("abort", tcc(rollback_reason="try failed")), WaitStatus()),
    scenario("tcc-submit-wait-result", "tcc", *REGISTERED, post("submit", tcc(wait_result=True))),
    scenario("tcc-abort-wait-result", "tcc", *REGISTERED, post("abort", tcc(wait_result=True))),
    scenario(
        "tcc-confirm-500-then-success",
        "tcc",
        script("/confirm02", 500, 200),
        *REGISTERED,
        post("submit", tcc()),
        WaitStatus(),
    ),
    scenario(
        "tcc-confirm-500-wait-result",
        "tcc",
        script("/confirm01", 500, 200),
        post("prepare", tcc(wait_result=True)),
        post("registerBranch", branch("01")),
        post("submit", tcc(wait_result=True)),
        WaitStatus(),
    ),
    scenario(
        "tcc-cancel-500-then-success",
        "tcc",
        script("/cancel01", 500, 200),
        *REGISTERED,
        post("abort", tcc()),
        WaitStatus(),
    ),
    scenario(
        "tcc-register-after-submit",
        "tcc",
        *REGISTERED,
        post("submit", tcc(wait_result=True)),
        post("registerBranch", branch("03")),
    ),
    scenario("tcc-register-unknown-gid", "tcc", post("registerBranch", branch("01"))),
    scenario("tcc-register-duplicate", "tcc", *REGISTERED, post("registerBranch", branch("01")), query()),
    scenario(
        "tcc-timeout",
        "tcc",
        post("prepare", tcc(timeout_to_fail=1)),
        post("registerBranch", branch("01")),
        WaitStatus(),
    ),
    scenario("tcc-abort-after-submit", "tcc", *REGISTERED, post("submit", tcc(wait_result=True)), post("abort", tcc())),
    scenario(
        "tcc-legacy-register-alias", "tcc", post("prepare", tcc()), post("registerTccBranch", branch("01")), query()
    ),
    scenario("xa-commit", "xa", *XA_REGISTERED, query(), post("submit", xa()), WaitStatus()),
    scenario("xa-rollback", "xa", *XA_REGISTERED, post("abort", xa()), WaitStatus()),
    scenario(
        "xa-commit-500-then-success",
        "xa",
        script("/xa01", 500, 200),
        *XA_REGISTERED,
        post("submit", xa()),
        WaitStatus(),
    ),
    scenario(
        "xa-timeout",
        "xa",
        post("prepare", xa(timeout_to_fail=1)),
        post("registerBranch", xa_branch("01")),
        WaitStatus(),
    ),
    scenario(
        "xa-legacy-register-alias", "xa", post("prepare", xa()), post("registerXaBranch", xa_branch("01")), query()
    ),
    scenario("xa-submit-wait-result", "xa", *XA_REGISTERED, post("submit", xa(wait_result=True))),
)
