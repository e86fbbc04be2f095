"""The topic and KV routes of DTM's HTTP API (`subscribe`, `unsubscribe`, `topic/{name}`, `scanKV`,
`queryKV`), mounted under `/api/dtmsvr`: read the query, call `Topics` / the KV store, encode the reply.

Handlers find their objects in lifespan state: `request.state.topics` (a `Topics`) and
`request.state.kv` (a `KV`).
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fastdtm.api.http import json_response, success
from fastdtm.errors import Invalid
from fastdtm.store.kv import KVEntry, check_cat, check_key
from fastdtm.store.kv_base import KV
from fastdtm.topics import Topics
from fastdtm.wire import go_time

#: DTM's default page size of `scanKV`, and our bound on it.
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000


def _topics(request: Request) -> Topics:
    topics: Topics = request.state.topics
    return topics


def _kv(request: Request) -> KV:
    kv: KV = request.state.kv
    return kv


async def subscribe(request: Request) -> Response:
    params = request.query_params
    await _topics(request).subscribe(params.get("topic", ""), params.get("url", ""), params.get("remark", ""))
    return success()


async def unsubscribe(request: Request) -> Response:
    params = request.query_params
    await _topics(request).unsubscribe(params.get("topic", ""), params.get("url", ""))
    return success()


async def delete_topic(request: Request) -> Response:
    await _topics(request).delete(request.path_params["topicName"])
    return success()


async def scan_kv(request: Request) -> Response:
    params = request.query_params
    cat = check_cat(params.get("cat", ""))
    limit = _limit(params.get("limit", ""))
    entries, position = await _kv(request).scan(cat, params.get("position", ""), limit)
    return json_response({"kv": [kv_json(e) for e in entries], "next_position": position})


async def query_kv(request: Request) -> Response:
    """One entry (`key` given) or every entry of the category; `[]` when nothing matches (DTM's Redis store
    answers `null` when no key is given and nothing matches; its SQL stores `[]`)."""
    params = request.query_params
    cat = check_cat(params.get("cat", ""))
    kv = _kv(request)
    if key := params.get("key", ""):
        entry = await kv.get(cat, check_key(key))
        entries = [] if entry is None else [entry]
    else:
        entries = await kv.entries(cat)
    return json_response({"kv": [kv_json(e) for e in entries]})


def kv_json(entry: KVEntry) -> dict[str, Any]:
    """A KV entry as DTM shows it (Go's `KVStore` field order; `id` is 0, as with DTM's Redis store)."""
    return {
        "id": 0,
        "create_time": go_time(entry.create_ms),
        "update_time": go_time(entry.update_ms),
        "cat": entry.cat,
        "k": entry.k,
        "v": entry.v,
        "version": entry.version,
    }


def _limit(raw: str) -> int:
    if not raw:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise Invalid(f"query parameter 'limit' must be an integer within 1..{MAX_LIMIT}, got '{raw[:40]}'.")
    return int(raw)


routes = [
    Route("/subscribe", subscribe, methods=["GET"]),
    Route("/unsubscribe", unsubscribe, methods=["GET"]),
    # `path`: a topic name may hold "/" (DTM's route cannot delete such a topic).
    Route("/topic/{topicName:path}", delete_topic, methods=["DELETE"]),
    Route("/scanKV", scan_kv, methods=["GET"]),
    Route("/queryKV", query_kv, methods=["GET"]),
]
