"""TLS settings, checked at start-up without any connection: the HTTPS files (both or neither, readable, a key
that matches, a CA), and the `rediss://` query options (known ones only, only on a TLS scheme, files that load),
each refused as a SettingsError that names what is wrong and never shows the store's password."""

from __future__ import annotations

import re
import ssl

import pytest

from fastdtm.cli import _https, main
from fastdtm.config import Settings, SettingsError
from fastdtm.store.redis_client import Cluster, Redis, TlsOptions, connect, parse_url
from tests.support.tls import Pki

# ----------------------------------------------------------------------------- HTTPS serving


def test_https_settings_become_uvicorn_options(pki: Pki) -> None:
    cert, key, ca = str(pki.server.cert), str(pki.server.key), str(pki.ca.cert)
    assert _https(Settings()) == {}
    assert _https(Settings(ssl_certfile=cert, ssl_keyfile=key)) == {"ssl_certfile": cert, "ssl_keyfile": key}
    # A CA means mutual TLS: a client without a certificate it signed gets no connection.
    assert _https(Settings(ssl_certfile=cert, ssl_keyfile=key, ssl_ca_certs=ca)) == {
        "ssl_certfile": cert,
        "ssl_keyfile": key,
        "ssl_ca_certs": ca,
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }


def test_https_settings_round_trip_to_worker_processes(pki: Pki) -> None:
    settings = Settings(ssl_certfile=str(pki.server.cert), ssl_keyfile=str(pki.server.key), ssl_ca_certs="")
    rebuilt = Settings.from_env(settings.to_env())
    assert (rebuilt.ssl_certfile, rebuilt.ssl_keyfile, rebuilt.ssl_ca_certs) == (
        str(pki.server.cert),
        str(pki.server.key),
        "",
    )


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"ssl_certfile": "server.pem"}, "'ssl_certfile' and 'ssl_keyfile' go together"),
        ({"ssl_keyfile": "server.key"}, "'ssl_certfile' and 'ssl_keyfile' go together"),
        ({"ssl_ca_certs": "ca.pem"}, "'ssl_ca_certs' (client certificates) needs HTTPS"),
        ({"ssl_certfile": "server.pem", "ssl_keyfile": "missing.key"}, "'ssl_keyfile': cannot read"),
        (
            {"ssl_certfile": "server.pem", "ssl_keyfile": "server.key", "ssl_ca_certs": "."},
            "'ssl_ca_certs': cannot read",
        ),
        ({"ssl_certfile": "server.pem", "ssl_keyfile": "client.key"}, "not a certificate and its key"),
        ({"ssl_certfile": "server.csr", "ssl_keyfile": "server.key"}, "not a certificate and its key"),
        ({"ssl_certfile": "server.pem", "ssl_keyfile": "server.key", "ssl_ca_certs": "ca.key"}, "no CA certificate"),
    ],
)
def test_unusable_https_files_are_refused(pki: Pki, files: dict[str, str], words: str) -> None:
    directory = pki.ca.cert.parent
    with pytest.raises(SettingsError, match=f"^Settings? .*{re.escape(words)}"):
        Settings.from_env({}, **{name: str(directory / file) for name, file in files.items()})


# ----------------------------------------------------------------------------- rediss:// query options


def test_rediss_options_are_parsed(pki: Pki) -> None:
    ca, cert, key = pki.ca.cert, pki.client.cert, pki.client.key
    url = f"rediss://h:1/0?ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}&ssl_check_hostname=false"
    assert parse_url(url).tls == TlsOptions(
        ca_certs=str(ca), certfile=str(cert), keyfile=str(key), check_hostname=False
    )
    assert parse_url("rediss://h:1").tls == TlsOptions()
    assert parse_url("redis://h:1").tls is None
    # Without a check of the certificate there is no name to check either.
    assert parse_url("rediss://h?ssl_cert_reqs=none").tls == TlsOptions(cert_reqs=ssl.CERT_NONE, check_hostname=False)
    assert parse_url("rediss://h?ssl_cert_reqs=OPTIONAL").tls == TlsOptions(cert_reqs=ssl.CERT_OPTIONAL)


async def test_one_context_per_client_shared_by_its_nodes(pki: Pki) -> None:
    client = connect(f"rediss+cluster://a:1,b:2?ssl_ca_certs={pki.ca.cert}")
    assert isinstance(client, Cluster)
    contexts = {id(node._tls) for node in client._seeds}
    assert len(contexts) == 1 and isinstance(client._seeds[0]._tls, ssl.SSLContext)
    await client.aclose()
    standalone = connect(f"rediss://h:1?ssl_ca_certs={pki.ca.cert}&ssl_cert_reqs=none")
    assert isinstance(standalone, Redis) and standalone.node._tls is not None
    assert standalone.node._tls.verify_mode == ssl.CERT_NONE and not standalone.node._tls.check_hostname
    await standalone.aclose()


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("ssl_ca_cert=ca.pem", r"unknown option 'ssl_ca_cert' in the URL's query \(the options: ssl_ca_certs, "),
        ("ssl_cert_reqs=always", "ssl_cert_reqs=always: not one of required, optional, none"),
        ("ssl_check_hostname=maybe", "ssl_check_hostname=maybe: not true or false"),
        ("ssl_cert_reqs=none&ssl_check_hostname=true", "ssl_check_hostname=true needs the certificate checked"),
        ("ssl_keyfile=client.key", "ssl_keyfile needs ssl_certfile"),
        ("ssl_ca_certs=missing.pem", "ssl_ca_certs=.*missing.pem: cannot read it: No such file or directory"),
        ("ssl_ca_certs=", "the option ssl_ca_certs has no value"),
        ("ssl_ca_certs=ca.pem&ssl_ca_certs=ca.pem", "the option ssl_ca_certs is given twice"),
        ("ssl_ca_certs=ca.key", "ssl_ca_certs=.*ca.key: cannot load it"),
        ("ssl_certfile=client.pem&ssl_keyfile=server.key", "ssl_certfile=.*client.pem: cannot load it with its key"),
    ],
)
def test_unusable_rediss_options_are_setting_errors(pki: Pki, query: str, words: str) -> None:
    directory = pki.ca.cert.parent
    query = "&".join(
        f"{name}={directory / value}" if value.endswith((".pem", ".key")) else f"{name}={value}"
        for name, _, value in (item.partition("=") for item in query.split("&"))
    )
    store = f"rediss+cluster://app:s3cret@h:1,h:2?{query}"
    with pytest.raises(SettingsError, match=f"^Setting 'store': {words}") as caught:
        Settings(store=store)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_tls_options_need_a_tls_scheme(pki: Pki, scheme: str) -> None:
    with pytest.raises(SettingsError, match="the option ssl_ca_certs needs TLS: rediss:// or rediss\\+cluster://"):
        Settings(store=f"{scheme}://:pw@h:1?ssl_ca_certs={pki.ca.cert}")


def test_the_store_url_with_options_is_logged_without_its_password(pki: Pki) -> None:
    store = f"rediss://:s3cret@h:1/0?ssl_ca_certs={pki.ca.cert}"
    assert Settings(store=store).store_shown == f"rediss://:***@h:1/0?ssl_ca_certs={pki.ca.cert}"


def test_serve_refuses_an_unknown_store_option_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--store", "rediss://:s3cret@h:1/0?ssl_verify=no"]) == 2
    error = capsys.readouterr().err
    assert "fastdtm: Setting 'store': unknown option 'ssl_verify' in the URL's query" in error
    assert "s3cret" not in error
