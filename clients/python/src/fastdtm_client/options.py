"""What every global transaction sends: `TransOptions` (DTM's option fields, sent only when set, as the Go
SDK's omitempty does), the JSON body built from them, and the branch-id generator of TCC and XA."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DtmClientError

MAX_SUB_BRANCHES = 99
MAX_PARENT_ID_LENGTH = 20


@dataclass(slots=True)
class TransOptions:
    """DTM's per-transaction options, all in seconds; 0 / empty means the coordinator's default."""

    wait_result: bool = False
    timeout_to_fail: int = 0
    request_timeout: int = 0
    retry_interval: int = 0
    #: Saga only: immediate retries of a failing action within one round before the saga aborts.
    retry_limit: int = 0
    #: Extra HTTP headers on every call the coordinator makes to a branch.
    branch_headers: dict[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "wait_result": self.wait_result,
            "timeout_to_fail": self.timeout_to_fail,
            "request_timeout": self.request_timeout,
            "retry_interval": self.retry_interval,
            "retry_limit": self.retry_limit,
            "branch_headers": self.branch_headers,
        }
        return {key: value for key, value in fields.items() if value}


def trans_body(gid: str, trans_type: str, options: TransOptions, **extra: Any) -> dict[str, Any]:
    """The body of prepare/submit/abort: gid, trans_type, protocol, the set options, and `extra` if not empty.

    `concurrent` is always present, as in the Go SDK (the server's options JSON relies on it)."""
    body: dict[str, Any] = {"gid": gid, "trans_type": trans_type, "protocol": "http", **options.to_wire()}
    body["concurrent"] = bool(extra.pop("concurrent", False))
    body.update({key: value for key, value in extra.items() if value})
    return body


class BranchIdGenerator:
    """Sub-branch ids as DTM numbers them: the parent id followed by a 2-digit counter (01..99)."""

    def __init__(self, parent_id: str = "") -> None:
        if len(parent_id) >= MAX_PARENT_ID_LENGTH:
            raise DtmClientError(f"branch id {parent_id!r} is too long to nest under")
        self.parent_id = parent_id
        self._count = 0

    def next(self) -> str:
        if self._count >= MAX_SUB_BRANCHES:
            raise DtmClientError(f"more than {MAX_SUB_BRANCHES} branches under {self.parent_id!r}")
        self._count += 1
        return f"{self.parent_id}{self._count:02d}"


def branch_query(dtm: str, gid: str, trans_type: str, branch_id: str, op: str) -> Mapping[str, str]:
    """The query string an SDK puts on a branch call it makes itself (`dtm` lets the branch nest)."""
    return {"dtm": dtm, "gid": gid, "trans_type": trans_type, "branch_id": branch_id, "op": op}
