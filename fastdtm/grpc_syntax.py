"""The syntax of a gRPC branch call: its URL (`host:port/package.Service/Method`) and the headers that can
be its metadata. Pure (no grpc, no sockets), so that the request models check them at submit by the very
rules the gRPC branch client (`branch_grpc`) applies when it calls.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from ipaddress import IPv6Address
from typing import Final, NamedTuple

_METHOD: Final = re.compile(r"/[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*/[A-Za-z_][A-Za-z0-9_]*")
# A host name or IPv4 literal as gRPC's resolver takes it.
_HOST: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})")
# Metadata keys gRPC accepts (lower case), and values of a text key (printable ASCII).
_KEY: Final = re.compile(r"[0-9a-z_.-]+")
_VALUE: Final = re.compile(r"[\x20-\x7e]*")
#: Keys gRPC reserves for itself (its transport's headers): a branch header may not replace them.
_RESERVED: Final = frozenset({"content-type", "te", "user-agent", "host", "connection"})

Metadata = Sequence[tuple[str, str | bytes]]


class GrpcSyntaxError(ValueError):
    """A gRPC branch URL or a header that cannot be gRPC metadata."""


class GrpcTarget(NamedTuple):
    host: str
    port: int
    #: `/package.Service/Method`
    method: str

    @property
    def authority(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_http_url(url: str) -> bool:
    """DTM's rule: a URL that starts with http:// or https:// is called over HTTP, any other over gRPC."""
    return url[:8].lower().startswith(("http://", "https://"))


def parse_target(url: str) -> GrpcTarget:
    """`host:port/package.Service/Method`, the host a name, an IPv4 or a bracketed IPv6 address."""
    server, slash, method = url.partition("/")
    if not slash or not _METHOD.fullmatch("/" + method):
        raise GrpcSyntaxError(f"not a gRPC branch URL {url[:300]!r}: expected host:port/package.Service/Method")
    if server.startswith("["):
        host, closed, port = server[1:].partition("]:")
        try:
            ok = bool(closed) and bool(IPv6Address(host))
        except ValueError:
            ok = False
    else:
        host, _, port = server.rpartition(":")
        ok = bool(_HOST.fullmatch(host))
    if not ok or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise GrpcSyntaxError(f"invalid host or port in gRPC branch URL {url[:300]!r}")
    return GrpcTarget(host.lower(), int(port), "/" + method)


def check_metadata(name: str, value: str) -> None:
    """Raises GrpcSyntaxError unless `name: value` can be sent as gRPC metadata (a `-bin` key's value is sent
    as its UTF-8 bytes; any other value must be printable ASCII)."""
    key = name.lower()
    if not _KEY.fullmatch(key) or key.startswith("grpc-") or key in _RESERVED:
        raise GrpcSyntaxError(f"header name {name[:100]!r} cannot be gRPC metadata (lower-case letters, digits, _.-)")
    if not key.endswith("-bin") and not _VALUE.fullmatch(value):
        raise GrpcSyntaxError(f"the value of header {name[:100]!r} must be printable ASCII to be gRPC metadata")
