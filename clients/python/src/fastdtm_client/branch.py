"""`BranchInfo`: who a branch call is for, as DTM puts it in the query string of every call it makes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import DtmClientError

# DTM strips these from every id it reads from a request; doing the same keeps barrier rows identical.
_STRIPPED = str.maketrans("", "", "\n\r;")


class InvalidBranchQuery(DtmClientError):
    """The query string lacks gid, trans_type, branch_id or op."""


@dataclass(frozen=True, slots=True)
class BranchInfo:
    """The identity of one branch call: `gid`, `trans_type`, `branch_id`, `op`; `dtm` (the coordinator URL)
    when the caller is an SDK (TCC try, XA action), `phase2_url` for an XA action."""

    gid: str
    trans_type: str
    branch_id: str
    op: str
    dtm: str = ""
    phase2_url: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> BranchInfo:
        """Parse DTM's query parameters; raises `InvalidBranchQuery` when an id is missing."""
        values = {key: query.get(key, "").translate(_STRIPPED) for key in ("gid", "trans_type", "branch_id", "op")}
        missing = [key for key, value in values.items() if not value]
        if missing:
            raise InvalidBranchQuery(f"branch call without {', '.join(missing)} in its query string")
        return cls(**values, dtm=query.get("dtm", ""), phase2_url=query.get("phase2_url", ""))
