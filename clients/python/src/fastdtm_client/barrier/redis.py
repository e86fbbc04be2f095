"""The barrier on Redis (redis-py asyncio): an amount moved on a business key at most once per branch call, in
one Lua script (`adjust_amount.lua`), and the msg check-back (`query_prepared.lua`). Barrier keys are
``<gid>-<branch_id>-<op>-<barrier_id>``, as DTM's Go SDK names them, and expire after `expire` seconds.

On a Redis Cluster the script's keys must share a slot: give the business key and the gid one hash tag."""

from __future__ import annotations

from importlib import resources
from typing import Any, Final

from redis.asyncio import Redis

from ..errors import Duplicated, Failure
from ..results import MSG_BARRIER_ID, MSG_BRANCH_ID, OP_MSG
from .core import ORIGIN_OPS, BranchBarrier

DEFAULT_EXPIRE: Final = 7 * 24 * 3600


def _script(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _key(barrier: BranchBarrier, branch_id: str, op: str, barrier_id: str) -> str:
    return f"{barrier.gid}-{branch_id}-{op}-{barrier_id}"


class RedisBarrier:
    """The two scripts, registered once on `redis` (EVALSHA, reloaded by redis-py after a SCRIPT FLUSH)."""

    def __init__(self, redis: Redis, *, expire: int = DEFAULT_EXPIRE) -> None:
        self.redis = redis
        self.expire = expire
        self._adjust = redis.register_script(_script("adjust_amount.lua"))
        self._query = redis.register_script(_script("query_prepared.lua"))

    async def adjust_amount(self, barrier: BranchBarrier, key: str, amount: int) -> bool:
        """Add `amount` to the integer at `key` once for this branch call; True when applied now.

        Raises `Failure` when `key` is missing or would go negative, `Duplicated` for a msg's repeated local
        step; a repeat, a suspended forward op or a null compensation return False."""
        barrier_id = barrier.next_barrier_id()
        origin = ORIGIN_OPS.get(barrier.op)
        own = _key(barrier, barrier.branch_id, barrier.op, barrier_id)
        forward = _key(barrier, barrier.branch_id, origin, barrier_id) if origin else own
        args = [amount, "1" if origin else "0", self.expire, barrier.op]
        outcome = _text(await self._adjust(keys=[key, own, forward], args=args))
        if outcome == "FAILURE":
            raise Failure(f"{key}: missing, or {amount} would make it negative")
        if outcome == "DUPLICATE" and barrier.op == OP_MSG:
            raise Duplicated(f"msg {barrier.gid}: its local transaction was already decided")
        return outcome == "OK"

    async def query_prepared(self, barrier: BranchBarrier) -> None:
        """The msg check-back: raises `Failure` unless the local step committed (and then it never will)."""
        key = _key(barrier, MSG_BRANCH_ID, OP_MSG, MSG_BARRIER_ID)
        if _text(await self._query(keys=[key], args=[self.expire])) == "FAILURE":
            raise Failure(f"msg {barrier.gid}: its local transaction was rolled back")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
