"""The Redis store, standalone or Redis Cluster: one method per Lua script, errors mapped once.

Scripts are loaded from `fastdtm/lua/*.lua` and called with EVALSHA; a server that lost its script
cache (restart, failover) answers NOSCRIPT and the script is loaded again. Every key a script
touches shares the shard's hash tag (see `sharding`), so the same calls work on a cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Sequence
from importlib import resources
from types import TracebackType
from typing import Any, Final

from mypy_extensions import mypyc_attr

from fastdtm.errors import LeaseLost, StoreUnavailable
from fastdtm.log_throttle import FaultLog
from fastdtm.metrics import Metrics
from fastdtm.models import MAX_BRANCHES, PAUSED_MS, Branch, Transaction
from fastdtm.notes import Notes
from fastdtm.sharding import Keys
from fastdtm.states import HTTP, TERMINAL, TransStatus
from fastdtm.store import hashes
from fastdtm.store.base import (
    AttentionPage,
    BranchMarking,
    Change,
    Claimed,
    ListPage,
    ListQuery,
    Taken,
    check_take_over,
    parse_attention_position,
    parse_position,
)
from fastdtm.store.redis_client import Commands
from fastdtm.store.replies import raise_for
from fastdtm.store.resp import Arg, ReplyError

log = logging.getLogger(__name__)

SCRIPTS: Final = (
    "create",
    "transition",
    "touch",
    "load",
    "claim_due",
    "lease_renew",
    "lease_release",
    "register_branch",
    "reset_cron",
    "take",
    "take_over",
    "admin_pause",
    "admin_resume",
    "admin_mark",
)
#: The scripts whose writes a failover must not lose (see `Script`): every write but the cron's claims and
#: leases, which a failover may lose; `load` writes nothing.
DURABLE: Final = frozenset(SCRIPTS) - {"load", "claim_due", "lease_renew", "lease_release"}
#: `wake_within_ms` unless told: Settings.retry_interval's default, the interval the common writes schedule at.
WAKE_WITHIN_MS: Final = 10_000


# Compiled (docs/compiled.md), yet the Lua tests subclass it.
@mypyc_attr(allow_interpreted_subclasses=True)
class Script:
    """One Lua file, called by its SHA1 (the client loads the source when a server answers NOSCRIPT).

    `durable`: what it writes must survive a failover (with `--redis-wait-replicas`, its reply waits for
    the replicas): a transaction's state, a hold, a KV entry. Claims and leases need not: one lost in a
    failover is taken again, and holds keep two rounds apart meanwhile.
    """

    __slots__ = ("durable", "name", "sha", "source")

    def __init__(self, name: str, durable: bool = False) -> None:
        self.name = name
        self.durable = durable
        self.source = resources.files("fastdtm.lua").joinpath(f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def run(self, client: Commands, keys: Sequence[str], args: Sequence[Arg]) -> Awaitable[Any]:
        # Not async: no coroutine of its own.
        return client.evalsha(self.sha, self.source, keys, args, self.durable)


class mapped:  # lower case: used as the function it replaced, `async with mapped():`
    """The one place the Redis client's exceptions become ours (ConnectionError is an OSError).

    A class, not an @asynccontextmanager: mypyc compiles no async generator, and this is cheaper anyway."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, (ReplyError, OSError)):
            raise StoreUnavailable(f"redis: {exc}") from exc


