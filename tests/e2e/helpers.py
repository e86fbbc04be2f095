"""Small readers of `/query` replies and busi call logs shared by the end-to-end scenarios."""

from __future__ import annotations

import base64
from typing import Any

from tests.support.busi import BusiServer, Call

#: Status letters as the reference's scenario tables write branch lists.
LETTER = {"prepared": "p", "succeed": "s", "failed": "f"}


def statuses(reply: dict[str, Any]) -> str:
    """Branch statuses in /query order as letters, e.g. "psps"."""
    return "".join(LETTER[b["status"]] for b in reply["branches"])


def branch_rows(reply: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(b["branch_id"], b["op"], b["status"]) for b in reply["branches"]]


def bodies(reply: dict[str, Any]) -> list[str]:
    return [base64.b64decode(b.get("bin_data", "")).decode() for b in reply["branches"]]


def sequence(busi: BusiServer, gid: str) -> list[tuple[str, str, str, str]]:
    """(path, branch_id, op, method) of every call the server made for this gid, in order."""
    return [(c.path, c.query.get("branch_id", ""), c.query.get("op", ""), c.method) for c in _of(busi, gid)]


def paths(busi: BusiServer, gid: str) -> list[str]:
    return [c.path for c in _of(busi, gid)]


def _of(busi: BusiServer, gid: str) -> list[Call]:
    return sorted((c for c in busi.calls() if c.query.get("gid") == gid), key=lambda c: c.at)
