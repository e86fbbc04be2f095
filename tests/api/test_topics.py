"""Topics and KV over HTTP (`subscribe`, `unsubscribe`, `DELETE topic/{name}`, `scanKV`, `queryKV`), in process
through ASGI on a small app of the test's own with the lifespan state the handlers expect: DTM's reply shapes and
error texts, the topic's stored value, concurrent writers all landing through the version compare-and-set, and bad
input refused with nothing changed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypedDict

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from fastdtm.api import kv as kv_api
from fastdtm.api.http import api_error, store_error
from fastdtm.errors import ApiError, ServerError, StoreError
from fastdtm.sharding import Keys
from fastdtm.store.kv import RedisKV
from fastdtm.store.redis_client import Commands, connect
from fastdtm.topics import CAT, Topics
from tests.conftest import STORES
from tests.support.redis_servers import RedisTarget

T0: Final = 1_700_000_000_000
SUCCESS: Final = {"dtm_result": "SUCCESS"}
RFC3339: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")
KEYS: Final = Keys()


class StepClock:
    """Each reading is one second after the previous one, so create and update times differ visibly."""

    def __init__(self) -> None:
        self.now = T0

    def now_ms(self) -> int:
        self.now += 1000
        return self.now


class State(TypedDict):
    kv: RedisKV
    topics: Topics


Lifespan = Callable[[Starlette], AbstractAsyncContextManager[State]]


def lifespan_over(store_url: str) -> Lifespan:
    """The state fastdtm's own lifespan provides to these handlers: one client, a `RedisKV` and `Topics` over it."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        client = connect(store_url)
        # fastdtm's lifespan waits for the store to answer before serving; a cluster client also learns the slot
        # map then, before concurrent traffic.
        await client.execute(None, "PING")
        kv = RedisKV(client, KEYS)
        try:
            yield {"kv": kv, "topics": Topics(kv, StepClock())}
        finally:
            await client.aclose()

    return lifespan


