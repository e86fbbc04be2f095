"""SAGA scenarios: outcomes of actions and compensations, retries, timeouts, concurrency, wait_result."""

from __future__ import annotations

from tests.support.busi import Reply

from ..scenario import WaitCalls, WaitStatus, hang, post, query, saga_body, scenario, script

TWO = (("/a1", "/c1"), ("/a2", "/c2"))
THREE = (("/a1", "/c1"), ("/a2", "/c2"), ("/a3", "/c3"))

SCENARIOS = (
    scenario("saga-success", "saga", post("submit", saga_body(TWO)), WaitStatus(), query()),
    scenario("saga-action-409", "saga", script("/a2", 409), post("submit", saga_body(TWO)), WaitStatus()),
    scenario(
        "saga-failure-body",
        "saga",
        script("/a2", (200, '{"dtm_result":"FAILURE"}')),
        post("submit", saga_body(TWO)),
        WaitStatus(),
    ),
    scenario("saga-first-action-409", "saga", script("/a1", 409), post("submit", saga_body(TWO)), WaitStatus()),
    scenario(
        "saga-ongoing-then-success", "saga", script("/a1", 425, 200), post("submit", saga_body(TWO)), WaitStatus()
    ),
    scenario("saga-500-then-success", "saga", script("/a2", 500, 200), post("submit", saga_body(TWO)), WaitStatus()),
    scenario(
        "saga-500-twice-then-success",
        "saga",
        script("/a1", 500, 500, 200),
        post("submit", saga_body(TWO)),
        WaitStatus(timeout=20),
    ),
    scenario(
        "saga-hang-past-request-timeout",
        "saga",
        script("/a1", hang(2.5), 200),
        post("submit", saga_body(TWO, request_timeout=1)),
        WaitCalls("/a1", 1),
        WaitStatus(timeout=20),
        settle=2.0,
    ),
    scenario(
        "saga-compensate-500-then-success",
        "saga",
        script("/a2", 409),
        script("/c1", 500, 200),
        post("submit", saga_body(TWO)),
        WaitStatus(),
    ),
    scenario(
        "saga-compensate-ongoing-then-success",
        "saga",
        script("/a2", 409),
        script("/c2", 425, 200),
        post("submit", saga_body(TWO)),
        WaitStatus(),
    ),
    scenario(
        "saga-concurrent-orders",
        "saga",
        post(
            "submit",
            saga_body(THREE, concurrent=True, custom_data='{"concurrent":true,"orders":{"2":[0,1]}}'),
        ),
        WaitStatus(),
        ordered_calls=False,
    ),
    scenario(
        "saga-concurrent-409",
        "saga",
        script("/a3", 409),
        post(
            "submit",
            saga_body(THREE, concurrent=True, custom_data='{"concurrent":true,"orders":{"2":[0,1]}}'),
        ),
        WaitStatus(),
        ordered_calls=False,
    ),
    scenario("saga-wait-result-success", "saga", post("submit", saga_body(TWO, wait_result=True)), query()),
    scenario("saga-wait-result-409", "saga", script("/a2", 409), post("submit", saga_body(TWO, wait_result=True))),
    scenario(
        "saga-wait-result-ongoing",
        "saga",
        script("/a1", 425, 200),
        post("submit", saga_body(TWO, wait_result=True)),
        WaitStatus(),
    ),
    scenario(
        "saga-wait-result-500",
        "saga",
        script("/a1", 500, 200),
        post("submit", saga_body(TWO, wait_result=True)),
        WaitStatus(),
    ),
    scenario(
        "saga-timeout-to-fail",
        "saga",
        script("/a2", 500, 200),
        post("submit", saga_body(TWO, timeout_to_fail=1)),
        WaitStatus(),
    ),
    scenario(
        "saga-retry-interval-2",
        "saga",
        script("/a1", 500, 200),
        post("submit", saga_body(TWO, retry_interval=2)),
        WaitStatus(timeout=20),
    ),
    scenario(
        "saga-branch-headers",
        "saga",
        post("submit", saga_body(TWO, branch_headers={"X-Tenant": "t1", "X-Trace": "abc"})),
        WaitStatus(),
    ),
    scenario(
        "saga-old-format",
        "saga",
        post(
            "submit",
            {
                "gid": "{gid}",
                "trans_type": "saga",
                "steps": [{"action": "{busi}/a1", "compensate": "{busi}/c1", "data": '{"old":1}'}],
                "retry_interval": 1,
            },
        ),
        WaitStatus(),
    ),
    scenario("saga-empty-payload-get", "saga", post("submit", saga_body(TWO, payloads=["", ""])), WaitStatus()),
    scenario(
        "saga-resubmit-succeeded",
        "saga",
        post("submit", saga_body(TWO, wait_result=True)),
        post("submit", saga_body(TWO)),
    ),
    scenario(
        "saga-prepare-then-submit",
        "saga",
        post("prepare", saga_body(TWO)),
        query(),
        post("submit", saga_body(TWO)),
        WaitStatus(),
    ),
    scenario(
        "saga-custom-reply-body",
        "saga",
        script("/a1", Reply(200, '{"dtm_result":"SUCCESS","extra":1}')),
        post("submit", saga_body(TWO, wait_result=True)),
    ),
)
