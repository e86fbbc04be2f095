"""Self-check of `tests/support/tcp_proxy.py`: this module owns the proof, against a real `redis-server`, that
the holding proxy forwards byte-exactly when idle, holds replies or requests on every connection for the armed
time once the trigger passes (even split across reads), fires once, survives resets and hook errors, and leaves
no thread or listening port behind."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis_servers import RedisTarget, free_port
from tests.support.tcp_proxy import HoldingProxy

HOLD = 1.0
SLACK = 1.0


@pytest.fixture
def backend(redis_standalone: RedisTarget) -> RedisTarget:
    redis_standalone.flush()
    return redis_standalone


@pytest.fixture
def proxy(backend: RedisTarget) -> Iterator[HoldingProxy]:
    parts = urlsplit(backend.url)
    assert parts.hostname is not None and parts.port is not None
    with HoldingProxy((parts.hostname, parts.port)) as holding:
        yield holding
        assert holding.errors == []


def db_of(backend: RedisTarget) -> int:
    return int(urlsplit(backend.url).path.strip("/") or 0)


def client(url: str) -> redis.Redis:
    # No retries: a retried command would hide what the proxy did to the first attempt.
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


def proxied(proxy: HoldingProxy, backend: RedisTarget) -> redis.Redis:
    return client(proxy.url_for(db_of(backend)))


class Timed(threading.Thread):
    """Runs `call` once; records its result, any error, and when it started and finished (monotonic)."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._call = call
        self.result: Any = None
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.finished_at = 0.0
        self.start()

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            self.result = self._call()
        except BaseException as exc:
            self.error = exc
        self.finished_at = time.monotonic()

    def outcome(self, timeout: float = 5.0) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "the call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_pass_through_equals_direct(proxy: HoldingProxy, backend: RedisTarget) -> None:
    with proxied(proxy, backend) as via, client(backend.url) as direct:
        blob = bytes(range(256)) * 8192  # 2 MiB, every byte value: exercises partial writes and chunking
        assert via.set("blob", blob)
        assert via.get("blob") == blob == direct.get("blob")

        pipe = via.pipeline(transaction=False)
        for i in range(500):
            pipe.set(f"k{i}", f"v{i}\r\n\x00{i}")
            pipe.get(f"k{i}")
        results = pipe.execute()
        assert len(results) == 1000
        assert results[1::2] == [f"v{i}\r\n\x00{i}".encode() for i in range(500)]
        assert all(result is True for result in results[::2])

        reads: list[list[Any]] = []
        for target in (via, direct):
            pipe = target.pipeline(transaction=False)
            for i in range(1000):
                pipe.get(f"k{i % 500}") if i % 2 else pipe.strlen(f"k{i % 500}")
            reads.append(pipe.execute())
        assert reads[0] == reads[1]


def test_concurrent_connections(proxy: HoldingProxy, backend: RedisTarget) -> None:
    def bump() -> int:
        with proxied(proxy, backend) as via:
            for _ in range(200):
                via.incr("counter")
            return int(via.get("counter") or 0)

    workers = [Timed(bump) for _ in range(8)]
    for worker in workers:
        worker.outcome()
    with client(backend.url) as direct:
        assert direct.get("counter") == b"1600"


def test_reply_hold_delays_every_reply_but_not_requests(proxy: HoldingProxy, backend: RedisTarget) -> None:
    with proxied(proxy, backend) as first, proxied(proxy, backend) as second, client(backend.url) as direct:
        direct.set("reply-hold-key", "before")
        assert first.ping() and second.ping()  # both connections open before the hold
        proxy.arm_reply_hold(b"reply-hold-key", HOLD)

        get = Timed(lambda: first.get("reply-hold-key"))
        assert proxy.wait_triggered(2)
        set_during = Timed(lambda: second.set("during-hold", "yes"))
        # The SET reached Redis while its reply (and the GET's) is still held.
        assert wait_until(lambda: direct.get("during-hold") == b"yes", HOLD / 2)
        assert not proxy.released.is_set()

        assert get.outcome() == b"before"
        assert set_during.outcome() is True
        assert proxy.wait_released(1)
        assert HOLD <= get.finished_at - get.started_at <= HOLD + SLACK
        assert proxy.triggered_at is not None
        assert set_during.finished_at >= proxy.triggered_at + HOLD
        # After the hold the proxy forwards normally again.
        started = time.monotonic()
        assert first.get("during-hold") == b"yes"
        assert time.monotonic() - started < 0.5


