"""The Store protocol: the only way the engine, the API and the cron touch state.

Every method that changes a transaction is one atomic compare-and-set (one Lua script on Redis):
nothing reads, decides in Python and writes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Protocol

from fastdtm.models import Branch, Transaction
from fastdtm.records import record
from fastdtm.states import TransStatus, can_transition


@record
class Change:
    """One transition of one transaction: status CAS, branch progress, schedule, extra fields."""

    gid: str
    expected: TransStatus
    status: TransStatus
    now_ms: int
    #: Branches whose status changed, by index in the branch list.
    branches: Mapping[int, Branch] = field(default_factory=dict)
    rollback_reason: str = ""
    #: Other stored fields to overwrite (custom_data, options, ...), already encoded.
    fields: Mapping[str, str] = field(default_factory=dict)
    #: New schedule; None leaves it as it is. Ignored when `status` is finished.
    next_cron_ms: int | None = None
    interval_ms: int | None = None

    def __post_init__(self) -> None:
        # The table in states.py is the law: a change outside it is a bug, refused before any write.
        if self.status is not self.expected and not can_transition(self.expected, self.status):
            raise ValueError(f"{self.gid}: {self.expected} -> {self.status} is not an allowed transition")


@record
class ListQuery:
    """Filters and cursor of `/all`."""

    limit: int = 100
    position: str = ""
    status: str = ""
    trans_type: str = ""
    create_from_ms: int = 0
    create_to_ms: int = 0


@record
class ListPage:
    transactions: Sequence[Transaction]
    next_position: str


class Store(Protocol):
    shards: int

    async def create(self, trans: Transaction, branches: Sequence[Branch]) -> TransStatus | None:
        """Insert if the gid is absent: None when created, else the stored status."""
        ...

    async def load(self, gid: str) -> tuple[Transaction, list[Branch]] | None: ...

    async def transition(self, change: Change) -> None:
        """Apply a change if the status is still `change.expected`; raises Stale / TransNotFound."""
        ...

    async def promote(self, change: Change) -> tuple[Transaction, list[Branch]]:
        """`change` (prepared -> submitted, with a schedule) as a transition, then the stored transaction
        and branches as `load` reads them, atomically; raises Stale / TransNotFound having written nothing."""
        ...

    async def register_branches(self, gid: str, trans_type: str, branches: Sequence[Branch], now_ms: int) -> None:
        """Append branches while the transaction is prepared; raises TransNotFound, Stale, Refused."""
        ...

    async def touch(self, gid: str, next_cron_ms: int, now_ms: int) -> TransStatus:
        """Reschedule an unfinished transaction; returns its status. Raises TransNotFound."""
        ...

    async def reset_cron(self, threshold_ms: int, now_ms: int, limit: int) -> tuple[int, bool]:
        """Schedule at `now_ms` up to `limit` transactions due after `threshold_ms`.

        Returns (moved, limit_hit): as DTM's `has_remaining`, True means "the limit was reached, call
        again" (some may be left), not a promise that some are.
        """
        ...

    async def forget(self, gid: str) -> None:
        """Drop a gid from the due index (its data is gone)."""
        ...

    async def claim_due(self, shard: int, lease: str, now_ms: int, limit: int, until_ms: int) -> list[str]:
        """Due gids of a shard, pushed to `until_ms`; raises LeaseLost if `lease` is not held."""
        ...

    async def claim_due_many(
        self, shards: Sequence[int], lease: str, now_ms: int, limit: int, until_ms: int
    ) -> dict[int, list[str] | None]:
        """claim_due for each shard in one go: shard -> its gids, or None if the lease is lost there."""
        ...

    async def acquire_lease(self, shard: int, lease: str, ttl_ms: int) -> bool: ...

    async def renew_leases(self, shards: Sequence[int], lease: str, ttl_ms: int) -> list[bool]: ...

    async def release_lease(self, shard: int, lease: str) -> bool: ...

    async def lease_holder(self, shard: int) -> str | None: ...

    async def heartbeat(self, node_id: str, now_ms: int, ttl_ms: int) -> list[str]:
        """Announce this node until now + ttl; returns the live node ids."""
        ...

    async def list_transactions(self, query: ListQuery) -> ListPage: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
