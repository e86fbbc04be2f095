"""The store's Redis client against servers that refuse or are not ready (issue 13), each a private
`redis-server`: a wrong password or ACL user fails cleanly and leaves no socket behind, a server still loading
its dump or short of replicas is waited for, a master demoted behind a stable address is left for the new one,
and a reply that is not UTF-8 fails its own command only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Final

import pytest
import redis

from fastdtm.store.redis import Script
from fastdtm.store.redis_client import Redis, connect
from fastdtm.store.resp import ReplyError, Timeouts
from tests.conftest import missing_toolchain
from tests.support.redis_servers import RedisServer, RedisUnavailable
from tests.support.tcp_proxy import HoldingProxy

PASSWORD: Final = "s3cret"
ATTEMPTS: Final = 20
#: Scripts every connection loads first, as a node's client does.
PRELOAD: Final = [Script("load").source, Script("take").source]


def start(*args: str) -> RedisServer:
    try:
        return RedisServer(args)
    except RedisUnavailable as exc:
        missing_toolchain(str(exc))


@pytest.fixture
def guarded() -> Iterator[RedisServer]:
    """A server that wants a password, and has an ACL user `app` (password `apppw`) with every right."""
    with start("--requirepass", PASSWORD) as server:
        with admin(server) as control:
            control.execute_command("ACL", "SETUSER", "app", "on", ">apppw", "~*", "&*", "+@all")
            control.execute_command("ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "+@all", "-@scripting")
        yield server


def admin(server: RedisServer, password: str | None = PASSWORD) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=password, decode_responses=True)


def clients_of(server: RedisServer, password: str | None = PASSWORD) -> int:
    """Connections the server holds, not counting the one asking."""
    with admin(server, password) as control:
        return int(control.info("clients")["connected_clients"]) - 1


def settled(server: RedisServer, expected: int, password: str | None = PASSWORD, timeout: float = 2.0) -> int:
    """The connection count once it stops falling (a closed socket takes a moment to reach the server)."""
    deadline = time.monotonic() + timeout
    while (count := clients_of(server, password)) > expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


@pytest.mark.parametrize(
    "userinfo", [pytest.param(":wrong@", id="password"), pytest.param("app:wrong@", id="acl-user")]
)
async def test_a_wrong_password_fails_every_command_and_leaks_no_socket(guarded: RedisServer, userinfo: str) -> None:
    client = connect(f"redis://{userinfo}127.0.0.1:{guarded.port}/0", preload=PRELOAD)
    try:
        for _ in range(ATTEMPTS):
            with pytest.raises(ReplyError, match="WRONGPASS"):
                await client.execute(None, "PING")
        assert settled(guarded, 0) == 0
    finally:
        await client.aclose()


async def test_an_acl_user_with_its_password_is_served(guarded: RedisServer) -> None:
    client = connect(f"redis://app:apppw@127.0.0.1:{guarded.port}/0", preload=PRELOAD)
    try:
        assert await client.execute("k", "SET", "k", "v") == "OK"
        assert await client.execute(None, "ACL", "WHOAMI") == "app"
    finally:
        await client.aclose()


async def test_a_user_who_may_not_load_scripts_is_told_so(guarded: RedisServer) -> None:
    client = connect(f"redis://noscripts:pw@127.0.0.1:{guarded.port}/0", preload=PRELOAD)
    try:
        with pytest.raises(ReplyError, match="NOPERM"):
            await client.execute(None, "PING")
        assert settled(guarded, 0) == 0
    finally:
        await client.aclose()


@pytest.mark.parametrize("preload", [pytest.param(PRELOAD, id="handshake"), pytest.param([], id="command")])
async def test_a_server_loading_its_dump_is_waited_for(preload: list[str]) -> None:
    """LOADING (in the handshake's script loads, or to the command itself) means "not yet": the command is
    sent again until the load ends, within the retry time, and no socket is left behind on the way."""
    with start("--key-load-delay", "100", "--loading-process-events-interval-bytes", "1024") as server:
        with admin(server, None) as control:
            pipe = control.pipeline(transaction=False)
            for i in range(20_000):  # 2 s of loading at 100 µs a key
                pipe.set(f"key:{i}", i)
            pipe.execute()
            control.save()
        server.kill()
        server.restart(wait=False)
        client = connect(server.url, Timeouts(retry=15.0), preload=preload)
        try:
            assert await _loading(server)
            started = time.monotonic()

            assert await client.execute("key:7", "GET", "key:7") == "7"

            assert time.monotonic() - started > 0.5  # it did wait
            assert settled(server, 1, None) == 1
        finally:
            await client.aclose()


async def test_a_master_demoted_behind_a_stable_address_is_left_for_the_new_one() -> None:
    """The address (a DNS name, a virtual IP: a proxy here) moves to the new master; the connection still open
    reaches the old one, now a replica that answers READONLY: the client connects again and writes there."""
    with start() as old, start() as new, HoldingProxy(("127.0.0.1", old.port)) as address:
        client = connect(address.url_for(), Timeouts(retry=5.0))
        assert isinstance(client, Redis)
        try:
            assert await client.execute("k", "SET", "k", "before") == "OK"
            with admin(old, None) as control:
                control.execute_command("REPLICAOF", "127.0.0.1", new.port)
            address.move_to(("127.0.0.1", new.port))

            assert await client.execute("k", "SET", "k", "after") == "OK"

            with admin(new, None) as control:
                assert control.get("k") == "after"
        finally:
            await client.aclose()


async def test_a_master_short_of_replicas_is_waited_for() -> None:
    """NOREPLICAS (`min-replicas-to-write` not met: a replica reconnecting) refuses a write without running it."""
    with start() as server:
        with admin(server, None) as control:
            control.config_set("min-replicas-to-write", 1)
        client = connect(server.url, Timeouts(retry=5.0))
        try:

            def replicas_back() -> None:
                time.sleep(0.5)
                with admin(server, None) as control:
                    control.config_set("min-replicas-to-write", 0)

            back = asyncio.ensure_future(asyncio.to_thread(replicas_back))
            started = time.monotonic()

            assert await client.execute("k", "SET", "k", "v") == "OK"

            assert time.monotonic() - started >= 0.4
            await back
        finally:
            await client.aclose()


async def test_a_reply_that_is_not_utf8_fails_its_own_command_only() -> None:
    with start() as server:
        with redis.Redis(host="127.0.0.1", port=server.port) as control:
            control.set("binary", b"\xff\xfe")
            control.set("text", "fine")
        client = connect(server.url)
        assert isinstance(client, Redis)
        try:
            await client.execute(None, "PING")
            connection = client.node.connected

            replies: list[object] = await asyncio.gather(
                client.execute("binary", "GET", "binary"), client.execute("text", "GET", "text"), return_exceptions=True
            )
            bad, good = replies

            assert isinstance(bad, ReplyError) and bad.code == "DECODE", bad
            assert good == "fine"
            assert client.node.connected is connection  # the connection survived it
        finally:
            await client.aclose()


async def _loading(server: RedisServer, timeout: float = 5.0) -> bool:
    """Whether the restarted server was seen answering LOADING (it is then still loading its dump).
    A raw PING: redis-py hides LOADING from a PING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            await asyncio.sleep(0.01)
            continue
        try:
            writer.write(b"PING\r\n")
            return (await reader.readline()).startswith(b"-LOADING")
        finally:
            writer.close()
    return False
