"""Workflow scenarios: prepareWorkflow, progresses registered and read back, the submit verdicts."""

from __future__ import annotations

from typing import Any

from ..scenario import post, query, scenario


def workflow(**options: Any) -> dict[str, Any]:
    return {
        "gid": "{gid}",
        "trans_type": "workflow",
        "protocol": "http",
        "custom_data": '{"name":"wf","data":"e30="}',
        "query_prepared": "{busi}/wf/resume",
        **options,
    }


def progress(branch_id: str, op: str, status: str, **extra: str) -> dict[str, str]:
    return {"gid": "{gid}", "trans_type": "workflow", "branch_id": branch_id, "op": op, "status": status, **extra}


def verdict(status: str, reason: str = "") -> dict[str, Any]:
    return {"gid": "{gid}", "trans_type": "workflow", "req_extra": {"status": status, "rollback_reason": reason}}


SYNC = {"sync": "1"}
SCENARIOS = (
    scenario("wf-prepare", "workflow", post("prepareWorkflow", workflow())),
    scenario(
        "wf-progresses",
        "workflow",
        post("prepareWorkflow", workflow()),
        post("registerBranch", progress("01", "action", "succeed", data='{"ok":1}', **SYNC)),
        post("registerBranch", progress("02", "action", "failed", data="no money", **SYNC)),
        post("prepareWorkflow", workflow()),
    ),
    scenario(
        "wf-submit-succeed",
        "workflow",
        post("prepareWorkflow", workflow()),
        post("registerBranch", progress("01", "action", "succeed", **SYNC)),
        post("submit", verdict("succeed")),
        query(),
    ),
    scenario(
        "wf-submit-failed",
        "workflow",
        post("prepareWorkflow", workflow()),
        post("registerBranch", progress("01", "action", "failed", data="refused", **SYNC)),
        post("registerBranch", progress("01", "compensate", "succeed", **SYNC)),
        post("submit", verdict("failed", "refused")),
        query(),
    ),
    scenario(
        "wf-register-duplicate",
        "workflow",
        post("prepareWorkflow", workflow()),
        post("registerBranch", progress("01", "action", "succeed", **SYNC)),
        post("registerBranch", progress("01", "action", "succeed", **SYNC)),
    ),
    scenario(
        "wf-submit-without-status",
        "workflow",
        post("prepareWorkflow", workflow()),
        post("submit", {"gid": "{gid}", "trans_type": "workflow"}),
    ),
    scenario(
        "wf-prepare-after-finish",
        "workflow",
        post("prepareWorkflow", workflow()),
        post("submit", verdict("succeed")),
        post("prepareWorkflow", workflow()),
    ),
)