class RedisStore:
    def __init__(
        self,
        client: Commands,
        keys: Keys,
        finished_ttl_ms: int,
        metrics: Metrics | None = None,
        *,
        wake_within_ms: int = WAKE_WITHIN_MS,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.keys = keys
        self.shards = keys.shards
        self.finished_ttl_ms = finished_ttl_ms
        self.wake_within_ms = wake_within_ms
        self._scripts = {name: Script(name, durable=name in DURABLE) for name in SCRIPTS}
        self._claim_faults = FaultLog(log, "claims", unit="shards")
        self._wake_faults = FaultLog(log, "shard wakes", unit="shards")
        self._waking: set[asyncio.Task[None]] = set()

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        if self.metrics is not None:
            self.metrics.store_call(name)
        # `mapped()` spelled out: an async context manager costs more than the call on this path.
        try:
            return await self._scripts[name].run(self.client, keys, args)
        except (ReplyError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def create(self, trans: Transaction, branches: Sequence[Branch], *, holder: str = "") -> TransStatus | None:
        g, b, due, idx, exp = self.keys.of_trans(trans.gid)
        finished = trans.status in TERMINAL
        fields = hashes.trans_fields(trans)
        if holder and not finished:
            fields += hashes.hold_fields(holder, trans.next_cron_ms)
        for i, branch in enumerate(branches):
            if branch.status is not branch.status.PREPARED:
                fields += hashes.branch_progress(i, branch)
        args: list[str | int] = [
            trans.gid,
            trans.trans_type,
            trans.create_ms,
            "" if finished else trans.next_cron_ms,
            trans.update_ms + self.finished_ttl_ms if finished else "",
            len(fields) // 2,
            *fields,
            *(hashes.branch_record(br) for br in branches),
        ]
        reply = await self._run("create", [g, b, due, idx, exp], args)
        if reply[0] == "CREATED":
            if not finished:
                self._wake_if_soon(trans.gid, trans.next_cron_ms, trans.update_ms)
            return None
        raise_for(reply, trans.gid, trans_type=trans.trans_type)
        return TransStatus(reply[1])

    async def load(self, gid: str) -> tuple[Transaction, list[Branch]] | None:
        g, b, due, _, _ = self.keys.of_trans(gid)
        reply = await self._run("load", [g, b, due], [gid])
        if not reply:
            return None
        fields = hashes.pairs(reply[0])
        return hashes.decode_trans(fields, reply[2]), hashes.decode_branches(fields, reply[1])

    async def transition(self, change: Change) -> None:
        g, b, due, exp, att = self.keys.of_transition(change.gid)
        finished = change.status in TERMINAL
        if finished:
            schedule: str | int = "-"
        else:
            schedule = "" if change.next_cron_ms is None else change.next_cron_ms
        expire = change.now_ms + self.finished_ttl_ms if finished else ""
        args: list[str | int] = [
            change.gid,
            change.expected,
            change.status,
            schedule,
            expire,
            change.holder,
            change.trans_type,
            change.attention,
        ]
        args += hashes.change_fields(change)
        reply = await self._run("transition", [g, b, due, exp, att], args)
        raise_for(reply, change.gid, trans_type=change.trans_type)
        if isinstance(schedule, int):
            self._wake_if_soon(change.gid, schedule, change.now_ms)

    async def take(self, gid: str, now_ms: int, held_until_ms: int, holder: str) -> Taken | None:
        g, b, due, _, _ = self.keys.of_trans(gid)
        reply = await self._run("take", [g, b, due], [gid, now_ms, held_until_ms, holder])
        if reply[0] in ("FINISHED", "NOT_FOUND"):
            return None
        raise_for(reply, gid)
        self._wake_if_soon(gid, held_until_ms, now_ms)
        return _taken(reply)

    async def take_over(self, change: Change, holder: str) -> Taken:
        next_cron_ms = check_take_over(change)
        g, b, due, _, _ = self.keys.of_trans(change.gid)
        args: list[str | int] = [change.gid, change.trans_type, change.expected, change.status, next_cron_ms, holder]
        args += hashes.change_fields(change)
        reply = await self._run("take_over", [g, b, due], args)
        raise_for(reply, change.gid, trans_type=change.trans_type)
        self._wake_if_soon(change.gid, next_cron_ms, change.now_ms)
        return _taken(reply)

    async def register_branches(
        self, gid: str, trans_type: str, branches: Sequence[Branch], now_ms: int, protocol: str = HTTP
    ) -> None:
        g, b, *_ = self.keys.of_trans(gid)
        args: list[str | int] = [now_ms, trans_type, MAX_BRANCHES, protocol]
        for branch in branches:
            args += [hashes.branch_record(branch), hashes.unique_field(branch), branch.status]
        reply = await self._run("register_branch", [g, b], args)
        raise_for(reply, gid, trans_type=trans_type, limit=MAX_BRANCHES)

    async def touch(self, gid: str, next_cron_ms: int, now_ms: int) -> TransStatus:
        g, _, due, _, _ = self.keys.of_trans(gid)
        reply = await self._run("touch", [g, due], [gid, next_cron_ms, now_ms])
        raise_for(reply, gid)
        if reply[0] == "OK":
            self._wake_if_soon(gid, next_cron_ms, now_ms)
        return TransStatus(reply[1])

    async def reset_cron(self, threshold_ms: int, now_ms: int, limit: int) -> tuple[int, bool]:
        if limit <= 0:
            return 0, False
        moved = 0
        for shard in range(self.shards):
            count, _ = await self._run(
                "reset_cron", [self.keys.due(shard)], [threshold_ms, now_ms, limit - moved, PAUSED_MS]
            )
            moved += count
            if count:
                self._wake(shard)
            if moved >= limit:
                return moved, True  # DTM's meaning: the limit was hit, call again
        return moved, False

    async def forget(self, gid: str) -> None:
        due = self.keys.due(self.keys.shard_of(gid))
        async with mapped():
            await self.client.execute(due, "ZREM", due, gid)

    async def claim_due(self, shard: int, lease: str, now_ms: int, limit: int, until_ms: int) -> Claimed:
        keys = [self.keys.lease(shard), self.keys.due(shard), self.keys.index(shard), self.keys.expiring(shard)]
        reply = await self._run("claim_due", keys, [lease, now_ms, limit, until_ms])
        raise_for(reply, "", shard=shard)
        # A score as Redis prints it: an integer for every time we write, but read as a float to be sure.
        return Claimed(list(reply[2:]), int(float(reply[1])) if reply[1] else None)

    async def claim_due_many(
        self, shards: Sequence[int], lease: str, now_ms: int, limit: int, until_ms: int
    ) -> dict[int, Claimed | None]:
        """claim_due on many shards at once: the client pipelines them, one round trip per Redis node
        per cron tick instead of one per shard."""
        claims = await asyncio.gather(
            *(self.claim_due(s, lease, now_ms, limit, until_ms) for s in shards), return_exceptions=True
        )
        return self._claimed(shards, claims)

    def _claimed(self, shards: Sequence[int], claims: Sequence[Claimed | BaseException]) -> dict[int, Claimed | None]:
        """Each shard's claim; None where the lease was lost; nothing, and due again at once, where the
        shard's master failed (one unreachable master must not stop the claims on the others)."""
        claimed: dict[int, Claimed | None] = {}
        failed: list[StoreUnavailable] = []
        for shard, claim in zip(shards, claims, strict=True):
            if isinstance(claim, LeaseLost):
                claimed[shard] = None
            elif isinstance(claim, StoreUnavailable):
                failed.append(claim)
                claimed[shard] = Claimed([], 0)
            elif isinstance(claim, BaseException):
                raise claim
            else:
                claimed[shard] = claim
        # One line when shards start failing and when they recover, a summary in between: not a line
        # per shard per tick for as long as a master is down.
        if failed:
            self._claim_faults.failed(failed[0], len(failed))
        else:
            self._claim_faults.succeeded()
        return claimed

    async def wake_counts(self, shards: Sequence[int]) -> list[int]:
        if not shards:
            return []
        key = self.keys.wake()
        async with mapped():
            counts = await self.client.execute(key, "HMGET", key, *shards)
        return [0 if c is None else int(c) for c in counts]

    def _wake_if_soon(self, gid: str, due_ms: int, now_ms: int) -> None:
        """The wake rule (`Store.wake_counts`): a write that left the transaction due sooner than
        `wake_within_ms` tells the shard's owner, which otherwise looks only at the schedule it last saw."""
        if due_ms - now_ms < self.wake_within_ms:
            self._wake(self.keys.shard_of(gid))

    def _wake(self, shard: int) -> None:
        """Bump the shard's wake count after the write that called for it, without making the caller wait: the
        write is done, and a wake lost (a failed master, a crash just now) only delays the claim until the
        owner's next look, at most `wake_within_ms`."""
        task = asyncio.get_running_loop().create_task(self._send_wake(shard))
        self._waking.add(task)
        task.add_done_callback(self._waking.discard)

    async def _send_wake(self, shard: int) -> None:
        key = self.keys.wake()
        try:
            await self.client.execute(key, "HINCRBY", key, shard, 1)
        except (ReplyError, OSError) as exc:
            self._wake_faults.failed(exc, 1)
        else:
            self._wake_faults.succeeded()

    async def acquire_lease(self, shard: int, lease: str, ttl_ms: int) -> bool:
        key = self.keys.lease(shard)
        async with mapped():
            reply = await self.client.execute(key, "SET", key, lease, "NX", "PX", ttl_ms)
        if reply == "OK":
            return True
        # An earlier acquire that timed out may have run after all (a frozen master runs what it had received
        # once it thaws): the lease is then ours already, and this renews it.
        return bool(await self._run("lease_renew", [key], [lease, ttl_ms]))

    async def renew_leases(self, shards: Sequence[int], lease: str, ttl_ms: int) -> list[bool | None]:
        """True renewed, False not ours, None unknown: the shard's master failed (see `Store`)."""
        renew = self._scripts["lease_renew"]
        if self.metrics is not None:
            for _ in shards:  # one script each, as `_run` counts them (most of an idle node's Redis commands)
                self.metrics.store_call("lease_renew")
        # return_exceptions: one dead master must neither fail the renewals on the others nor throw
        # away those that succeeded.
        replies = await asyncio.gather(
            *(renew.run(self.client, [self.keys.lease(s)], [lease, ttl_ms]) for s in shards), return_exceptions=True
        )
        renewed: list[bool | None] = []
        for reply in replies:
            if isinstance(reply, (ReplyError, OSError, StoreUnavailable)):
                renewed.append(None)  # not known lost: claim_due checks the token, so claims stay fenced
            elif isinstance(reply, BaseException):
                raise reply
            else:
                renewed.append(bool(reply))
        return renewed

    async def release_lease(self, shard: int, lease: str) -> bool:
        return bool(await self._run("lease_release", [self.keys.lease(shard)], [lease]))

    async def lease_holder(self, shard: int) -> str | None:
        key = self.keys.lease(shard)
        async with mapped():
            value = await self.client.execute(key, "GET", key)
        return None if value is None else str(value)

    async def heartbeat(self, node_id: str, now_ms: int, ttl_ms: int) -> list[str]:
        key = self.keys.nodes()
        run = self.client.execute
        async with mapped():
            # Sent together, answered in order: one round trip. Passed as one list: gather returns a list, which
            # mypyc would check against the tuple its stubs promise for separate arguments.
            replies = await asyncio.gather(
                *[
                    run(key, "ZADD", key, now_ms + ttl_ms, node_id),
                    run(key, "ZREMRANGEBYSCORE", key, "-inf", now_ms),
                    run(key, "ZRANGE", key, 0, -1),
                ]
            )
        return [str(n) for n in replies[2]]

    async def list_transactions(self, query: ListQuery) -> ListPage:
        async with mapped():
            return await _Lister(self, query).page()

    async def load_notes(self, gid: str) -> tuple[Transaction, list[Branch], Notes] | None:
        g, b, due, _, _ = self.keys.of_trans(gid)
        reply = await self._run("load", [g, b, due], [gid])
        if not reply:
            return None
        fields = hashes.pairs(reply[0])
        trans = hashes.decode_trans(fields, reply[2])
        return trans, hashes.decode_branches(fields, reply[1]), hashes.decode_notes(fields)

    async def pause(self, gid: str, now_ms: int, holder: str) -> bool:
        g, _, due, _, _ = self.keys.of_trans(gid)
        att = self.keys.attention(self.keys.shard_of(gid))
        reply = await self._run("admin_pause", [g, due, att], [gid, now_ms, PAUSED_MS, holder])
        if reply[0] == "ALREADY":
            return False
        raise_for(reply, gid)
        return True

    async def resume(self, gid: str, now_ms: int) -> None:
        g, _, due, _, _ = self.keys.of_trans(gid)
        att = self.keys.attention(self.keys.shard_of(gid))
        raise_for(await self._run("admin_resume", [g, due, att], [gid, now_ms]), gid)
        self._wake(self.keys.shard_of(gid))  # due at once

    async def mark_branch(self, marking: BranchMarking) -> None:
        m = marking
        g, b, due, _, _ = self.keys.of_trans(m.gid)
        args: list[str | int] = [m.gid, m.index, m.branch_id, m.op, m.expected, m.status, m.mark, m.now_ms, m.holder]
        raise_for(await self._run("admin_mark", [g, b, due], args), m.gid)
        self._wake(self.keys.shard_of(m.gid))  # due at once, unless paused

    async def attention(self, position: str, limit: int) -> AttentionPage:
        """Each shard's oldest entries after the cursor, merged: a page costs one ZRANGEBYSCORE per shard (sent
        together), never a walk over the transactions."""
        after = parse_attention_position(position) or (0, "")
        since, last_gid = after
        keys = [self.keys.attention(shard) for shard in range(self.shards)]
        commands: list[tuple[Arg, ...]] = [
            (k, "ZRANGEBYSCORE", k, f"({since}", "+inf", "WITHSCORES", "LIMIT", 0, limit + 1) for k in keys
        ]
        if last_gid:
            # Entries at the cursor's own time (rounds failing in the same ms): those after its gid.
            commands += [(k, "ZRANGEBYSCORE", k, since, since, "WITHSCORES") for k in keys]
        else:
            commands = [(k, "ZRANGEBYSCORE", k, since, "+inf", "WITHSCORES", "LIMIT", 0, limit + 1) for k in keys]
        async with mapped():
            replies = await asyncio.gather(*(self.client.execute(str(c[0]), *c[1:]) for c in commands))
        found: list[tuple[int, str]] = []
        for flat in replies:
            entries = [(int(float(score)), str(gid)) for gid, score in zip(flat[::2], flat[1::2], strict=True)]
            found += [entry for entry in entries if entry > after]
        found.sort()
        page = found[:limit]
        cursor = f"{page[-1][0]}:{page[-1][1]}" if len(found) > limit and page else ""
        return AttentionPage([(gid, since) for since, gid in page], cursor)

    async def unfinished_count(self) -> int:
        keys = [self.keys.due(shard) for shard in range(self.shards)]
        async with mapped():
            counts = await asyncio.gather(*(self.client.execute(k, "ZCARD", k) for k in keys))
        return sum(int(c) for c in counts)

    async def nodes(self) -> list[tuple[str, int]]:
        key = self.keys.nodes()
        async with mapped():
            flat = await self.client.execute(key, "ZRANGE", key, 0, -1, "WITHSCORES")
        return [(str(node), int(float(score))) for node, score in zip(flat[::2], flat[1::2], strict=True)]

    async def ping(self) -> None:
        async with mapped():
            await self.client.ready()

    async def close(self) -> None:
        if self._waking:  # each is one command: let them go out before the connections close
            await asyncio.wait(set(self._waking), timeout=1.0)
        await self.client.aclose()


def _taken(reply: list[Any]) -> Taken:
    """{"OK", hash fields, branch records, held_until_ms} of take / take_over."""
    fields = hashes.pairs(reply[1])
    held_until = reply[3]
    trans = hashes.decode_trans(fields, held_until)
    return Taken(trans, hashes.decode_branches(fields, reply[2]), int(held_until))


class _Lister:
    """`/all`: walks shard by shard, each by create time, with a cursor `<shard>:<score>:<gid>`.

    A filter on status or type cannot be answered by the create-time index: each entry must be read. So one call
    reads at most SCAN_BUDGET transactions, BATCH at a time (sent together), and returns what it found with the
    cursor of the last one it read: a page may hold fewer than `limit` and still a cursor to go on. Without that
    bound a filter nothing matches would read every transaction in one request, and go on after the caller gave
    up (bench/README.md, "Cost as data grows")."""

    BATCH: Final = 200
    SCAN_BUDGET: Final = 2_000

    def __init__(self, store: RedisStore, query: ListQuery) -> None:
        self.store = store
        self.query = query
        self.found: list[Transaction] = []
        self.budget = max(self.SCAN_BUDGET, query.limit)

    async def page(self) -> ListPage:
        shard, score, last_gid = parse_position(self.query.position, self.store.shards) or (0, 0, "")
        while shard < self.store.shards:
            position = await self._scan_shard(shard, score, last_gid)
            if position:
                return ListPage(self.found, position)
            shard, score, last_gid = shard + 1, self.query.create_from_ms, ""
        return ListPage(self.found, "")

    async def _scan_shard(self, shard: int, score: int, last_gid: str) -> str:
        """Collects matches of one shard; returns a cursor if the page filled up, or the budget ran out, inside it."""
        key = self.store.keys.index(shard)
        low = max(score, self.query.create_from_ms)
        high = self.query.create_to_ms or "+inf"
        offset = 0
        while True:
            flat: list[str] = await self.store.client.execute(
                key, "ZRANGEBYSCORE", key, low, high, "WITHSCORES", "LIMIT", offset, self.BATCH
            )
            # Members with the same score sort by gid: skip those up to the cursor's gid.
            entries = [
                (gid, created)
                for gid, created in ((g, int(float(s))) for g, s in zip(flat[::2], flat[1::2], strict=True))
                if not (created == score and gid <= last_gid)
            ][: self.budget]
            loaded = await asyncio.gather(*(self.store.load(gid) for gid, _ in entries))
            for (gid, created), item in zip(entries, loaded, strict=True):
                self.budget -= 1
                if (self._take(item) and len(self.found) >= self.query.limit) or not self.budget:
                    return f"{shard}:{created}:{gid}"
            if len(flat) < 2 * self.BATCH:
                return ""
            offset += len(flat) // 2

    def _take(self, loaded: tuple[Transaction, list[Branch]] | None) -> bool:
        if loaded is None:
            return False
        trans = loaded[0]
        if self.query.status and trans.status != self.query.status:
            return False
        if self.query.trans_type and trans.trans_type != self.query.trans_type:
            return False
        self.found.append(trans)
        return True
