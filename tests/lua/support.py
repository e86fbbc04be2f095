"""Shared pieces of the Lua-script tests: this module owns the script handles, the key builder, seeding a
transaction with plain Redis commands (so each script is tested against state no other script wrote), and
snapshots of every key a transaction or a shard lease lives in, to prove that a refused call wrote nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fastdtm.sharding import Keys
from tests.support.redis_client import Client, LuaScript

KEYS: Final = Keys()

CREATE: Final = LuaScript("create")
TRANSITION: Final = LuaScript("transition")
TOUCH: Final = LuaScript("touch")
LOAD: Final = LuaScript("load")
CLAIM_DUE: Final = LuaScript("claim_due")
LEASE_RENEW: Final = LuaScript("lease_renew")
LEASE_RELEASE: Final = LuaScript("lease_release")
REGISTER_BRANCH: Final = LuaScript("register_branch")
RESET_CRON: Final = LuaScript("reset_cron")
TAKE: Final = LuaScript("take")
TAKE_OVER: Final = LuaScript("take_over")
ADMIN_PAUSE: Final = LuaScript("admin_pause")
ADMIN_RESUME: Final = LuaScript("admin_resume")
ADMIN_MARK: Final = LuaScript("admin_mark")

#: A "now" for scripts that only store time as data: they never read the clock, so any value will do.
T0: Final = 1_700_000_000_000

#: The store's FinishedDataExpire in these tests: long enough that nothing a test finishes expires during it.
FINISHED_TTL_MS: Final = 60_000

#: `PEXPIRETIME` answers for a key without a TTL and for a missing key.
NO_TTL: Final = -1
ABSENT: Final = -2


def wall_ms() -> int:
    """The real clock, for TTLs: `PEXPIREAT` is measured against the server's clock, not against ARGV."""
    return time.time_ns() // 1_000_000


def fields_of(gid: str, status: str = "prepared", **extra: str) -> dict[str, str]:
    """A transaction hash as `create` would receive it: the fields the store always writes, plus `extra`."""
    return {"gid": gid, "trans_type": "saga", "status": status, "create_time": str(T0), **extra}


def records(count: int) -> list[str]:
    """Branch records in the stored JSON shape `[branch_id, op, url, data, create_ms]`."""
    return [
        f'["{i // 2 + 1:02d}", "{"action" if i % 2 == 0 else "compensate"}", "http://busi/{i}", "{{}}", {T0}]'
        for i in range(count)
    ]


def gids_in_shard(shard: int, count: int, stem: str = "gid") -> list[str]:
    """`count` gids that all hash to `shard`, for scripts that work on one shard's sorted sets."""
    found: list[str] = []
    n = 0
    while len(found) < count:
        gid = f"{stem}-{n}"
        if KEYS.shard_of(gid) == shard:
            found.append(gid)
        n += 1
    return found


async def seed(
    client: Client,
    gid: str,
    fields: Mapping[str, str],
    branches: Sequence[str] = (),
    *,
    due: int | None = None,
    expire_at: int | None = None,
) -> None:
    """Store a transaction with plain commands, as if an earlier `create`/`transition` had left it so."""
    g, b, due_key, idx, exp = KEYS.of_trans(gid)
    await client.hset(g, items=[item for pair in fields.items() for item in pair])
    if branches:
        await client.rpush(b, *branches)
    await client.zadd(idx, {gid: T0})
    if due is not None:
        await client.zadd(due_key, {gid: due})
    if expire_at is not None:
        await client.pexpireat(g, expire_at)
        if branches:
            await client.pexpireat(b, expire_at)
        await client.zadd(exp, {gid: expire_at})


async def zset(client: Client, key: str) -> dict[str, float]:
    entries: list[tuple[str, float]] = await client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
    return dict(entries)


async def hash_of(client: Client, key: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in (await client.hgetall(key)).items()}


async def list_of(client: Client, key: str) -> list[str]:
    return [str(item) for item in await client.lrange(key, 0, -1)]


@dataclass(frozen=True, slots=True)
class TransState:
    """Everything one transaction occupies: its two keys, their expiry, and its shard's four sorted sets."""

    fields: dict[str, str]
    branches: list[str]
    expire_at: tuple[int, int]
    due: dict[str, float]
    idx: dict[str, float]
    exp: dict[str, float]
    att: dict[str, float]


async def trans_state(client: Client, gid: str) -> TransState:
    g, b, due, idx, exp = KEYS.of_trans(gid)
    return TransState(
        fields=await hash_of(client, g),
        branches=await list_of(client, b),
        expire_at=(await client.pexpiretime(g), await client.pexpiretime(b)),
        due=await zset(client, due),
        idx=await zset(client, idx),
        exp=await zset(client, exp),
        att=await zset(client, KEYS.attention(KEYS.shard_of(gid))),
    )


async def wait_gone(client: Client, key: str, timeout: float = 2.0) -> None:
    """Wait until a key with a short real TTL has expired."""
    deadline = time.monotonic() + timeout
    while await client.exists(key):
        if time.monotonic() > deadline:
            raise AssertionError(f"{key} still exists after {timeout}s")
        await asyncio.sleep(0.02)


def tagged(reply: Any) -> list[str]:
    """A script's tagged reply as a plain list, so a failing assert prints it whole."""
    assert isinstance(reply, list), reply
    return [str(item) for item in reply]
