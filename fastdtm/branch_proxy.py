"""Which proxy, if any, an outgoing HTTP call goes through: Go's rules (net/http's ProxyFromEnvironment).

Go DTM's branch client honours HTTP_PROXY, HTTPS_PROXY and NO_PROXY (each also in lower case, the upper
case one first); a deployment that reaches its services through a proxy must keep working when it moves
to fastdtm. The rules, as golang.org/x/net/http/httpproxy has them:

- an http:// URL goes through HTTP_PROXY, an https:// one through HTTPS_PROXY (never HTTP_PROXY);
- a proxy without a scheme is http://, without a port :80; its `user:password` becomes Proxy-Authorization;
- never proxied: the host `localhost` and loopback addresses, whatever NO_PROXY says;
- NO_PROXY is comma-separated: `*` (no proxy at all), an IP address or a CIDR range, a domain
  (`example.com` matches it and its subdomains, `.example.com` and `*.example.com` its subdomains only),
  each but a CIDR with an optional `:port` that must match too.

Only http:// proxies are supported (Go also takes https:// and socks5://): a URL of another scheme is a
settings error, not a proxy silently ignored. Pure: no I/O; `Settings` reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import NamedTuple

from fastdtm.http_syntax import HttpSyntaxError, Origin, basic_auth, parse_url

Address = IPv4Address | IPv6Address


class Proxy(NamedTuple):
    host: str
    port: int
    #: The Proxy-Authorization header's value, from `user:password` in the proxy URL.
    auth: str | None

    def __str__(self) -> str:  # in error messages: never the credentials
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class _Exempt(NamedTuple):
    """One NO_PROXY entry: a network, an address, or a domain (a leading dot; `exact`: the name itself too)."""

    network: IPv4Network | IPv6Network | None
    domain: str
    exact: bool
    port: int | None

    def covers(self, host: str, address: Address | None, port: int) -> bool:
        if self.network is not None:
            return address is not None and address in self.network and (self.port is None or self.port == port)
        if self.port is not None and self.port != port:
            return False
        return host.endswith(self.domain) or (self.exact and host == self.domain[1:])


def proxy_url(value: str, setting: str) -> Proxy:
    """A proxy URL as Go reads it (`host:port` alone means http://); raises ValueError naming `setting`."""
    url = value.strip()
    if "://" not in url:
        url = "http://" + url
    scheme = url.partition("://")[0].lower()
    if scheme != "http":
        raise ValueError(f"{setting}: only http:// proxies are supported, got {scheme}://")
    try:
        target = parse_url(url)
    except HttpSyntaxError as exc:
        raise ValueError(f"{setting}: {exc}") from None
    if target.path != "/":
        raise ValueError(f"{setting}: a proxy URL is scheme://[user:password@]host[:port], got a path")
    userinfo = url.partition("://")[2].partition("/")[0].rpartition("@")[0]
    return Proxy(target.origin[1], target.origin[2], basic_auth(userinfo))


def _exempt(entry: str) -> _Exempt | None:
    """A NO_PROXY entry (lower-cased, stripped); None for one Go ignores. Raises ValueError for a bad port."""
    if "/" in entry:
        try:
            return _Exempt(ip_network(entry, strict=False), "", False, None)
        except ValueError:
            return None  # Go ignores what is neither a CIDR nor a host: so does this
    host, port = entry, ""
    if entry.startswith("["):
        host, _, tail = entry[1:].partition("]")
        port = tail.removeprefix(":")
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    if not host:
        return None
    number = int(port) if port.isdigit() else None
    if port and number is None:
        raise ValueError(f"no_proxy: {entry!r} has an invalid port")
    try:
        return _Exempt(ip_network(host), "", False, number)
    except ValueError:
        pass
    host = host.removeprefix("*")
    exact = not host.startswith(".")
    return _Exempt(None, host if not exact else "." + host, exact, number)


@dataclass(frozen=True, slots=True)
class Proxies:
    """The proxy rules of one client, fixed when it is built: an origin always takes the same route."""

    http: Proxy | None
    https: Proxy | None
    exempt: tuple[_Exempt, ...]

    @classmethod
    def parse(cls, http_proxy: str = "", https_proxy: str = "", no_proxy: str = "") -> Proxies | None:
        """The rules of these three values (Go's HTTP_PROXY, HTTPS_PROXY, NO_PROXY); None when no call is
        proxied. Raises ValueError, naming the value, for one that cannot be used."""
        http = proxy_url(http_proxy, "http_proxy") if http_proxy.strip() else None
        https = proxy_url(https_proxy, "https_proxy") if https_proxy.strip() else None
        entries = [entry.strip().lower() for entry in no_proxy.split(",") if entry.strip()]
        if (http is None and https is None) or "*" in entries:
            return None
        exempt = tuple(rule for rule in map(_exempt, entries) if rule is not None)
        return cls(http, https, exempt)

    def route(self, origin: Origin) -> Proxy | None:
        """The proxy a call to `origin` goes through, None for a direct connection."""
        scheme, host, port = origin
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or host == "localhost":
            return None
        try:
            address: Address | None = ip_address(host)
        except ValueError:
            address = None
        if address is not None and address.is_loopback:
            return None
        if any(rule.covers(host, address, port) for rule in self.exempt):
            return None
        return proxy
