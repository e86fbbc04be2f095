"""Running one scenario on one side: this module owns filling in the templates, sending each request, waiting,
and collecting the `Transcript` (every coordinator reply, the final /query of each gid, the participant's calls
for this scenario's gids, in arrival order). It compares nothing: see compare.py."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.busi import Call

from .coordinators import Side
from .scenario import Request, Scenario, Script, Sleep, Step, WaitCalls, WaitStatus

CLIENT_TIMEOUT = 20.0
#: How long a finished transaction's `/query` must stay the same to count as settled.
SETTLE_S = 0.3


@dataclass
class Transcript:
    """What one side did, before normalisation. `replies`: (label, status, body) per request."""

    replies: list[tuple[str, int, Any]] = field(default_factory=list)
    queries: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)


class Templates:
    def __init__(self, scenario: Scenario, side: Side) -> None:
        self._values = {"{gid}": scenario.gid, "{busi}": side.busi.base, "{topic}": f"t-{scenario.id}"}

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            for key, replacement in self._values.items():
                value = value.replace(key, replacement)
            return value
        if isinstance(value, list):
            return [self.fill(item) for item in value]
        if isinstance(value, dict):
            return {self.fill(key): self.fill(item) for key, item in value.items()}
        return value


def run(scenario: Scenario, side: Side) -> Transcript:
    transcript = Transcript()
    templates = Templates(scenario, side)
    with httpx.Client(base_url=side.base, timeout=CLIENT_TIMEOUT) as client:
        for step in scenario.steps:
            _run_step(step, client, side, templates, transcript)
        time.sleep(scenario.settle)
        gids = [scenario.gid, *(templates.fill(extra) for extra in scenario.extra_gids)]
        _settle(client, side, set(gids))
        for gid in gids:
            response = client.get("/api/dtmsvr/query", params={"gid": gid})
            transcript.queries[gid] = _body(response)
    transcript.calls = [_call_record(call) for call in side.busi.calls() if _gid_of(call) in set(gids)]
    return transcript


def _settle(client: httpx.Client, side: Side, gids: set[str], timeout: float = 5.0) -> None:
    """Until the scenario's `/query` replies and the participant's calls stay the same for SETTLE_S: what is
    compared must not be a snapshot of a round still running on one side."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        now = (
            [client.get("/api/dtmsvr/query", params={"gid": gid}).text for gid in sorted(gids)],
            sum(1 for call in side.busi.calls() if _gid_of(call) in gids),
        )
        if now == seen:
            return
        seen = now
        time.sleep(SETTLE_S)


def _run_step(step: Step, client: httpx.Client, side: Side, templates: Templates, transcript: Transcript) -> None:
    if isinstance(step, Script):
        side.busi.script(step.path, list(step.entries))
    elif isinstance(step, Request):
        label = f"{step.method} {step.path}"  # the template, the same on both sides
        response = _send(client, step, templates)
        transcript.replies.append((label, response.status_code, _body(response)))
    elif isinstance(step, WaitStatus):
        _wait_status(client, templates.fill(step.gid), step.statuses, step.timeout)
    elif isinstance(step, WaitCalls):
        deadline = time.monotonic() + step.timeout
        while len(side.busi.calls(step.path)) < step.count and time.monotonic() < deadline:
            time.sleep(0.05)
    elif isinstance(step, Sleep):
        time.sleep(step.seconds)


def _send(client: httpx.Client, step: Request, templates: Templates) -> httpx.Response:
    params = [(name, templates.fill(value)) for name, value in step.params]
    if step.body is None:
        return client.request(step.method, templates.fill(step.path), params=params)
    if isinstance(step.body, str):
        content = templates.fill(step.body).encode()
    else:
        content = json.dumps(templates.fill(step.body)).encode()
    headers = {"Content-Type": "application/json"}
    return client.request(step.method, templates.fill(step.path), params=params, content=content, headers=headers)


def _wait_status(client: httpx.Client, gid: str, statuses: tuple[str, ...], timeout: float) -> None:
    """Until the status is one of `statuses` and the whole `/query` reply stays the same for SETTLE_S: Go DTM's
    Redis store writes branch results from a background goroutine after the call (docs/compatibility.md,
    "when a branch result is stored"), so its status can be final before its branches are."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, AttributeError):
            reply = client.get("/api/dtmsvr/query", params={"gid": gid}).json()
            transaction = reply.get("transaction")
            if isinstance(transaction, dict) and transaction.get("status") in statuses:
                if reply == seen:
                    return
                seen = reply
                time.sleep(SETTLE_S)
                continue
        time.sleep(0.1)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"<text>": response.text}


def _gid_of(call: Call) -> str | None:
    gid = call.query.get("gid")
    if gid is None and call.body:
        with contextlib.suppress(ValueError, AttributeError):
            gid = call.json().get("params", {}).get("gid")
    return gid


def _call_record(call: Call) -> dict[str, Any]:
    try:
        body: Any = call.json() if call.body else None
    except ValueError:
        body = call.body.decode(errors="replace")
    headers = {name: value for name, value in call.headers.items() if name.startswith("x-") or name == "content-type"}
    return {"method": call.method, "path": call.path, "query": call.query, "headers": headers, "body": body}
