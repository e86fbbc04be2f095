"""Background recovery: shard leases split between live nodes, and each owner polls its shards.

Every node announces itself with a heartbeat. From the live node list each node computes, by
rendezvous hashing, the shards it should own; it acquires those leases when free, renews what it
holds, and releases what now belongs to another node, so shards rebalance as nodes come and go.
A dead node's leases expire after the lease TTL and its shards move to the survivors.

Each tick, `claim_due` takes the due transactions of the owned shards that need a look (checking the
lease token in the same script: a node that lost its lease cannot claim) and hands them to the engine,
with a bound on rounds in flight. A shard needs a look when what its last claim said comes due, when its
wake count moved (a write made something due soon), or after `Settings.shard_look` at the latest: so an
idle node costs Redis a few hundred commands a second, not a claim per shard per tick.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence

from fastdtm.clock import Clock
from fastdtm.config import Settings
from fastdtm.drain import finish_or_cancel
from fastdtm.engine import Engine
from fastdtm.errors import StoreError
from fastdtm.log_throttle import FaultLog
from fastdtm.metrics import Metrics
from fastdtm.store.base import Store
from fastdtm.ticker import Ticker

log = logging.getLogger(__name__)

#: How long a stopping node tries to release its leases and leave the node list.
HAND_OVER_TIMEOUT = 5.0


def rendezvous_owner(shard: int, nodes: Sequence[str]) -> str:
    """The node with the highest hash for this shard: stable, and minimal movement on change."""

    def weight(node: str) -> bytes:
        return hashlib.blake2b(f"{node}/{shard}".encode(), digest_size=8).digest()

    return max(nodes, key=weight)


def heartbeat_ttl_ms(settings: Settings) -> int:
    """How long a node counts as alive after its last heartbeat: three heartbeats."""
    return int(settings.node_heartbeat * 3000)


class Cron:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        settings: Settings,
        clock: Clock,
        metrics: Metrics,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.monotonic = monotonic
        self.metrics = metrics
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.node_id = settings.node_id
        # The token makes a restarted node with the same id a different lease holder.
        self.lease = f"{settings.node_id} {secrets.token_hex(8)}"
        self.owned: set[int] = set()
        #: shard -> the `time.monotonic()` it needs a claim by; a shard not in it needs one now (just acquired).
        #: Monotonic, not the wall clock: a wall clock set back must not put the looks off.
        self._looks: dict[int, float] = {}
        #: shard -> the wake count seen before its last claim.
        self._wakes: dict[int, int] = {}
        self._rounds: set[asyncio.Task[None]] = set()
        self._renew_faults = FaultLog(log, "lease renewals", unit="shards")
        self._move_faults = FaultLog(log, "lease moves", unit="shards")
        self._wake_faults = FaultLog(log, "wake count reads")
        self._leaving: asyncio.Task[None] | None = None
        self._tickers = [
            Ticker("cron-membership", settings.node_heartbeat, self.membership),
            Ticker("cron-renew", settings.lease_renew, self.renew),
            Ticker("cron-poll", settings.cron_interval, self.poll),
        ]

    @property
    def _ttl_ms(self) -> int:
        return int(self.settings.lease_ttl * 1000)

    def start(self) -> None:
        for ticker in self._tickers:
            ticker.start()

    def leave(self) -> asyncio.Task[None]:
        """Stop claiming and hand the shards over (the drain's first step); rounds running go on. Idempotent."""
        if self._leaving is None:
            self._leaving = asyncio.get_running_loop().create_task(self._leave(), name="cron-leave")
        return self._leaving

    async def _leave(self) -> None:
        for ticker in self._tickers:
            await ticker.stop()
        # Now, not when the leases expire: the other nodes claim this node's due work within a tick. Bounded,
        # because a node stopping while Redis is unreachable must still stop.
        hand_over = asyncio.get_running_loop().create_task(self._hand_over(sorted(self.owned)))
        _, unfinished = await asyncio.wait({hand_over}, timeout=HAND_OVER_TIMEOUT)
        if unfinished:
            hand_over.cancel()
            log.warning("could not hand the shards over in time; they move when their leases expire")
        self.owned.clear()
        self.metrics.leases_held(0)

    async def stop(self, deadline: float) -> None:
        """Leave, let running rounds finish until `deadline` (time.monotonic()), then cancel the rest: each
        hands its transaction back as it stops (Engine)."""
        await self.leave()
        await finish_or_cancel(self._rounds, deadline)

    async def _hand_over(self, shards: list[int]) -> None:
        released = await asyncio.gather(
            *(self.store.release_lease(shard, self.lease) for shard in shards), return_exceptions=True
        )
        failed = [r for r in released if isinstance(r, BaseException)]
        if failed:
            log.warning("could not release %d shards: %s", len(failed), failed[0])
        try:
            await self.store.heartbeat(self.node_id, self.clock.now_ms(), 0)
        except StoreError as exc:
            log.warning("could not leave the node list: %s", exc)

    async def membership(self) -> None:
        """Heartbeat, then move leases towards the rendezvous assignment over the live nodes."""
        heartbeat_ttl = heartbeat_ttl_ms(self.settings)
        nodes = await self.store.heartbeat(self.node_id, self.clock.now_ms(), heartbeat_ttl)
        if self.node_id not in nodes:
            nodes.append(self.node_id)
        mine = {s for s in range(self.store.shards) if rendezvous_owner(s, nodes) == self.node_id}
        # All at once (one round trip per Redis node) and each on its own: a shard whose master is down must
        # not keep this node from the shards of the healthy ones.
        leaving, coming = sorted(self.owned - mine), sorted(mine - self.owned)
        store = self.store
        replies = await asyncio.gather(
            *(store.release_lease(shard, self.lease) for shard in leaving),
            *(store.acquire_lease(shard, self.lease, self._ttl_ms) for shard in coming),
            return_exceptions=True,
        )
        failed: list[BaseException] = []
        for shard, reply in zip([*leaving, *coming], replies, strict=True):
            if isinstance(reply, StoreError):
                failed.append(reply)  # tried again next tick; a release not done expires with its TTL
            elif isinstance(reply, BaseException):
                raise reply
            elif shard in mine and reply:
                self.owned.add(shard)
                self._looks.pop(shard, None)  # looked at in the next poll
            elif shard not in mine:
                self.owned.discard(shard)
        if failed:
            self._move_faults.failed(failed[0], len(failed))
        else:
            self._move_faults.succeeded()
        self.metrics.leases_held(len(self.owned))

    async def renew(self) -> None:
        """Renew every owned lease; drop a shard only when its store says the lease is not ours.

        A shard whose renewal failed (its master unreachable) stays owned: the lease is not known lost,
        and it need not be, since `claim_due` checks the lease token in the same script: once the lease
        expired or moved, that shard's claims fail with LeaseLost and `poll` drops it then.
        """
        shards = sorted(self.owned)
        renewed = await self.store.renew_leases(shards, self.lease, self._ttl_ms)
        lost = [shard for shard, ok in zip(shards, renewed, strict=True) if ok is False]
        unknown = sum(ok is None for ok in renewed)
        if lost:
            # An event, not a lasting fault: the shards are dropped, so they are not reported again.
            log.warning("lost the lease of %d shards: %s", len(lost), _shard_list(lost))
            self.owned.difference_update(lost)
        if unknown:
            # The store's error is in its own "claims failing" line: the same master fails both.
            self._renew_faults.failed("no answer from their store; the leases are kept", unknown)
        else:
            self._renew_faults.succeeded()
        self.metrics.leases_held(len(self.owned))

    async def poll(self) -> None:
        """Claim the due transactions of the owned shards that need a look, as many as there is room for."""
        room = self.settings.cron_concurrency - len(self._rounds)
        if room <= 0 or not self.owned or self._leaving is not None:
            return
        shards, counts = await self._to_look_at()
        if not shards:
            return
        now, looked = self.clock.now_ms(), self.monotonic()
        until = now + int(self.settings.retry_interval * 1000)
        limit = min(room, self.settings.claim_batch)
        started = time.perf_counter()
        claims = await self.store.claim_due_many(shards, self.lease, now, limit, until)
        self.metrics.claimed(sum(len(c.gids) for c in claims.values() if c is not None), time.perf_counter() - started)
        self.metrics.shards_looked_at(len(shards))
        latest = looked + self.settings.shard_look
        for shard, claim in claims.items():
            if claim is None:
                self.owned.discard(shard)  # fenced: another node holds this shard now
                continue
            # Told in wall ms (the writers' clocks); kept as a delay from this look.
            wait = latest if claim.next_ms is None else looked + (claim.next_ms - now) / 1000
            self._looks[shard] = min(wait, latest)
            for gid in claim.gids:
                self._dispatch(gid)
        # Only now: a tick that failed before its claims leaves the wakes it saw to the next one.
        self._wakes.update(counts)
        self.metrics.leases_held(len(self.owned))

    async def _to_look_at(self) -> tuple[list[int], dict[int, int]]:
        """The owned shards due for a look (by the schedule their last claim told, or woken since), and the
        wake counts read."""
        owned = sorted(self.owned)
        # Forget what belongs to shards gone since: one that comes back is looked at at once.
        for gone in self._looks.keys() - self.owned:
            del self._looks[gone]
            self._wakes.pop(gone, None)
        # Bounded: the counts live on one Redis node, and a frozen one must not hold up the claims on the others.
        try:
            counts = await asyncio.wait_for(self.store.wake_counts(owned), self.settings.cron_interval)
        except (StoreError, TimeoutError) as exc:
            # Not known: every shard, as if all were woken (as the cron did before it had wakes).
            self._wake_faults.failed(exc if isinstance(exc, StoreError) else "no answer within a tick")
            return owned, {}
        self._wake_faults.succeeded()
        # Half a tick ahead: a look due just after this tick is taken now, not a whole tick late.
        horizon = self.monotonic() + self.settings.cron_interval / 2
        seen = dict(zip(owned, counts, strict=True))
        due = [s for s in owned if self._wakes.get(s) != seen[s] or self._looks.get(s, 0.0) <= horizon]
        return due, seen

    def _dispatch(self, gid: str) -> None:
        task = asyncio.get_running_loop().create_task(self._advance(gid))
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _advance(self, gid: str) -> None:
        try:
            await self.engine.advance(gid)
        except StoreError as exc:
            log.warning("cron round stopped: %s", exc, extra={"gid": gid})
        except Exception:
            log.exception("cron round failed", extra={"gid": gid})


def _shard_list(shards: Sequence[int], shown: int = 20) -> str:
    """The first shards by number, and how many more: a line stays short when a whole master's worth moves."""
    listed = ", ".join(map(str, shards[:shown]))
    return listed + (f" and {len(shards) - shown} more" if len(shards) > shown else "")
