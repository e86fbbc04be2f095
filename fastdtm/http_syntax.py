"""The syntax of what goes on an HTTP/1.1 request line and its headers: absolute http(s) URLs, header
names and values. Pure (no sockets, no event loop), so that the request models check a branch URL or
header at submit by the very rules the branch client (`branch_http`) applies when it sends one.
"""

from __future__ import annotations

import base64
import re
from typing import Final, NamedTuple
from urllib.parse import quote, unquote

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Reserved characters and '%' (already-encoded bytes) stay as they are when a target must be quoted.
_SAFE: Final = "!#$%&'()*+,/:;=?@[]~"
# RFC 9110 §5.6.2: a field name is a token.
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 §5.5: no control character in a field value but HTAB (CR and LF would end the line early).
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

Origin = tuple[str, str, int]
"""(scheme, host, port): what a pool of idle connections is keyed by."""


class HttpSyntaxError(ValueError):
    """A URL or a header that cannot go out in an HTTP/1.1 request."""


class Target(NamedTuple):
    origin: Origin
    #: The Host header: the host, and the port unless it is the scheme's default.
    host: str
    #: Path and query as sent in the request line.
    path: str
    #: `Basic ...` from user:password in the URL, as aiohttp and Go's net/http use it.
    auth: str | None


def parse_url(url: str) -> Target:
    """Splits an absolute http(s) URL by hand: urlsplit plus its properties cost several times more."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise HttpSyntaxError(f"unsupported URL {url!r}: only http:// and https:// are")
    end = rest.find("/")
    if end < 0:
        end = len(rest)
    if "?" in rest[:end] or "#" in rest[:end]:  # "http://h?q": the authority ends early
        end = min(i for i in (rest.find("?"), rest.find("#"), end) if i >= 0)
    authority, path = rest[:end], rest[end:].partition("#")[0]
    userinfo, _, hostport = authority.rpartition("@")
    host, port = _host_port(hostport, DEFAULT_PORTS[scheme], url)
    if not path.startswith("/"):
        path = "/" + path
    if not (path.isascii() and path.isprintable()) or " " in path:
        path = quote(path, safe=_SAFE)
    host_header = f"[{host}]" if ":" in host else host
    if port != DEFAULT_PORTS[scheme]:
        host_header = f"{host_header}:{port}"
    return Target((scheme, host, port), host_header, path, basic_auth(userinfo))


def basic_auth(userinfo: str) -> str | None:
    """`Basic ...` for the `user:password` of a URL (percent-decoded), None for none."""
    return "Basic " + base64.b64encode(unquote(userinfo).encode()).decode() if userinfo else None


def _host_port(hostport: str, default: int, url: str) -> tuple[str, int]:
    if hostport.startswith("["):  # an IPv6 literal
        host, closed, tail = hostport[1:].partition("]")
        if not closed or (tail and not tail.startswith(":")):
            raise HttpSyntaxError(f"invalid IPv6 host in URL {url!r}")
        port = tail.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
    try:
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        number = int(port) if port else default
    except (UnicodeError, ValueError):
        number = -1
    if not host or not host.isprintable() or " " in host or not 0 < number < 65536:
        raise HttpSyntaxError(f"invalid host or port in URL {url!r}")
    return host.lower(), number


def check_header(name: str, value: str) -> None:
    """Raises HttpSyntaxError unless `name: value` can go out as one header line (RFC 9110 §5.1, §5.5).

    The name must be a token; the value may hold any character but a control one, HTAB excepted. A line
    break would smuggle a second request onto a connection we pool; other controls are refused by servers.
    """
    if _TOKEN.fullmatch(name) and (value.isprintable() or not _CONTROL.search(value)):
        return  # isprintable() first: one C call clears the usual value (it refuses a tab, the regex allows it)
    if not _TOKEN.fullmatch(name):
        raise HttpSyntaxError(
            f"header name {name!r} is not a token: one or more letters, digits or !#$%&'*+-.^_`|~ (RFC 9110)"
        )
    bad = _CONTROL.search(value)
    if bad is not None:
        what = "a line break" if bad.group() in "\r\n" else f"the control character {bad.group()!r}"
        raise HttpSyntaxError(f"header {name!r}: its value holds {what} (RFC 9110 allows none but tab)")
