"""fastdtm.branch_http's ways out: forward proxies (Go's HTTP_PROXY/HTTPS_PROXY/NO_PROXY), TLS with a private
CA and a client certificate, and the connect timeout; on real loopback servers, asyncio's loop and uvloop.

Branch URLs name `busi.invalid`, a host only the test proxy (tests/support/forward_proxy.py) resolves: a call
that reaches the server went through the proxy. Loopback addresses and `localhost` are never proxied (Go's
rule), so the proxy tests cannot use them for the branch.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastdtm.branch_http import BranchDenied, BranchHttpError, HttpClient
from fastdtm.branch_policy import BranchPolicy
from fastdtm.branch_proxy import Proxies
from fastdtm.client_tls import client_context
from fastdtm.invoker import Invoker
from fastdtm.kinds.base import Call
from fastdtm.models import Options, Transaction
from fastdtm.states import Outcome, TransStatus, TransType
from tests.support.forward_proxy import ForwardProxy
from tests.support.loops import Run
from tests.support.tls import Pki, make_pki
from tests.unit.test_branch_http import RawServer, Seen, answer_ok

BUSI = "busi.invalid"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A private CA; its server certificate also names busi.invalid, the host reached through the proxy."""
    return make_pki(tmp_path_factory.mktemp("pki"), alt_names=f"IP:127.0.0.1,DNS:localhost,DNS:{BUSI}")


def server_tls(pki: Pki, *, require_client_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server.cert, pki.server.key)
    if require_client_certificate:
        context.load_verify_locations(pki.ca.cert)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def port_of(server: RawServer) -> int:
    return int(server.url("").rpartition(":")[2])


def basic(userinfo: str) -> str:
    return "Basic " + base64.b64encode(userinfo.encode()).decode()


