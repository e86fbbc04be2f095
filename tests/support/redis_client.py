"""redis-py for the tests: an independent client to seed and inspect what fastdtm's own client wrote.

Tests that pin a Lua script's behaviour call it through redis-py too (`LuaScript`), so a script is checked
apart from the transport the store uses (`fastdtm.store.resp`), which has tests of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError

from fastdtm.store.redis import Script

Client: TypeAlias = "aioredis.Redis | RedisCluster"


def connect(url: str) -> Client:
    """A redis-py client for `redis://host:port/db` or `redis+cluster://h1:p1,h2:p2`, decoding replies."""
    if url.startswith("redis+cluster://"):
        netloc = urlsplit(url).netloc
        nodes = [ClusterNode(host, int(port)) for host, _, port in (n.rpartition(":") for n in netloc.split(","))]
        return RedisCluster(startup_nodes=nodes, decode_responses=True)
    return aioredis.Redis.from_url(url, decode_responses=True)


class LuaScript(Script):
    """A store script called through redis-py: EVALSHA, loading it once on NOSCRIPT."""

    async def __call__(self, client: Client, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)
