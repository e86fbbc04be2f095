"""Shards and every Redis key name: the only module that formats a key.

A transaction lives in shard ``crc32(gid) % shards``. Each shard has a short hash tag chosen so that
the shards spread evenly over the 16384 Redis Cluster slots: shard ``i`` gets a tag whose slot lies
in ``[i * 16384 / shards, (i + 1) * 16384 / shards)``. All keys of a shard share its tag, so every
Lua script (which only touches one shard) is legal on a cluster, and the shards land on every master.

Key schema (prefix ``fastdtm`` by default, ``{t}`` = the shard's tag):

====================================  ===========  ===============================================
key                                   type         content
====================================  ===========  ===============================================
``<prefix>:{t}:g:<gid>``              hash         the global transaction: status, type, options,
                                                   times, reason, result, and one branch progress
                                                   field ``s<i>`` = ``"<status> <finish_ms>"`` per
                                                   branch that left ``prepared``
``<prefix>:{t}:b:<gid>``              list         branch records, insertion order, JSON
                                                   ``[branch_id, op, url, data, create_ms]``
``<prefix>:{t}:due``                  sorted set   unfinished gid -> next_cron_time (ms)
``<prefix>:{t}:idx``                  sorted set   gid -> create_time (ms), for listing
``<prefix>:{t}:exp``                  sorted set   finished gid -> when its data expires (ms);
                                                   the cron drops those from ``idx``
``<prefix>:{t}:lease``                string       the shard's cron lease ``<node_id> <token>``
``<prefix>:nodes``                    sorted set   node_id -> heartbeat expiry (ms); not sharded
``<prefix>:wake``                     hash         shard number -> wake count, bumped after a write
                                                   that made something in the shard due soon (the
                                                   cron's cue to look at it); not sharded
``<prefix>:{KV}:kv:<cat>:<k>``        hash         one KV entry (topics: ``cat`` = ``topics``):
                                                   ``v``, ``version``, ``create_time``,
                                                   ``update_time`` (ms)
``<prefix>:{KV}:kvidx:<cat>``         sorted set   the category's keys ``k``, all score 0, so
                                                   ``ZRANGEBYLEX`` scans them in order
====================================  ===========  ===============================================

Finished transactions leave ``due`` and their ``g``/``b`` keys get a TTL; unfinished ones never
expire (a transaction is never lost).

The KV store (DTM's ``kv`` table; it holds the msg topics) is one shard of its own, tag ``{KV}``: its
volume is tiny (a few writes per subscription change, one read per topic per msg), and every KV
script touches an entry and its category's index together, so both must share a slot. The tag is
outside the shard tags' alphabet, so no shard count can ever give a transaction shard the same tag.
KV entries never expire. ``cat`` must not contain ``:`` (``kv:a:b:c`` would be both ``a``/``b:c``
and ``a:b``/``c``); ``k`` is the last part of the name and may hold anything.
"""

from __future__ import annotations

import binascii
import itertools
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SLOTS = 16384
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
#: The KV shard's tag: upper case is outside `_ALPHABET`, so it can never be a transaction shard's tag.
KV_TAG = "KV"


def _candidates() -> Iterator[str]:
    """Short tags in order of length: 1-char, then 2-char, ... (deterministic, endless)."""
    # A generator function, not a generator expression: mypyc builds the list of a generator expression
    # passed as an argument, which for this endless sequence never ends.
    for n in itertools.count(1):
        for chars in itertools.product(_ALPHABET, repeat=n):
            yield "".join(chars)


def shard_tags(shards: int) -> tuple[str, ...]:
    """For each shard, the shortest tag (first in a fixed order) whose slot is in the shard's range."""
    tags: list[str | None] = [None] * shards
    missing = shards
    for tag in _candidates():
        slot = slot_of(tag)
        shard = slot * shards // SLOTS
        if tags[shard] is None:
            tags[shard] = tag
            missing -= 1
            if missing == 0:
                break
    return tuple(t for t in tags if t is not None)


def slot_of(key: str) -> int:
    """The cluster slot of a key, as Redis computes it: CRC16 (XMODEM) of its `{tag}` when it has a
    non-empty one, else of the whole key, modulo 16384."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds every key name for one deployment (prefix and shard count)."""

    prefix: str = "fastdtm"
    shards: int = 256
    tags: Sequence[str] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.tags:
            object.__setattr__(self, "tags", shard_tags(self.shards))

    def shard_of(self, gid: str) -> int:
        return zlib.crc32(gid.encode()) % self.shards

    def _base(self, shard: int) -> str:
        return f"{self.prefix}:{{{self.tags[shard]}}}"

    def trans(self, gid: str) -> str:
        return f"{self._base(self.shard_of(gid))}:g:{gid}"

    def branches(self, gid: str) -> str:
        return f"{self._base(self.shard_of(gid))}:b:{gid}"

    def due(self, shard: int) -> str:
        return f"{self._base(shard)}:due"

    def index(self, shard: int) -> str:
        return f"{self._base(shard)}:idx"

    def expiring(self, shard: int) -> str:
        return f"{self._base(shard)}:exp"

    def attention(self, shard: int) -> str:
        """Unfinished gids whose rounds end in errors, or paused, by since when (the console's view)."""
        return f"{self._base(shard)}:att"

    def lease(self, shard: int) -> str:
        return f"{self._base(shard)}:lease"

    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    def wake(self) -> str:
        """One hash for all shards, so that a cron tick reads every count it needs with one command."""
        return f"{self.prefix}:wake"

    def kv_tag(self) -> str:
        """The hash tag of the KV shard: one slot for all KV data (see the module docstring)."""
        return KV_TAG

    def kv(self, cat: str, k: str) -> str:
        return f"{self.prefix}:{{{KV_TAG}}}:kv:{cat}:{k}"

    def kv_index(self, cat: str) -> str:
        return f"{self.prefix}:{{{KV_TAG}}}:kvidx:{cat}"

    def of_trans(self, gid: str) -> tuple[str, str, str, str, str]:
        """The keys every per-transaction script takes, in its KEYS order: g, b, due, idx, exp."""
        shard = self.shard_of(gid)
        base = self._base(shard)
        return f"{base}:g:{gid}", f"{base}:b:{gid}", f"{base}:due", f"{base}:idx", f"{base}:exp"

    def of_transition(self, gid: str) -> tuple[str, str, str, str, str]:
        """The KEYS of transition.lua: g, b, due, exp, att."""
        base = self._base(self.shard_of(gid))
        return f"{base}:g:{gid}", f"{base}:b:{gid}", f"{base}:due", f"{base}:exp", f"{base}:att"