async def get(http: HttpClient, url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    return await http.request("GET", url, {}, None, timeout)


# ----------------------------------------------------------------------------- through a proxy


def test_an_http_call_goes_through_the_proxy_in_absolute_form(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, ForwardProxy({BUSI: "127.0.0.1"}) as proxy:
            http = HttpClient(proxies=Proxies.parse(http_proxy=proxy.url()))
            url = f"http://{BUSI}:{port_of(server)}/api/TransIn?gid=g1"
            for _ in range(2):
                assert await get(http, url) == (200, b"ok /api/TransIn?gid=g1")
            await http.close()
            # The proxy got the absolute URL, on one kept-alive connection; the server the origin form.
            assert [(s.method, s.target, s.connection) for s in proxy.seen] == [("GET", url, 1)] * 2
            assert [(s.target, s.header("host")) for s in server.seen] == [
                ("/api/TransIn?gid=g1", [f"{BUSI}:{port_of(server)}"])
            ] * 2
            assert "proxy-authorization" not in proxy.seen[0].headers

    run(main())


def test_proxy_credentials_become_proxy_authorization(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, ForwardProxy({BUSI: "127.0.0.1"}, auth=basic("u:p@ss")) as proxy:
            http = HttpClient(proxies=Proxies.parse(http_proxy=proxy.url("u:p%40ss")))
            # A caller's own Proxy-Authorization (a branch header) does not replace the proxy URL's, as in Go.
            given = {"Proxy-Authorization": basic("someone:else")}
            assert await http.request("GET", f"http://{BUSI}:{port_of(server)}/x", given, None, 5.0) == (200, b"ok /x")
            await http.close()
            assert [s.headers["proxy-authorization"] for s in proxy.seen] == [basic("u:p@ss")]
            # Without them the proxy answers 407: a reply like any other, which DTM's rules make an error.
            http = HttpClient(proxies=Proxies.parse(http_proxy=proxy.url()))
            assert (await get(http, f"http://{BUSI}:{port_of(server)}/x"))[0] == 407
            await http.close()
            # The branch never sees the proxy's credentials.
            assert [s.header("proxy-authorization") for s in server.seen] == [[]]

    run(main())


def test_an_https_call_tunnels_through_connect_to_a_private_ca_server(run: Run, pki: Pki) -> None:
    async def main() -> None:
        async with (
            RawServer(answer_ok, server_tls(pki)) as server,
            ForwardProxy({BUSI: "127.0.0.1"}, auth=basic("u:p")) as proxy,
        ):
            proxies = Proxies.parse(https_proxy=proxy.url("u:p"))
            http = HttpClient(ssl=client_context(str(pki.ca.cert)), proxies=proxies)
            url = f"https://{BUSI}:{port_of(server)}/s"
            for _ in range(2):
                assert await get(http, url) == (200, b"ok /s")
            await http.close()
            # One tunnel, kept alive, verified against the private CA under the branch's own name.
            assert [(s.method, s.target) for s in proxy.seen] == [("CONNECT", f"{BUSI}:{port_of(server)}")]
            assert proxy.seen[0].headers["proxy-authorization"] == basic("u:p")
            assert server.connections == 1 and [s.target for s in server.seen] == ["/s", "/s"]
            # The system's CAs do not know the private one: the handshake through the tunnel fails.
            http = HttpClient(proxies=proxies)
            with pytest.raises(BranchHttpError, match=f"{BUSI}.* through the proxy .*CERTIFICATE_VERIFY_FAILED"):
                await get(http, url)
            await http.close()

    run(main())


def test_a_proxy_that_refuses_connect_fails_the_call_and_it_is_retried_later(run: Run) -> None:
    async def main() -> None:
        async with ForwardProxy({BUSI: "127.0.0.1"}, refuse_connect=True) as proxy:
            http = HttpClient(proxies=Proxies.parse(https_proxy=proxy.url()))
            with pytest.raises(
                BranchHttpError, match=r"the proxy 127\.0\.0\.1:\d+ refused CONNECT busi\.invalid:443: 403"
            ):
                await get(http, f"https://{BUSI}/x")
            # Through the Invoker: an ERROR outcome, which the engine retries as any failed call.
            trans = Transaction("g-proxy", TransType.SAGA, TransStatus.SUBMITTED, Options(), 0, 0)
            done = await Invoker(http, 3.0).call(trans, Call(0, "01", "action", f"https://{BUSI}/TransIn", ""))
            assert done.outcome is Outcome.ERROR and "refused CONNECT" in done.detail
            await http.close()

    run(main())


def test_no_proxy_and_loopback_go_direct(run: Run) -> None:
    async def main() -> None:
        async with RawServer(answer_ok) as server, ForwardProxy({BUSI: "127.0.0.1"}) as proxy:
            port = port_of(server)
            proxies = Proxies.parse(http_proxy=proxy.url(), no_proxy=f"example.com, .invalid:{port}")
            http = HttpClient(proxies=proxies)
            # Loopback and localhost: direct whatever NO_PROXY says, as in Go.
            for host in ("127.0.0.1", "localhost"):
                assert await get(http, f"http://{host}:{port}/d") == (200, b"ok /d")
            # Matched by NO_PROXY (domain and port): direct, so this name, which only the proxy knows, fails.
            with pytest.raises(BranchHttpError, match=f"cannot connect to {BUSI}:{port}: "):
                await get(http, f"http://{BUSI}:{port}/d")
            # Another port: not matched, through the proxy (which finds nothing there).
            assert (await get(http, f"http://{BUSI}:1/d"))[0] == 502
            await http.close()
            assert [s.target for s in proxy.seen] == [f"http://{BUSI}:1/d"]
            assert [s.target for s in server.seen] == ["/d", "/d"]

    run(main())


def test_the_branch_policy_checks_the_host_through_a_proxy(run: Run) -> None:
    async def main() -> None:
        async with ForwardProxy({BUSI: "127.0.0.1"}) as proxy:
            policy = BranchPolicy(deny=f"{BUSI},169.254.0.0/16")
            http = HttpClient(policy=policy, proxies=Proxies.parse(http_proxy=proxy.url(), https_proxy=proxy.url()))
            for url in (f"http://{BUSI}/x", f"https://{BUSI}/x", "http://169.254.169.254/latest"):
                with pytest.raises(BranchDenied):
                    await get(http, url)
            await http.close()
            assert proxy.seen == []

    run(main())


# ----------------------------------------------------------------------------- TLS options


@pytest.mark.parametrize("via_proxy", [False, True])
def test_mutual_tls_succeeds_with_the_client_certificate_and_fails_without(run: Run, pki: Pki, via_proxy: bool) -> None:
    async def main() -> None:
        async with (
            RawServer(answer_ok, server_tls(pki, require_client_certificate=True)) as server,
            ForwardProxy({BUSI: "127.0.0.1"}) as proxy,
        ):
            proxies = Proxies.parse(https_proxy=proxy.url()) if via_proxy else None
            url = f"https://{BUSI if via_proxy else '127.0.0.1'}:{port_of(server)}/m"
            ca, cert, key = str(pki.ca.cert), str(pki.client.cert), str(pki.client.key)
            http = HttpClient(ssl=client_context(ca, cert, key), proxies=proxies)
            assert await get(http, url) == (200, b"ok /m")
            await http.close()
            http = HttpClient(ssl=client_context(ca), proxies=proxies)
            with pytest.raises(BranchHttpError):
                await get(http, url)
            await http.close()
            assert [s.target for s in server.seen] == ["/m"]

    run(main())


def test_the_alert_webhook_client_shows_its_own_certificate(run: Run, pki: Pki, tmp_path: Path) -> None:
    from fastdtm.config import Settings

    settings = Settings(
        store=f"sqlite:///{tmp_path / 'x.db'}",
        alert_ca_certs=str(pki.ca.cert),
        alert_certfile=str(pki.client.cert),
        alert_keyfile=str(pki.client.key),
    )

    async def main() -> None:
        async with RawServer(answer_ok, server_tls(pki, require_client_certificate=True)) as server:
            http = HttpClient(ssl=settings.client_tls("alert"))
            status, _ = await http.request("POST", server.url("/alert"), {}, b"{}", 5.0)
            await http.close()
            assert status == 200
            # The branch client's settings are apart: none set, the system's CAs, which do not know this one.
            assert settings.client_tls("branch") is None

    run(main())


# ----------------------------------------------------------------------------- the connect timeout


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection's SYN goes unanswered."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # under way: the handshake completes into the queue
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield port
    finally:
        for sock in (*fillers, listener):
            sock.close()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_host_that_never_answers_costs_the_connect_timeout_not_the_request_timeout(
    run: Run, unanswered_port: int, scheme: str
) -> None:
    async def main() -> None:
        http = HttpClient(connect_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(BranchHttpError, match=r"not connected to 127.0.0.1:\d+ within the connect timeout, 0.3 s"):
            await get(http, f"{scheme}://127.0.0.1:{unanswered_port}/", timeout=10.0)
        assert time.monotonic() - started < 5.0
        await http.close()

    run(main())


def test_a_tls_handshake_that_never_ends_costs_the_connect_timeout(run: Run) -> None:
    async def mute(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return False  # never reached: the client's hello is not an HTTP request

    async def main() -> None:
        async with RawServer(mute) as server:  # plain TCP: accepts, reads, never answers the ClientHello
            http = HttpClient(connect_timeout=0.3)
            started = time.monotonic()
            with pytest.raises(BranchHttpError, match="within the connect timeout"):
                await get(http, server.url("/").replace("http://", "https://"), timeout=10.0)
            assert time.monotonic() - started < 5.0
            await http.close()

    run(main())


def test_a_proxy_that_never_answers_connect_costs_the_connect_timeout(run: Run) -> None:
    async def main() -> None:
        async with ForwardProxy({BUSI: "127.0.0.1"}, silent_connect=True) as proxy:
            http = HttpClient(connect_timeout=0.3, proxies=Proxies.parse(https_proxy=proxy.url()))
            with pytest.raises(BranchHttpError, match=f"{BUSI}:443 through the proxy .* within the connect timeout"):
                await get(http, f"https://{BUSI}/", timeout=10.0)
            await http.close()

    run(main())


def test_the_request_timeout_still_bounds_a_connect_when_it_is_the_shorter(run: Run, unanswered_port: int) -> None:
    async def main() -> None:
        http = HttpClient(connect_timeout=10.0)
        with pytest.raises(BranchHttpError, match=r"not connected to 127.0.0.1:\d+ within 0.3 s"):
            await get(http, f"http://127.0.0.1:{unanswered_port}/", timeout=0.3)
        await http.close()

    run(main())