def with_state(app: ASGIApp, state: Mapping[str, Any]) -> ASGIApp:
    """What an ASGI server does with lifespan state, and `httpx.ASGITransport` does not: a shallow copy of it in
    every request's scope."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = dict(state)
        await app(scope, receive, send)

    return asgi


@dataclass(frozen=True, slots=True)
class Api:
    http: httpx.AsyncClient
    topics: Topics
    kv: RedisKV


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest) -> str:
    """Flushed for every test (this package's default is once per module): these tests count what is stored."""
    name = "redis_standalone" if request.param == "redis" else "redis_cluster"
    backend: RedisTarget = request.getfixturevalue(name)
    backend.flush()
    return backend.url


@pytest.fixture
async def api(store_url: str) -> AsyncIterator[Api]:
    lifespan = lifespan_over(store_url)
    app = Starlette(
        routes=[Mount("/api/dtmsvr", routes=kv_api.routes)],
        lifespan=lifespan,
        exception_handlers={ApiError: api_error, StoreError: store_error},
    )
    async with lifespan(app) as state:
        transport = httpx.ASGITransport(app=with_state(app, state))
        async with httpx.AsyncClient(transport=transport, base_url="http://fastdtm/api/dtmsvr") as http:
            yield Api(http, state["topics"], state["kv"])


async def subscribe(api: Api, topic: str, url: str, remark: str = "") -> httpx.Response:
    return await api.http.get("/subscribe", params={"topic": topic, "url": url, "remark": remark})


async def unsubscribe(api: Api, topic: str, url: str) -> httpx.Response:
    return await api.http.get("/unsubscribe", params={"topic": topic, "url": url})


async def query(api: Api, cat: str = CAT, key: str | None = None) -> list[dict[str, Any]]:
    params = {"cat": cat} if key is None else {"cat": cat, "key": key}
    reply = await api.http.get("/queryKV", params=params)
    assert reply.status_code == 200, reply.text
    entries: list[dict[str, Any]] = reply.json()["kv"]
    return entries


async def stored_value(api: Api, topic: str) -> str:
    entries = await query(api, key=topic)
    assert len(entries) == 1, entries
    value: str = entries[0]["v"]
    return value


def value_of(*subscribers: tuple[str, str]) -> str:
    """A topic's value as DTM writes it."""
    return "[" + ",".join(f'{{"url":"{url}","remark":"{remark}"}}' for url, remark in subscribers) + "]"


def assert_refused(reply: httpx.Response, status: int, text: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.json()["message"].startswith(text), reply.json()


async def test_subscribe_creates_the_topic_in_dtms_kv_shape(api: Api) -> None:
    assert (await subscribe(api, "orders", "http://a/notify", "first")).json() == SUCCESS

    [entry] = await query(api, key="orders")
    assert list(entry) == ["id", "create_time", "update_time", "cat", "k", "v", "version"]
    assert entry["id"] == 0 and entry["cat"] == "topics" and entry["k"] == "orders" and entry["version"] == 1
    assert entry["v"] == value_of(("http://a/notify", "first"))
    assert RFC3339.match(entry["create_time"]) and entry["update_time"] == entry["create_time"]


async def test_subscribe_twice_conflicts_and_keeps_the_first(api: Api) -> None:
    await subscribe(api, "orders", "http://a/notify", "first")

    reply = await subscribe(api, "orders", "http://a/notify", "second")

    assert_refused(reply, 409, "this url exists")
    assert reply.json()["dtm_result"] == "FAILURE"
    assert await stored_value(api, "orders") == value_of(("http://a/notify", "first"))
    assert (await query(api, key="orders"))[0]["version"] == 1


async def test_two_subscribers_in_subscription_order(api: Api) -> None:
    await subscribe(api, "orders", "http://b/notify", "b")
    await subscribe(api, "orders", "https://a/notify")

    [entry] = await query(api, key="orders")
    assert entry["v"] == value_of(("http://b/notify", "b"), ("https://a/notify", ""))
    assert entry["version"] == 2
    assert entry["update_time"] != entry["create_time"]
    assert await api.topics.subscribers("orders") == ["http://b/notify", "https://a/notify"]


async def test_unsubscribe_removes_one_url(api: Api) -> None:
    for url in ("http://a", "http://b", "http://c"):
        await subscribe(api, "orders", url)

    assert (await unsubscribe(api, "orders", "http://b")).json() == SUCCESS

    assert await api.topics.subscribers("orders") == ["http://a", "http://c"]
    assert_refused(await unsubscribe(api, "orders", "http://b"), 404, "no such an url")
    assert_refused(await unsubscribe(api, "payments", "http://a"), 404, "no such a topic")
    assert await api.topics.subscribers("orders") == ["http://a", "http://c"]


async def test_unsubscribing_the_last_url_leaves_an_empty_topic(api: Api) -> None:
    await subscribe(api, "orders", "http://a")

    assert (await unsubscribe(api, "orders", "http://a")).json() == SUCCESS

    # As in DTM: the topic stays, with no subscriber, until it is deleted.
    [entry] = await query(api, key="orders")
    assert (entry["v"], entry["version"]) == ("[]", 2)
    assert await api.topics.subscribers("orders") == []
    assert_refused(await unsubscribe(api, "orders", "http://a"), 404, "this topic is empty")
    assert (await subscribe(api, "orders", "http://b")).json() == SUCCESS
    assert await api.topics.subscribers("orders") == ["http://b"]
    assert (await query(api, key="orders"))[0]["version"] == 3


async def test_delete_topic(api: Api) -> None:
    await subscribe(api, "orders", "http://a")
    await subscribe(api, "payments", "http://a")

    assert (await api.http.delete("/topic/orders")).json() == SUCCESS

    assert await query(api, key="orders") == []
    assert [e["k"] for e in await query(api)] == ["payments"]
    assert await api.topics.subscribers("orders") == []
    assert_refused(await api.http.delete("/topic/orders"), 404, "storage: NotFound")
    assert_refused(await unsubscribe(api, "orders", "http://a"), 404, "no such a topic")
    # A deleted topic starts over.
    await subscribe(api, "orders", "http://b")
    assert (await query(api, key="orders"))[0]["version"] == 1


async def test_delete_a_topic_whose_name_holds_slashes(api: Api) -> None:
    await subscribe(api, "orders/eu", "http://a")
    await subscribe(api, "orders", "http://a")

    assert (await api.http.delete("/topic/orders/eu")).json() == SUCCESS

    assert [e["k"] for e in await query(api)] == ["orders"]
    assert_refused(await api.http.delete("/topic/"), 422, "empty topic")
    assert [e["k"] for e in await query(api)] == ["orders"]


async def test_scan_kv_pages_in_key_order(api: Api) -> None:
    for topic in ("t3", "t1", "t5", "t2", "t4"):
        await subscribe(api, topic, f"http://busi/{topic}")

    pages: list[list[str]] = []
    position = ""
    while True:
        reply = await api.http.get("/scanKV", params={"cat": CAT, "position": position, "limit": "2"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert list(body) == ["kv", "next_position"]
        pages.append([e["k"] for e in body["kv"]])
        position = body["next_position"]
        if not position:
            break

    assert pages == [["t1", "t2"], ["t3", "t4"], ["t5"]]
    whole = (await api.http.get("/scanKV", params={"cat": CAT})).json()
    assert [e["k"] for e in whole["kv"]] == ["t1", "t2", "t3", "t4", "t5"] and whole["next_position"] == ""
    assert whole["kv"][0]["v"] == value_of(("http://busi/t1", ""))
    assert (await api.http.get("/scanKV", params={"cat": "other"})).json() == {"kv": [], "next_position": ""}


async def test_query_kv(api: Api) -> None:
    await subscribe(api, "b", "http://b")
    await subscribe(api, "a", "http://a")
    await api.kv.create("other", "a", "not a topic", T0)

    assert [e["v"] for e in await query(api, key="a")] == [value_of(("http://a", ""))]
    assert await query(api, key="missing") == []
    assert [e["k"] for e in await query(api)] == ["a", "b"]
    assert [(e["cat"], e["v"]) for e in await query(api, cat="other")] == [("other", "not a topic")]
    assert await query(api, cat="empty") == []


async def test_concurrent_subscribes_all_land(api: Api) -> None:
    urls = [f"http://busi/{i}" for i in range(20)]

    replies = await asyncio.gather(*(subscribe(api, "orders", url) for url in urls))

    assert [r.json() for r in replies] == [SUCCESS] * 20
    assert sorted(await api.topics.subscribers("orders")) == sorted(urls)
    # One create and 19 updates: every lost compare-and-set was re-read and re-applied, none overwrote another.
    assert (await query(api, key="orders"))[0]["version"] == 20


async def test_concurrent_subscribes_and_unsubscribes(api: Api) -> None:
    old = [f"http://old/{i}" for i in range(10)]
    new = [f"http://new/{i}" for i in range(10)]
    for url in old:
        await subscribe(api, "orders", url)

    replies = await asyncio.gather(
        *(subscribe(api, "orders", url) for url in new), *(unsubscribe(api, "orders", url) for url in old)
    )

    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
    assert sorted(await api.topics.subscribers("orders")) == sorted(new)


async def test_a_lost_race_is_retried_on_what_the_winner_wrote(store_url: str) -> None:
    client = connect(store_url)
    try:
        racing = RacingKV(client, rivals=2)
        topics = Topics(racing, StepClock())
        await topics.subscribe("orders", "http://first")

        await topics.subscribe("orders", "http://mine")

        # Each rival subscribed between this writer's read and write; its change survived the retry.
        assert await topics.subscribers("orders") == ["http://first", "http://rival/1", "http://rival/2", "http://mine"]
        assert racing.updates == 3
    finally:
        await client.aclose()


async def test_a_writer_that_always_loses_gives_up(store_url: str) -> None:
    client = connect(store_url)
    try:
        racing = RacingKV(client, rivals=100)
        topics = Topics(racing, StepClock(), attempts=3)
        await topics.subscribe("orders", "http://first")

        with pytest.raises(ServerError, match="kept changing under 3 attempts"):
            await topics.subscribe("orders", "http://mine")

        assert racing.updates == 3
        assert "http://mine" not in await topics.subscribers("orders")
    finally:
        await client.aclose()


class RacingKV(RedisKV):
    """Before each of its first `rivals` updates, another writer subscribes a URL of its own: the update loses."""

    def __init__(self, client: Commands, rivals: int) -> None:
        super().__init__(client, KEYS)
        self.rivals = rivals
        self.updates = 0
        self._rival = Topics(RedisKV(client, KEYS), StepClock())

    async def update(self, cat: str, k: str, v: str, expected_version: int, now_ms: int) -> bool:
        self.updates += 1
        if self.updates <= self.rivals:
            await self._rival.subscribe(k, f"http://rival/{self.updates}")
        return await super().update(cat, k, v, expected_version, now_ms)


BAD_SUBSCRIBES: Final = [
    ({"url": "http://a"}, "empty topic"),
    ({"topic": "", "url": "http://a"}, "empty topic"),
    ({"topic": "orders"}, "empty url"),
    ({"topic": "orders", "url": ""}, "empty url"),
    ({"topic": "orders", "url": "ftp://a/b"}, "url 'ftp://a/b' is neither an http"),
    ({"topic": "orders", "url": "topic://other"}, "url 'topic://other' is neither an http"),
    ({"topic": "orders", "url": "busi/notify"}, "url 'busi/notify' is neither an http"),
    ({"topic": "orders", "url": "http://a/" + "x" * 1100}, "url is longer"),
    ({"topic": "t" * 129, "url": "http://a"}, "topic"),
    ({"topic": "a\nb", "url": "http://a"}, "topic"),
    ({"topic": "orders", "url": "http://a", "remark": "r" * 1025}, "remark is longer"),
]


@pytest.mark.parametrize(("params", "text"), BAD_SUBSCRIBES)
async def test_bad_subscribe_is_refused_and_changes_nothing(api: Api, params: dict[str, str], text: str) -> None:
    await subscribe(api, "orders", "http://kept")
    before = await query(api)

    assert_refused(await api.http.get("/subscribe", params=params), 422, text)

    assert await query(api) == before


BAD_REQUESTS: Final = [
    ("/unsubscribe", {"url": "http://kept"}, "empty topic"),
    ("/unsubscribe", {"topic": "orders"}, "empty url"),
    ("/unsubscribe", {"topic": "orders", "url": "ftp://kept"}, "url 'ftp://kept' is neither an http"),
    ("/scanKV", {}, "cat is required"),
    ("/scanKV", {"cat": "a:b"}, "cat 'a:b' is invalid"),
    ("/scanKV", {"cat": CAT, "limit": "0"}, "query parameter 'limit'"),
    ("/scanKV", {"cat": CAT, "limit": "1001"}, "query parameter 'limit'"),
    ("/scanKV", {"cat": CAT, "limit": "x"}, "query parameter 'limit'"),
    ("/scanKV", {"cat": CAT, "limit": "²"}, "query parameter 'limit'"),
    ("/queryKV", {"key": "orders"}, "cat is required"),
    ("/queryKV", {"cat": CAT, "key": "k" * 129}, "key"),
]


@pytest.mark.parametrize(("path", "params", "text"), BAD_REQUESTS)
async def test_bad_requests_are_refused_and_change_nothing(
    api: Api, path: str, params: dict[str, str], text: str
) -> None:
    await subscribe(api, "orders", "http://kept")
    before = await query(api)

    assert_refused(await api.http.get(path, params=params), 422, text)

    assert await query(api) == before


async def test_only_dtms_methods(api: Api) -> None:
    calls: list[Callable[[], Awaitable[httpx.Response]]] = [
        lambda: api.http.post("/subscribe", params={"topic": "t", "url": "http://a"}),
        lambda: api.http.get("/topic/t"),
    ]
    for call in calls:
        assert (await call()).status_code == 405
    assert await query(api) == []
