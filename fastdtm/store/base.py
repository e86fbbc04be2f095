"""The Store protocol: the only way the engine, the API and the cron touch state.

Every method that changes a transaction is one atomic compare-and-set (one Lua script on Redis):
nothing reads, decides in Python and writes back.

A round holds the transaction it acts on (see `lua/take.lua`): `take`, `take_over` and a round's `create`
record its token as the holder, with the hold's end; each of its writes names the token (refused with
`Fenced` once another round took the transaction) and moves the hold's end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Protocol

from fastdtm.errors import BadRequest
from fastdtm.models import ASCII_DIGITS, GID_PATTERN, MAX_TIME_MS, Branch, Transaction
from fastdtm.notes import Notes
from fastdtm.records import record
from fastdtm.states import HTTP, BranchStatus, TransStatus, can_transition


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
    #: A round's write: its round's hold token ("": not a round's write, not checked).
    holder: str = ""
    #: A round's write: when its hold ends from now on (0: released, the round is over).
    held_until_ms: int = 0
    #: The type the writer takes the transaction for ("": not checked, the writer knows, as a round
    #: does); a transaction of another type is refused (Refused), nothing written.
    trans_type: str = ""
    #: A round's last write: "<now_ms>" when the round ended in an error (a retry; the console's "needs
    #: attention"), "-" when it ended without one, "" leaves it (lua/transition.lua, ARGV[8]).
    attention: str = ""

    def __post_init__(self) -> None:
        # The table in states.py is the law: a change outside it is a bug, refused before any write.
        if self.status is not self.expected and not can_transition(self.expected, self.status):
            raise ValueError(f"{self.gid}: {self.expected} -> {self.status} is not an allowed transition")


#: The status changes `take_over` makes (from prepared): each starts a round on what a prepare stored.
_TAKE_OVER_TO = (TransStatus.SUBMITTED, TransStatus.ABORTING)


def check_take_over(change: Change) -> int:
    """The schedule (and hold's end) of a change `take_over` makes; raises ValueError for any other change."""
    # Identity tests rather than a set of tuples: an enum member hashes in Python, on every submit.
    moves = change.expected is TransStatus.PREPARED and change.status in _TAKE_OVER_TO
    if not moves or change.next_cron_ms is None or not change.trans_type:
        raise ValueError(
            f"{change.gid}: take_over is prepared -> submitted or aborting with a schedule and a type, "
            f"not {change.expected} -> {change.status}"
        )
    return change.next_cron_ms


@record
class Taken:
    """A transaction a round has just taken, as stored."""

    trans: Transaction
    branches: list[Branch]
    #: The hold's end (ms): the round sends no branch call after it unless a write extends it.
    held_until_ms: int


@record
class Claimed:
    """What one shard's claim took, and when the shard next needs the cron."""

    gids: list[str]
    #: The earliest time (ms) anything left in the shard is scheduled, a transaction or an expiry to retire;
    #: None: nothing is. A later write can only add something earlier if it wakes the shard (`wake_counts`).
    next_ms: int | None


@record
class ListQuery:
    """Filters and cursor of `/all`."""

    limit: int = 100
    position: str = ""
    status: str = ""
    trans_type: str = ""
    create_from_ms: int = 0
    create_to_ms: int = 0


def parse_position(position: str, shards: int) -> tuple[int, int, str] | None:
    """The `/all` cursor every store issues, `<shard>:<create_ms>:<gid>` (the last one listed), as
    (shard, create_ms, gid); None for "" (from the start). Anything else no store of `shards` shards could
    have issued is the caller's mistake (BadRequest)."""
    if not position:
        return None
    shard, _, rest = position.partition(":")
    score, _, gid = rest.partition(":")
    if not (
        ASCII_DIGITS.fullmatch(shard)
        and int(shard) < shards
        and ASCII_DIGITS.fullmatch(score)
        and int(score) <= MAX_TIME_MS
        and GID_PATTERN.fullmatch(gid)
    ):
        raise BadRequest(f"position '{position[:100]}' is not a cursor this server returned.")
    return int(shard), int(score), gid


@record
class BranchMarking:
    """An operator's decision on one branch (lua/admin_mark.lua)."""

    gid: str
    index: int
    branch_id: str
    op: str
    #: The transaction status the decision was checked against; the store refuses it if it changed.
    expected: TransStatus
    status: BranchStatus
    #: notes.mark_value: action, reason, time.
    mark: str
    now_ms: int
    holder: str


@record
class AttentionPage:
    """A page of the "needs attention" view: gids by since when, oldest first, and the cursor after them."""

    gids: Sequence[tuple[str, int]]
    next_position: str


def parse_attention_position(position: str) -> tuple[int, str] | None:
    """The attention cursor every store issues, `<since_ms>:<gid>` (the last one listed)."""
    if not position:
        return None
    score, _, gid = position.partition(":")
    if not (ASCII_DIGITS.fullmatch(score) and int(score) <= MAX_TIME_MS and GID_PATTERN.fullmatch(gid)):
        raise BadRequest(f"position '{position[:100]}' is not a cursor this server returned.")
    return int(score), gid


@record
class ListPage:
    transactions: Sequence[Transaction]
    next_position: str


class Store(Protocol):
    shards: int

    async def create(self, trans: Transaction, branches: Sequence[Branch], *, holder: str = "") -> TransStatus | None:
        """Insert if the gid is absent: None when created, else the stored status.

        holder: the token of the creating round, which holds it until its `next_cron_ms`."""
        ...

    async def load(self, gid: str) -> tuple[Transaction, list[Branch]] | None: ...

    async def transition(self, change: Change) -> None:
        """Apply a change if the status is still `change.expected` (and, for a round's write, the holder
        `change.holder`); raises Stale / Fenced / TransNotFound."""
        ...

    async def take(self, gid: str, now_ms: int, held_until_ms: int, holder: str) -> Taken | None:
        """Hold an unfinished transaction for the round `holder` until `held_until_ms` (also its schedule)
        and read it; raises Held if another round's hold ends after `now_ms`. None: absent or finished (no
        longer scheduled)."""
        ...

    async def take_over(self, change: Change, holder: str) -> Taken:
        """`change` (prepared -> submitted or aborting, with a schedule) as a transition that hands the
        transaction to the round `holder`, held until the schedule, read back atomically; raises Stale /
        TransNotFound having written nothing."""
        ...

    async def register_branches(
        self, gid: str, trans_type: str, branches: Sequence[Branch], now_ms: int, protocol: str = HTTP
    ) -> None:
        """Append branches while the transaction is prepared and of `protocol` (how the branches' bodies are kept);
        raises TransNotFound, Stale, Refused, ProtocolMismatch."""
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

    async def claim_due(self, shard: int, lease: str, now_ms: int, limit: int, until_ms: int) -> Claimed:
        """Due gids of a shard, pushed to `until_ms`, and the shard's next schedule after them; raises LeaseLost
        if `lease` is not held."""
        ...

    async def claim_due_many(
        self, shards: Sequence[int], lease: str, now_ms: int, limit: int, until_ms: int
    ) -> dict[int, Claimed | None]:
        """claim_due for each shard in one go: None where the lease is lost; a shard whose server failed has
        claimed nothing and is due at once (`next_ms` 0), so the next tick tries it again."""
        ...

    async def wake_counts(self, shards: Sequence[int]) -> list[int]:
        """Each shard's wake count. It changes after any write that made something in the shard due sooner than
        the store's `wake_within_ms` from the write's `now` (a short retry interval, resetNextCronTime, a resume,
        a hand-back): so an owner that saw a shard's next schedule need look again only at that schedule, at
        its wake, or after `wake_within_ms` (less the clock skew). Raises StoreUnavailable: then the owner must
        look at every shard."""
        ...

    async def acquire_lease(self, shard: int, lease: str, ttl_ms: int) -> bool:
        """Take the shard's lease if nobody holds it, or renew it if `lease` does: an acquire that timed out
        may have run after all, and its retry must not find the lease taken by its own token."""
        ...

    async def renew_leases(self, shards: Sequence[int], lease: str, ttl_ms: int) -> Sequence[bool | None]:
        """Extend each shard's lease if `lease` still holds it: True renewed, False not ours (gone or
        another node's), None unknown (that shard's server could not be reached: not known lost, and
        the other shards are still renewed). The embedded store, which fails as a whole, raises
        StoreUnavailable instead and never answers None."""
        ...

    async def release_lease(self, shard: int, lease: str) -> bool: ...

    async def lease_holder(self, shard: int) -> str | None: ...

    async def heartbeat(self, node_id: str, now_ms: int, ttl_ms: int) -> list[str]:
        """Announce this node until now + ttl; returns the live node ids."""
        ...

    async def list_transactions(self, query: ListQuery) -> ListPage: ...

    # The operator's console (fastdtm/console.py): one script per action, as every other change.

    async def load_notes(self, gid: str) -> tuple[Transaction, list[Branch], Notes] | None:
        """`load` with what the console shows beyond DTM's fields (fastdtm/notes.py)."""
        ...

    async def pause(self, gid: str, now_ms: int, holder: str) -> bool:
        """Pause the retries of a submitted or aborting transaction; False if it was paused already. Raises
        TransNotFound, Stale (another status), Held (a round acts on it now)."""
        ...

    async def resume(self, gid: str, now_ms: int) -> None:
        """Resume a paused transaction's retries, due at once. Raises TransNotFound, NotPaused."""
        ...

    async def mark_branch(self, marking: BranchMarking) -> None:
        """Record an operator's decision on a branch; the transaction is due at once unless paused. Raises
        TransNotFound, Stale, Held, NoSuchBranch, BranchDecided."""
        ...

    async def attention(self, position: str, limit: int) -> AttentionPage:
        """Unfinished transactions whose rounds end in errors, or paused, oldest first."""
        ...

    async def unfinished_count(self) -> int: ...

    async def nodes(self) -> list[tuple[str, int]]:
        """The live nodes' ids with their heartbeat expiry (ms), as `heartbeat` keeps them."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
