"""The one table from a store operation's tagged reply to an exception, shared by every store.

Lua scripts (Redis) and SQL transactions (embedded) answer the same small tagged lists, e.g.
`{"OK"}`, `{"STALE", current}`, `{"NOT_FOUND"}`; `raise_for` turns the refusals into the typed
errors of `fastdtm.errors`, so both stores fail the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastdtm.errors import Fenced, Held, LeaseLost, ProtocolMismatch, Refused, Stale, TransNotFound


def raise_for(reply: Sequence[Any], gid: str, *, trans_type: str = "", shard: int = 0, limit: int = 0) -> None:
    """Raise the error a refusal tag stands for; return for any other (successful) tag."""
    tag = reply[0]
    if tag == "NOT_FOUND":
        raise TransNotFound(gid)
    if tag in ("STALE", "NOT_PREPARED"):
        raise Stale(reply[1])
    if tag == "FENCED":
        raise Fenced(reply[1])
    if tag == "HELD":
        raise Held(int(reply[1]))
    if tag == "WRONG_TYPE":
        raise Refused(f"transaction '{gid}' is a {reply[1]}, not a {trans_type}")
    if tag == "TOO_MANY":
        raise Refused(f"transaction '{gid}' has {reply[1]} branches: no more may be registered (at most {limit})")
    if tag == "DUPLICATE":
        raise Refused(f"branch {reply[1].removeprefix('u:')} of '{gid}' is already registered (UniqueKeyConflict)")
    if tag == "WRONG_PROTOCOL":
        raise ProtocolMismatch(reply[1])
    if tag == "LEASE_LOST":
        raise LeaseLost(f"shard {shard}")
