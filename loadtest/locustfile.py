"""Locust load test of a fastdtm deployment: one user class per transaction type, all against one base URL.

`--host` is the deployment (a node or its load balancer); the branches point to a participant service whose base
URL is in `FASTDTM_PARTICIPANT` (default http://127.0.0.1:8081, see `loadtest/participant.py`). Every task is one
whole transaction with a fresh gid and waits for its result (`wait_result`), so a request's latency is the
coordinator's end-to-end time. A reply counts as a failure unless it is HTTP 200 and its body has no `FAILURE`.

    locust -f loadtest/locustfile.py --headless -u 20 -r 10 -t 30s --host http://127.0.0.1:36789
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from locust import FastHttpUser, constant, task
from locust.contrib.fasthttp import ResponseContextManager

API = "/api/dtmsvr"
PARTICIPANT = os.environ.get("FASTDTM_PARTICIPANT", "http://127.0.0.1:8081").rstrip("/")
PAYLOAD = '{"amount":30}'


def branch(path: str) -> str:
    return f"{PARTICIPANT}/api/{path}"


def new_gid(kind: str) -> str:
    # Unique without a round trip to /newGid, so the coordinator's figures are the transaction's alone.
    return f"locust-{kind}-{uuid.uuid4().hex}"


class DtmUser(FastHttpUser):
    """Base class: `call` sends one request and judges its reply; the subclasses are the workloads."""

    abstract = True
    wait_time = constant(0)  # closed loop: each user starts its next transaction as soon as one ends

    def call(self, name: str, url: str, body: dict[str, Any] | None = None) -> bool:
        """POST `body` (GET when None) to `url`; True when the reply is a success (200, no FAILURE)."""
        if body is None:
            context = self.client.get(url, name=name, catch_response=True)
        else:
            context = self.client.post(url, json=body, name=name, catch_response=True)
        response: ResponseContextManager
        with context as response:
            text = response.text or ""
            if response.status_code != 200 or "FAILURE" in text:
                response.failure(f"HTTP {response.status_code}: {text[:200]}")  # type: ignore[no-untyped-call]
                return False
            response.success()  # type: ignore[no-untyped-call]
            return True


class SagaUser(DtmUser):
    """A 2-branch saga (TransOut, TransIn, each with its compensation), submitted with wait_result."""

    @task
    def saga(self) -> None:
        body = {
            "gid": new_gid("saga"),
            "trans_type": "saga",
            "steps": [
                {"action": branch("TransOut"), "compensate": branch("TransOutRevert")},
                {"action": branch("TransIn"), "compensate": branch("TransInRevert")},
            ],
            "payloads": [PAYLOAD, PAYLOAD],
            "wait_result": True,
        }
        self.call("saga submit", f"{API}/submit", body)


class MsgUser(DtmUser):
    """A 2-phase message with one branch: prepare, then submit with wait_result."""

    @task
    def msg(self) -> None:
        body: dict[str, Any] = {
            "gid": new_gid("msg"),
            "trans_type": "msg",
            "steps": [{"action": branch("TransIn")}],
            "payloads": [PAYLOAD],
            "query_prepared": branch("QueryPrepared"),
        }
        if self.call("msg prepare", f"{API}/prepare", body):
            self.call("msg submit", f"{API}/submit", {**body, "wait_result": True})


class TccUser(DtmUser):
    """TCC with 2 branches: prepare, per branch registerBranch then its try call, then submit with wait_result."""

    @task
    def tcc(self) -> None:
        gid = new_gid("tcc")
        if not self.call("tcc prepare", f"{API}/prepare", {"gid": gid, "trans_type": "tcc"}):
            return
        for branch_id, op in (("01", "TransOut"), ("02", "TransIn")):
            registered = self.call(
                "tcc registerBranch",
                f"{API}/registerBranch",
                {
                    "gid": gid,
                    "trans_type": "tcc",
                    "branch_id": branch_id,
                    "status": "prepared",
                    "data": PAYLOAD,
                    "confirm": branch(f"{op}Confirm"),
                    "cancel": branch(f"{op}Cancel"),
                },
            )
            if not (registered and self.call("tcc try", branch(f"{op}Try"), {"amount": 30})):
                self.call("tcc abort", f"{API}/abort", {"gid": gid, "trans_type": "tcc"})
                return
        self.call("tcc submit", f"{API}/submit", {"gid": gid, "trans_type": "tcc", "wait_result": True})