def test_request_hold_delays_requests_but_not_replies(proxy: HoldingProxy, backend: RedisTarget) -> None:
    with (
        proxied(proxy, backend) as writer,
        proxied(proxy, backend) as waiter,
        client(backend.url) as direct,
    ):
        assert writer.ping()
        blocked = Timed(lambda: waiter.blpop(["queue"], timeout=4))
        assert wait_until(lambda: int(direct.info("clients")["blocked_clients"]) == 1, 2)

        proxy.arm_request_hold(b"request-hold-key", HOLD)
        write = Timed(lambda: writer.set("request-hold-key", "written"))
        assert proxy.wait_triggered(2)
        assert direct.get("request-hold-key") is None
        # A reply still flows during the hold: the blocked BLPOP is answered at once.
        direct.rpush("queue", "item")
        assert list(blocked.outcome(HOLD / 2)) == [b"queue", b"item"]
        time.sleep(HOLD / 2)
        assert direct.get("request-hold-key") is None
        assert not proxy.released.is_set()

        assert write.outcome() is True
        assert proxy.wait_released(1)
        assert direct.get("request-hold-key") == b"written"
        assert proxy.triggered_at is not None
        assert write.finished_at >= proxy.triggered_at + HOLD


def test_on_trigger_runs_exactly_once(proxy: HoldingProxy, backend: RedisTarget) -> None:
    calls: list[str] = []
    with proxied(proxy, backend) as first, proxied(proxy, backend) as second:
        proxy.arm_reply_hold(b"once-key", 0.2, on_trigger=lambda: calls.append(threading.current_thread().name))
        for target in (first, second, first):
            target.get("once-key")
        assert proxy.wait_triggered(1) and proxy.wait_released(1)
        assert calls == [proxy.thread_name]
        proxy.arm_reply_hold(b"other", 0.1)
        with pytest.raises(RuntimeError, match="already armed"):
            proxy.arm_reply_hold(b"other", 0.1)
        proxy.disarm()
        proxy.arm_reply_hold(b"other", 0.1)
        proxy.disarm()


def test_on_trigger_error_is_recorded_and_proxy_keeps_going(proxy: HoldingProxy, backend: RedisTarget) -> None:
    def boom() -> None:
        raise ValueError("hook went boom")

    with proxied(proxy, backend) as via:
        proxy.arm_request_hold(b"boom-key", 0.2, on_trigger=boom)
        assert via.set("boom-key", "v") is True
        assert proxy.wait_triggered(1) and proxy.wait_released(1)
        assert via.get("boom-key") == b"v"
    assert len(proxy.errors) == 1 and "hook went boom" in proxy.errors[0]
    proxy.errors.clear()


def test_trigger_split_across_reads(proxy: HoldingProxy) -> None:
    proxy.arm_reply_hold(b"split-trigger", 0.3)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"*2\r\n$3\r\nGET\r\n$13\r\nsplit-")
        time.sleep(0.1)
        assert not proxy.triggered.is_set()
        sock.sendall(b"trigger\r\n")
        assert proxy.wait_triggered(1)
        started = time.monotonic()
        assert sock.recv(100) == b"$-1\r\n"
        assert time.monotonic() - started >= 0.2


def test_reset_closes_only_that_pair(proxy: HoldingProxy, backend: RedisTarget) -> None:
    with proxied(proxy, backend) as via:
        assert via.ping()
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.sendall(b"PING\r\n")
        assert sock.recv(100) == b"+PONG\r\n"
        assert proxy.connection_count == 2
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # linger 0: an RST, not a FIN
        assert wait_until(lambda: proxy.connection_count == 1, 2)
        assert via.set("after-reset", "ok") is True
        assert via.get("after-reset") == b"ok"


def test_unreachable_upstream_closes_the_client() -> None:
    with HoldingProxy(("127.0.0.1", free_port())) as nowhere, client(nowhere.url_for()) as via:
        with pytest.raises(redis.ConnectionError):
            via.ping()
        assert wait_until(lambda: nowhere.connection_count == 0, 2)
        assert nowhere.errors == []


def test_close_stops_thread_closes_connections_and_frees_port(backend: RedisTarget) -> None:
    parts = urlsplit(backend.url)
    assert parts.hostname is not None and parts.port is not None
    holding = HoldingProxy((parts.hostname, parts.port))
    port, name = holding.port, holding.thread_name
    assert name in {thread.name for thread in threading.enumerate()}
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.sendall(b"PING\r\n")
    assert raw.recv(100) == b"+PONG\r\n"
    holding.arm_reply_hold(b"never-sent", 10)

    started = time.monotonic()
    holding.close()
    holding.close()  # idempotent
    assert time.monotonic() - started < 2
    assert name not in {thread.name for thread in threading.enumerate()}
    with raw:
        assert raw.recv(100) == b""  # the proxy closed its side of the open connection
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    assert holding.errors == []
