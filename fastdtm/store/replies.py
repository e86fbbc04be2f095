"""The one table from a store operation's tagged reply to an exception, shared by every store.

Lua scripts (Redis) and SQL transactions (embedded) answer the same small tagged lists, e.g.
`{"OK"}`, `{"STALE", current}`, `{"NOT_FOUND"}`; `raise_for` turns the refusals into the typed
errors of `fastdtm.errors`, so both stores fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from fastdtm.errors import (
    BranchDecided,
    Fenced,
    Held,
    LeaseLost,
    NoSuchBranch,
    NotPaused,
    Paused,
    ProtocolMismatch,
    Refused,
    Stale,
    StoreError,
    TransNotFound,
)

#: Tags whose error needs only the reply's second element (the current status, holder, time, ...).
_BY_VALUE: Final[Mapping[str, Callable[[str], StoreError]]] = {
    "STALE": Stale,
    "NOT_PREPARED": Stale,
    "FENCED": Fenced,
    "HELD": lambda until: Held(int(until)),
    "PAUSED": lambda since: Paused(int(since)),
    "NOT_PAUSED": NotPaused,
    "BRANCH_DONE": BranchDecided,
    "WRONG_PROTOCOL": ProtocolMismatch,
}


def raise_for(reply: Sequence[Any], gid: str, *, trans_type: str = "", shard: int = 0, limit: int = 0) -> None:
    """Raise the error a refusal tag stands for; return for any other (successful) tag."""
    tag = reply[0]
    if tag in _BY_VALUE:
        raise _BY_VALUE[tag](reply[1])
    if tag == "NOT_FOUND":
        raise TransNotFound(gid)
    if tag == "NO_BRANCH":
        raise NoSuchBranch(f"transaction '{gid}' has no such branch")
    if tag == "WRONG_TYPE":
        raise Refused(f"transaction '{gid}' is a {reply[1]}, not a {trans_type}")
    if tag == "TOO_MANY":
        raise Refused(f"transaction '{gid}' has {reply[1]} branches: no more may be registered (at most {limit})")
    if tag == "DUPLICATE":
        raise Refused(f"branch {reply[1].removeprefix('u:')} of '{gid}' is already registered (UniqueKeyConflict)")
    if tag == "LEASE_LOST":
        raise LeaseLost(f"shard {shard}")
