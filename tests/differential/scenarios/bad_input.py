"""Bad input: malformed bodies, missing or wrong fields, unknown gids, a request of the wrong status or type."""

from __future__ import annotations

from ..scenario import Request, post, query, saga_body, scenario
from .tcc_xa import branch, tcc

SAGA = (("/a1", "/c1"),)

SCENARIOS = (
    scenario("bad-invalid-json", "bad input", Request("POST", "/api/dtmsvr/submit", "{not json")),
    scenario("bad-missing-gid", "bad input", post("submit", {**saga_body(SAGA), "gid": ""})),
    scenario("bad-trans-type", "bad input", post("submit", {**saga_body(SAGA), "trans_type": "nope"})),
    scenario("bad-abort-unknown-gid", "bad input", post("abort", tcc())),
    scenario("bad-submit-unknown-tcc", "bad input", post("submit", tcc(wait_result=True)), query()),
    scenario(
        "bad-prepare-finished",
        "bad input",
        post("submit", saga_body(SAGA, wait_result=True)),
        post("prepare", saga_body(SAGA)),
    ),
    scenario(
        "bad-abort-saga",
        "bad input",
        post("submit", saga_body(SAGA, wait_result=True)),
        post("abort", {"gid": "{gid}", "trans_type": "saga"}),
    ),
    scenario(
        "bad-register-non-string",
        "bad input",
        post("prepare", tcc()),
        post("registerBranch", {**branch("01"), "branch_id": 1}),
    ),
    scenario(
        "bad-register-unknown-type",
        "bad input",
        post("prepare", tcc()),
        post("registerBranch", {**branch("01"), "trans_type": "nope"}),
    ),
    scenario(
        "bad-abort-submitted-tcc",
        "bad input",
        post("prepare", tcc()),
        post("submit", tcc(wait_result=True)),
        post("abort", tcc()),
    ),
    scenario("bad-empty-body", "bad input", Request("POST", "/api/dtmsvr/prepare", "")),
)
