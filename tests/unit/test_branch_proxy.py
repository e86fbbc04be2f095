"""Which calls go through a proxy (fastdtm.branch_proxy), by Go's net/http rules, and the settings that carry
HTTP_PROXY, HTTPS_PROXY, NO_PROXY and the outgoing TLS files: read once, checked at start."""

from __future__ import annotations

import re

import pytest

from fastdtm.branch_proxy import Proxies, Proxy, proxy_url
from fastdtm.config import Settings, SettingsError
from tests.support.tls import Pki, make_pki

HTTP = Proxy("proxy.internal", 3128, None)
HTTPS = Proxy("tunnel.internal", 80, None)


@pytest.mark.parametrize(
    ("value", "proxy"),
    [
        ("proxy.internal:3128", Proxy("proxy.internal", 3128, None)),  # no scheme: http://
        ("http://proxy.internal", Proxy("proxy.internal", 80, None)),  # no port: 80
        ("HTTP://Proxy.Internal:8080/", Proxy("proxy.internal", 8080, None)),
        ("http://u:p%40ss@10.0.0.1:3128", Proxy("10.0.0.1", 3128, "Basic dTpwQHNz")),  # user:p@ss
        ("http://[fd00::1]:3128", Proxy("fd00::1", 3128, None)),
    ],
)
def test_proxy_urls_as_go_reads_them(value: str, proxy: Proxy) -> None:
    assert proxy_url(value, "http_proxy") == proxy


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("socks5://proxy:1080", "only http:// proxies are supported, got socks5://"),
        ("https://proxy:443", "only http:// proxies are supported, got https://"),
        ("http://proxy:99999", "invalid host or port"),
        ("http://proxy:3128/path", "got a path"),
    ],
)
def test_unusable_proxy_urls_are_refused(value: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        proxy_url(value, "http_proxy")


ROUTES = Proxies.parse(
    "proxy.internal:3128",
    "tunnel.internal",
    "example.com, .corp.internal,*.svc.local, 10.0.0.0/8,192.168.1.1:8080,[fd00::2], fd00::3 ,busi:9000",
)


@pytest.mark.parametrize(
    ("origin", "proxy"),
    [
        (("http", "busi.invalid", 80), HTTP),
        (("https", "busi.invalid", 443), HTTPS),  # https uses HTTPS_PROXY, never HTTP_PROXY
        # Never proxied, whatever NO_PROXY says (Go's rule).
        (("http", "localhost", 80), None),
        (("http", "127.0.0.1", 80), None),
        (("http", "127.9.9.9", 80), None),
        (("https", "::1", 443), None),
        # "example.com": the domain and its subdomains; not a name that merely ends the same.
        (("http", "example.com", 80), None),
        (("http", "a.b.example.com", 80), None),
        (("http", "notexample.com", 80), HTTP),
        # ".corp.internal" and "*.svc.local": subdomains only.
        (("http", "corp.internal", 80), HTTP),
        (("http", "db.corp.internal", 80), None),
        (("http", "svc.local", 80), HTTP),
        (("http", "busi.ns.svc.local", 80), None),
        # Addresses and ranges; an IP entry with a port matches that port only.
        (("http", "10.1.2.3", 80), None),
        (("http", "11.1.2.3", 80), HTTP),
        (("http", "192.168.1.1", 8080), None),
        (("http", "192.168.1.1", 80), HTTP),
        (("http", "fd00::2", 80), None),
        (("http", "fd00::3", 80), None),
        (("http", "fd00::4", 80), HTTP),
        # A host with a port.
        (("http", "busi", 9000), None),
        (("http", "busi", 80), HTTP),
    ],
)
def test_which_calls_go_through_a_proxy(origin: tuple[str, str, int], proxy: Proxy | None) -> None:
    assert ROUTES is not None
    assert ROUTES.route(origin) == proxy


def test_no_proxy_star_and_no_proxy_at_all_mean_direct() -> None:
    assert Proxies.parse("proxy:3128", "proxy:3128", "*") is None
    assert Proxies.parse("", "", "example.com") is None
    only_http = Proxies.parse("proxy:3128")
    assert only_http is not None and only_http.route(("https", "busi.invalid", 443)) is None


# ----------------------------------------------------------------------------- settings


def test_proxy_settings_come_from_gos_environment_names() -> None:
    env = {"HTTP_PROXY": "upper:1", "http_proxy": "lower:2", "https_proxy": "lower:3", "no_proxy": "a.example"}
    settings = Settings.from_env(env)
    assert (settings.http_proxy, settings.https_proxy, settings.no_proxy) == ("upper:1", "lower:3", "a.example")
    # An empty upper-case value does not hide the lower-case one, as in Go; FASTDTM_* wins over both.
    assert Settings.from_env({"HTTP_PROXY": "", "http_proxy": "lower:2"}).http_proxy == "lower:2"
    assert Settings.from_env(env | {"FASTDTM_HTTP_PROXY": "ours:4"}).http_proxy == "ours:4"
    # Worker processes get them through FASTDTM_* variables.
    assert Settings.from_env(settings.to_env()).https_proxy == "lower:3"
    assert Settings.from_env({}).proxies() is None


def test_unusable_proxy_settings_stop_the_start_without_showing_the_password() -> None:
    with pytest.raises(SettingsError, match="Setting https_proxy: only http:// proxies are supported"):
        Settings.from_env({"HTTPS_PROXY": "socks5://proxy:1080"})
    with pytest.raises(SettingsError, match=r"http_proxy: invalid host or port .*u:\*\*\*@") as caught:
        Settings.from_env({"HTTP_PROXY": "http://u:secret@proxy:notaport"})
    assert "secret" not in str(caught.value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("prefix", ["branch", "alert"])
def test_outgoing_tls_files_are_loaded_at_start(pki: Pki, prefix: str) -> None:
    files = {"ca_certs": pki.ca.cert, "certfile": pki.client.cert, "keyfile": pki.client.key}
    settings = Settings.from_env({f"FASTDTM_{prefix.upper()}_{name.upper()}": str(f) for name, f in files.items()})
    assert settings.client_tls(prefix) is not None
    directory = pki.ca.cert.parent
    for given, words in (
        ({"ca_certs": "ca.key"}, "no CA certificate in"),
        ({"ca_certs": "missing.pem"}, f"'{prefix}_ca_certs': cannot read"),
        ({"certfile": "client.pem", "keyfile": "server.key"}, "not a certificate and its key"),
        ({"certfile": "client.csr"}, "not a certificate and its key"),
        ({"keyfile": "client.key"}, "a client key needs its certificate"),
    ):
        with pytest.raises(SettingsError, match=re.escape(words)):
            Settings.from_env({}, **{f"{prefix}_{name}": str(directory / file) for name, file in given.items()})


def test_the_connect_timeout_is_a_positive_setting_with_a_flag() -> None:
    assert Settings.from_env({}).branch_connect_timeout == 2.0
    assert Settings.from_env({"FASTDTM_BRANCH_CONNECT_TIMEOUT": "0.5"}).branch_connect_timeout == 0.5
    with pytest.raises(SettingsError, match="'branch_connect_timeout' must be > 0"):
        Settings.from_env({}, branch_connect_timeout=0)
