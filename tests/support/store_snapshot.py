"""What a node's store holds, read from outside the node: this module owns taking a comparable snapshot of a
Redis, Redis Cluster or embedded (SQLite) store, so that a test can tell whether a request wrote anything.

The node's own bookkeeping is left out, since it moves on its own while the node runs: the heartbeat list
(`<prefix>:nodes`, table `node`) and the shard leases (`<prefix>:{t}:lease`, table `lease`). Everything a
request may write (transactions, branches, the schedule and listing indexes, KV entries) is in. A key's
remaining time to live moves by itself, so only whether it has one is compared.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster

#: key -> (type, value, has a TTL); row tables -> rows. Plain tuples and strings, so `==` compares them.
Entries: TypeAlias = Mapping[str, tuple[object, ...]]

SQLITE_SCHEME = "sqlite:///"
#: Tables a request may write; the others (`lease`, `node`, `schema_version`) are the node's own.
SQLITE_TABLES = ("trans", "branch", "kv")


@dataclass(frozen=True, slots=True)
class Snapshot:
    entries: Entries

    def diff(self, later: Snapshot, limit: int = 8) -> str:
        """The keys or rows that differ, for an assertion message."""
        changed = sorted(k for k in self.entries.keys() | later.entries.keys() if self._get(k) != later._get(k))
        lines = [f"  {k}: {_short(self._get(k))} -> {_short(later._get(k))}" for k in changed[:limit]]
        more = f"\n  ... and {len(changed) - limit} more" if len(changed) > limit else ""
        return "\n".join(lines) + more

    def _get(self, key: str) -> tuple[object, ...] | None:
        return self.entries.get(key)


class StoreReader(Protocol):
    def snapshot(self) -> Snapshot: ...

    def close(self) -> None: ...


def reader_for(store_url: str, key_prefix: str = "fastdtm") -> StoreReader:
    if store_url.startswith(SQLITE_SCHEME):
        return SqliteReader(Path(store_url[len(SQLITE_SCHEME) :]))
    return RedisReader(store_url, key_prefix)


class SqliteReader:
    """Reads the node's SQLite file read-only, beside the node (WAL lets a reader in while it writes)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    def snapshot(self) -> Snapshot:
        entries: dict[str, tuple[object, ...]] = {}
        # One read transaction: the tables as of one moment.
        self._conn.execute("BEGIN")
        try:
            for table in SQLITE_TABLES:
                for row in self._conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                    entries[f"{table}:{row[0]}:{row[1]}"] = tuple(row)
        finally:
            self._conn.execute("COMMIT")
        return Snapshot(entries)

    def close(self) -> None:
        self._conn.close()


class RedisReader:
    """SCANs every key (every master of a cluster) and reads each by its type, in pipelines."""

    def __init__(self, url: str, key_prefix: str) -> None:
        self._client = _connect(url)
        prefix = re.escape(key_prefix)
        self._own = re.compile(rf"{prefix}:nodes|{prefix}:\{{[^}}]*\}}:lease")

    def snapshot(self) -> Snapshot:
        keys = sorted(k for k in self._keys() if not self._own.fullmatch(k))
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
            pipe.pttl(key)
        described = pipe.execute()
        types = described[::2]
        pipe = self._client.pipeline(transaction=False)
        for key, kind in zip(keys, types, strict=True):
            _read(pipe, key, kind)
        values = pipe.execute()
        ttls = described[1::2]
        return Snapshot(
            {
                key: (kind, _frozen(value), ttl >= 0)
                for key, kind, value, ttl in zip(keys, types, values, ttls, strict=True)
                if kind != "none"  # gone between SCAN and TYPE (an expiry)
            }
        )

    def close(self) -> None:
        self._client.close()

    def _keys(self) -> Iterator[str]:
        yield from self._client.scan_iter(count=1000)


def _connect(url: str) -> redis.Redis | RedisCluster:
    # Values are what fastdtm wrote: UTF-8 as a rule; surrogateescape keeps any other byte comparable.
    if url.startswith("redis+cluster://"):
        # One startup node is enough: the client learns the others from it.
        host, _, port = urlsplit(url).netloc.split(",")[0].rpartition(":")
        return RedisCluster(host=host, port=int(port), decode_responses=True, encoding_errors="surrogateescape")
    return redis.Redis.from_url(url, decode_responses=True, encoding_errors="surrogateescape")


def _read(pipe: Any, key: str, kind: str) -> None:
    """Queue the read of one key's value by its type (redis-py's pipelines are not typed)."""
    if kind == "string":
        pipe.get(key)
    elif kind == "hash":
        pipe.hgetall(key)
    elif kind == "list":
        pipe.lrange(key, 0, -1)
    elif kind == "zset":
        pipe.zrange(key, 0, -1, withscores=True)
    elif kind == "set":
        pipe.smembers(key)
    else:
        pipe.type(key)


def _frozen(value: object) -> object:
    if isinstance(value, dict):
        return tuple(sorted(value.items()))
    if isinstance(value, set):
        return tuple(sorted(value))
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list | tuple) else v for v in value)
    return value


def _short(value: object, width: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= width else f"{text[:width]}... ({len(text)} chars)"
