"""Background recovery: shard leases split between live nodes, and each owner polls its shards.

Every node announces itself with a heartbeat. From the live node list each node computes, by
rendezvous hashing, the shards it should own; it acquires those leases when free, renews what it
holds, and releases what now belongs to another node, so shards rebalance as nodes come and go.
A dead node's leases expire after the lease TTL and its shards move to the survivors.

Each tick, for every owned shard, `claim_due` takes due transactions (checking the lease token in
the same script: a node that lost its lease cannot claim) and hands them to the engine, with a
bound on rounds in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Sequence

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
    def __init__(self, store: Store, engine: Engine, settings: Settings, clock: Clock, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.node_id = settings.node_id
        # The token makes a restarted node with the same id a different lease holder.
        self.lease = f"{settings.node_id} {secrets.token_hex(8)}"
        self.owned: set[int] = set()
        self._rounds: set[asyncio.Task[None]] = set()
        self._renew_faults = FaultLog(log, "lease renewals", unit="shards")
        self._move_faults = FaultLog(log, "lease moves", unit="shards")
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
        """Claim due transactions of every owned shard, as many as there is room for."""
        room = self.settings.cron_concurrency - len(self._rounds)
        if room <= 0 or not self.owned or self._leaving is not None:
            return
        now = self.clock.now_ms()
        until = now + int(self.settings.retry_interval * 1000)
        limit = min(room, self.settings.claim_batch)
        shards = sorted(self.owned)
        started = time.perf_counter()
        claims = await self.store.claim_due_many(shards, self.lease, now, limit, until)
        self.metrics.claimed(sum(len(c) for c in claims.values() if c), time.perf_counter() - started)
        for shard, claim in claims.items():
            if claim is None:
                self.owned.discard(shard)  # fenced: another node holds this shard now
                continue
            for gid in claim:
                self._dispatch(gid)
        self.metrics.leases_held(len(self.owned))

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
