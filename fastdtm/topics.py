"""Msg topics: who subscribes to which topic, and the rules of subscribe / unsubscribe / delete.

A topic is the KV entry `cat="topics"`, `k=<topic>`, `v=<JSON array of {"url","remark"}>` in subscription
order (DTM's format, so DTM's admin UI and `scanKV` readers see the same thing). Every change reads the
entry and writes it back with a compare-and-set on its version; a node that loses the race to another
writer reads again and re-applies its change, a few times, with a jittered pause so that many writers
thin out instead of colliding in lock step. There is no per-node cache: every call reads Redis, because
topics are shared by every node (DTM keeps an in-memory map refreshed by a loop and serves deleted
topics until restart; its quirk 5).

Errors are DTM's texts (`empty topic`, `this url exists`, `no such a topic`, `storage: NotFound`, ...):
SDKs and people read them. Their status codes are fastdtm's, where DTM answers 500 for a caller's mistake:
bad input 422, a duplicate url 409, an unknown topic or url 404 (docs/compatibility.md).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from fastdtm import wire
from fastdtm.branch_policy import BranchPolicy
from fastdtm.clock import Clock
from fastdtm.errors import Conflict, Invalid, NotFound, ServerError
from fastdtm.models import check_branch_url, check_call_url
from fastdtm.states import GRPC
from fastdtm.store.kv import MAX_KEY, KVEntry
from fastdtm.store.kv_base import KV

CAT: Final = "topics"
#: DTM's branch URL column is 1024 characters; a subscriber's URL becomes a branch URL.
MAX_URL: Final = 1024
MAX_REMARK: Final = 1024
#: Subscribers of one topic: each becomes a branch of every msg sent to it (models.MAX_BRANCHES in all).
MAX_SUBSCRIBERS: Final = 100
#: Compare-and-set attempts per change before giving up; each lost attempt means another writer won.
ATTEMPTS: Final = 20
#: Upper bound of the random pause after the n-th lost attempt: min(cap, base * 2**n) ms.
BACKOFF_BASE_MS: Final = 2
BACKOFF_CAP_MS: Final = 100


#: What DTM says when a topic to delete is not there (its storage layer's error, word for word).
STORAGE_NOT_FOUND: Final = "storage: NotFound"


@dataclass(frozen=True, slots=True)
class Subscriber:
    url: str
    remark: str = ""


#: A change to a topic's subscribers: given the current list (None: no such topic), the new list.
Edit = Callable[[list[Subscriber] | None], list[Subscriber]]


class Topics:
    """Topic subscriptions in a KV store (Redis or embedded); `clock` stamps the entries' create/update times.

    `policy`: the branch-URL policy a subscriber's URL must pass (it becomes a branch URL of every msg sent
    to the topic); unsubscribe does not ask, so that a URL the policy now refuses can still be removed."""

    def __init__(self, kv: KV, clock: Clock, *, attempts: int = ATTEMPTS, policy: BranchPolicy | None = None) -> None:
        self.kv = kv
        self.clock = clock
        self.attempts = attempts
        self.policy = policy or BranchPolicy()

    async def subscribe(self, topic: str, url: str, remark: str = "") -> None:
        """Adds `url` at the end of the topic's subscribers, creating the topic if needed."""
        subscriber = Subscriber(check_url(url), check_remark(remark))
        check_branch_url(self.policy, url, "url")
        await self._change(check_topic(topic), lambda current: with_subscriber(topic, current, subscriber))

    async def unsubscribe(self, topic: str, url: str) -> None:
        """Removes `url`; the topic stays, possibly with no subscriber left (as in DTM)."""
        check_url(url)
        await self._change(check_topic(topic), lambda current: without_url(topic, current, url))

    async def delete(self, topic: str) -> None:
        if not await self.kv.delete(CAT, check_topic(topic)):
            raise NotFound(STORAGE_NOT_FOUND)

    async def subscribers(self, topic: str) -> list[str]:
        """The URLs subscribed to `topic`, in subscription order; [] if the topic is unknown or empty."""
        entry = await self.kv.get(CAT, check_topic(topic))
        return [] if entry is None else [s.url for s in decode_subscribers(entry)]

    async def _change(self, topic: str, edit: Edit) -> None:
        for attempt in range(self.attempts):
            entry = await self.kv.get(CAT, topic)
            if await self._write(topic, entry, edit(None if entry is None else decode_subscribers(entry))):
                return
            await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2**attempt)) / 1000)
        raise ServerError(f"topic '{topic}' kept changing under {self.attempts} attempts to update it; try again.")

    async def _write(self, topic: str, entry: KVEntry | None, subscribers: list[Subscriber]) -> bool:
        now_ms = self.clock.now_ms()
        if entry is None:
            return await self.kv.create(CAT, topic, encode_subscribers(subscribers), now_ms)
        return await self.kv.update(CAT, topic, encode_subscribers(subscribers), entry.version, now_ms)


def check_topic(topic: str) -> str:
    if not topic:
        raise Invalid("empty topic")
    if len(topic) > MAX_KEY or not topic.isprintable():
        raise Invalid(f"topic {topic[:140]!r} is invalid: 1-{MAX_KEY} printable characters.")
    return topic


def check_url(url: str) -> str:
    if not url:
        raise Invalid("empty url")
    if len(url) > MAX_URL:
        raise Invalid(f"url is longer than {MAX_URL} characters.")
    # A subscriber may be an HTTP URL or a gRPC method: each branch is called the way its URL says.
    check_call_url(url, "url", GRPC)
    return url


def check_remark(remark: str) -> str:
    if len(remark) > MAX_REMARK:
        raise Invalid(f"remark is longer than {MAX_REMARK} characters.")
    return remark


def with_subscriber(topic: str, current: list[Subscriber] | None, new: Subscriber) -> list[Subscriber]:
    current = current or []
    if any(s.url == new.url for s in current):
        raise Conflict("this url exists")
    if len(current) >= MAX_SUBSCRIBERS:
        raise Conflict(f"topic '{topic}' has {len(current)} subscribers: at most {MAX_SUBSCRIBERS}.")
    return [*current, new]


def without_url(topic: str, current: list[Subscriber] | None, url: str) -> list[Subscriber]:
    if current is None:
        raise NotFound("no such a topic")
    if not current:
        raise NotFound("this topic is empty")
    kept = [s for s in current if s.url != url]
    if len(kept) == len(current):
        raise NotFound("no such an url ")  # DTM's text, trailing space included
    return kept


def encode_subscribers(subscribers: Sequence[Subscriber]) -> str:
    return wire.encode_text([{"url": s.url, "remark": s.remark} for s in subscribers])


def decode_subscribers(entry: KVEntry) -> list[Subscriber]:
    """A topic's stored value; anything but DTM's shape (written by hand, say) is a server-side fault."""
    try:
        items = wire.decode(entry.v)
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(_is_subscriber(i) for i in items):
        raise ServerError(f"topic '{entry.k}' holds a value that is not a JSON array of {{url, remark}}.")
    return [Subscriber(i["url"], i.get("remark") or "") for i in items]


def _is_subscriber(item: object) -> bool:
    # Go reads a null remark as "": so do we.
    return isinstance(item, dict) and isinstance(item.get("url"), str) and isinstance(item.get("remark") or "", str)
