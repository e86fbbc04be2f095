"""The scenario format: a scenario is a named list of steps run the same way against each coordinator. Steps
script the participant, send raw HTTP requests to the coordinator, or wait. Strings in bodies, params and URLs
may hold `{gid}` (the scenario's gid), `{busi}` (its participant's base URL) and `{topic}` (a topic name of
its own); the runner fills them in per side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.busi import Reply, ScriptEntry

TERMINAL = ("succeed", "failed")
JsonBody = dict[str, Any] | list[Any] | str | None


@dataclass(frozen=True)
class Script:
    """Answer the participant's `path` with these entries in order, the last repeating."""

    path: str
    entries: tuple[ScriptEntry, ...]


@dataclass(frozen=True)
class Request:
    """One request to the coordinator: a dict or list body is sent as JSON, a str body as raw bytes."""

    method: str
    path: str
    body: JsonBody = None
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WaitStatus:
    """Poll /query until the gid's status is one of `statuses`, for at most `timeout` seconds (no failure)."""

    gid: str = "{gid}"
    statuses: tuple[str, ...] = TERMINAL
    timeout: float = 15.0


@dataclass(frozen=True)
class WaitCalls:
    """Until the participant has had `count` calls to `path` for this scenario, for at most `timeout` s."""

    path: str
    count: int
    timeout: float = 15.0


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Script | Request | WaitStatus | WaitCalls | Sleep


@dataclass(frozen=True)
class Scenario:
    """`extra_gids`: more gids (templates) whose final /query is compared. `ordered_calls=False` for branches
    that run concurrently: their calls are compared as a sorted list."""

    id: str
    family: str
    steps: tuple[Step, ...]
    extra_gids: tuple[str, ...] = ()
    ordered_calls: bool = True
    settle: float = 0.3
    gid_override: str | None = field(default=None)

    @property
    def gid(self) -> str:
        return self.gid_override if self.gid_override is not None else f"d-{self.id}"


def post(path: str, body: JsonBody) -> Request:
    return Request("POST", "/api/dtmsvr/" + path, body)


def get(path: str, **params: str) -> Request:
    return Request("GET", "/api/dtmsvr/" + path, None, tuple(params.items()))


def query() -> Request:
    return get("query", gid="{gid}")


def script(path: str, *entries: ScriptEntry) -> Script:
    return Script(path, entries)


def hang(seconds: float) -> Reply:
    return Reply(200, delay=seconds)


def scenario(id: str, family: str, *steps: Step, **options: Any) -> Scenario:
    return Scenario(id, family, tuple(steps), **options)


def saga_body(
    steps: Sequence[tuple[str, str]], *, payloads: Sequence[str] | None = None, **options: Any
) -> dict[str, Any]:
    """A saga over the participant: (action path, compensate path) per step, retry_interval 1 s by default."""
    body: dict[str, Any] = {
        "gid": "{gid}",
        "trans_type": "saga",
        "protocol": "http",
        "steps": [{"action": "{busi}" + a, "compensate": "{busi}" + c} for a, c in steps],
        "payloads": list(payloads) if payloads is not None else [f'{{"step":{i}}}' for i in range(len(steps))],
        "retry_interval": 1,
    }
    body.update(options)
    return body


def msg_body(actions: Sequence[str], **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "gid": "{gid}",
        "trans_type": "msg",
        "protocol": "http",
        "steps": [{"action": a if a.startswith("topic://") else "{busi}" + a} for a in actions],
        "payloads": [f'{{"step":{i}}}' for i in range(len(actions))],
        "query_prepared": "{busi}/msg/query",
        "retry_interval": 1,
    }
    body.update(options)
    return body
