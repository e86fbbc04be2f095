"""TLS for the test suite: this module owns a private CA made by the test (with the `openssl` command), the
server and client certificates it signs (for 127.0.0.1 and localhost), the client contexts that trust it,
a `redis-server` that speaks only TLS (`TlsRedisServer`), started and waited for like `RedisServer`, and a
Redis Cluster reached over TLS (`TlsRedisCluster`)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .redis_servers import HOST, RedisCluster, RedisServer, free_port

#: Every certificate names both ways a test dials a loopback server.
SUBJECT_ALT_NAMES = "IP:127.0.0.1,DNS:localhost"
_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


class OpensslUnavailable(RuntimeError):
    """The `openssl` command is not installed on this machine."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pki:
    """A CA and what it signed: a server certificate, a client certificate."""

    ca: KeyPair
    server: KeyPair
    client: KeyPair

    def client_context(self, *, with_certificate: bool = False) -> ssl.SSLContext:
        """A client context that trusts only this CA, presenting the client certificate if asked."""
        context = ssl.create_default_context(cafile=str(self.ca.cert))
        if with_certificate:
            context.load_cert_chain(self.client.cert, self.client.key)
        return context


def make_pki(directory: Path, name: str = "fastdtm test", alt_names: str = SUBJECT_ALT_NAMES) -> Pki:
    """A new CA in `directory` (valid one day) that signs a server and a client certificate for `alt_names`."""
    if shutil.which("openssl") is None:
        raise OpensslUnavailable("the openssl command is not on PATH (Debian: apt-get install openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ca = KeyPair(directory / "ca.pem", directory / "ca.key")
    _openssl("req", "-x509", *_NEW_KEY, "-keyout", ca.key, "-out", ca.cert, "-days", "1", "-subj", f"/CN={name} CA")
    server = _signed(ca, directory, "server", "serverAuth,clientAuth", alt_names)
    client = _signed(ca, directory, "client", "clientAuth", alt_names)
    return Pki(ca, server, client)


def _signed(ca: KeyPair, directory: Path, name: str, usage: str, alt_names: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    request = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={alt_names}\nextendedKeyUsage={usage}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl("req", "-new", *_NEW_KEY, "-keyout", pair.key, "-out", request, "-subj", f"/CN=fastdtm test {name}")
    signer = ("-CA", ca.cert, "-CAkey", ca.key, "-CAserial", directory / "ca.srl", "-CAcreateserial")
    _openssl("x509", "-req", "-in", request, *signer, "-out", pair.cert, "-days", "1", "-extfile", extensions)
    return pair


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


class TlsRedisServer(RedisServer):
    """A `redis-server` on 127.0.0.1 that listens only on a TLS port, with the server certificate of `pki`.
    `auth_clients`: redis's `tls-auth-clients` (yes: a client must present a certificate the CA signed).
    Its readiness check and `flush` connect over TLS with the client certificate."""

    def __init__(self, pki: Pki, extra_args: Sequence[str] = (), *, auth_clients: str = "no") -> None:
        self.pki = pki
        self._tls_args = [
            *("--tls-cert-file", str(pki.server.cert), "--tls-key-file", str(pki.server.key)),
            *("--tls-ca-cert-file", str(pki.ca.cert), "--tls-auth-clients", auth_clients),
        ]
        super().__init__(extra_args)

    @property
    def url(self) -> str:
        """`rediss://` with the test CA; the client certificate only where a test adds it (`client_url`)."""
        return f"rediss://{HOST}:{self.port}/0?ssl_ca_certs={self.pki.ca.cert}"

    def client_url(self) -> str:
        """`url` with the client certificate and its key, for a server run with `auth_clients="yes"`."""
        return f"{self.url}&ssl_certfile={self.pki.client.cert}&ssl_keyfile={self.pki.client.key}"

    def flush(self) -> None:
        with self._client(HOST, self.port) as client:
            client.flushdb()

    def _listen_args(self, port: int) -> list[str]:
        return ["--port", "0", "--tls-port", str(port), *self._tls_args]

    def _client(self, host: str, port: int) -> redis.Redis:
        return redis.Redis(
            host=host,
            port=port,
            ssl=True,
            ssl_ca_certs=str(self.pki.ca.cert),
            ssl_certfile=str(self.pki.client.cert),
            ssl_keyfile=str(self.pki.client.key),
            ssl_check_hostname=False,  # a test may give the server a certificate that does not name 127.0.0.1
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
        )


class TlsRedisCluster(RedisCluster):
    """A `RedisCluster` whose nodes also listen on a TLS port and talk TLS on the cluster bus (`tls-cluster
    yes`). The suite manages it through the plain ports; `url` reaches it over TLS only: Redis 7 gives a
    client connected over TLS the nodes' TLS ports (CLUSTER SLOTS, MOVED), so the store never sees a plain one.
    The nodes' certificate serves the bus both ways (it is for serverAuth and clientAuth)."""

    def __init__(self, pki: Pki, masters: int = 3) -> None:
        self.pki = pki
        self._tls_ports: dict[int, int] = {}
        super().__init__(masters)

    @property
    def url(self) -> str:
        seeds = ",".join(f"{HOST}:{self._tls_ports[index]}" for index in sorted(self._tls_ports))
        return f"rediss+cluster://{seeds}?ssl_ca_certs={self.pki.ca.cert}"

    def _node_args(self, index: int) -> list[str]:
        self._tls_ports[index] = port = free_port()
        return [
            *("--tls-port", str(port), "--tls-cluster", "yes", "--tls-auth-clients", "no"),
            *("--tls-cert-file", str(self.pki.server.cert), "--tls-key-file", str(self.pki.server.key)),
            *("--tls-ca-cert-file", str(self.pki.ca.cert)),
        ]
