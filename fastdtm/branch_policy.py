"""Where branch calls may go: the deny and allow lists of CIDRs and host names (docs/security.md).

Rules are comma-separated: a CIDR (`10.0.0.0/8`, `fe80::/10`), an address (a /32 or /128), a host name
(exact, case-insensitive, a trailing dot ignored) or a wildcard `*.svc.cluster.local` (any name below it,
not the name itself). A URL is refused when its host or an address it resolves to matches `--branch-deny`,
or, with `--branch-allow` set, when neither its host name nor its address matches the allow list.

Two checks, one set of rules:

- At submit (`url_refusal`), nothing is resolved: a host that is an IP literal is checked as the address
  the resolver would make of it (`2130706433`, `0x7f.1`, `0177.0.0.1`, `::ffff:169.254.169.254`), a host
  name against the name rules (and refused when the allow list has names only and none matches).
- At call time (`address_refusal`, by the branch client), every address the name resolved to, before the
  connection is made to one of those very addresses.

The policy object belongs to one process (built from Settings by the lifespan); it caches its verdicts per
URL, bounded, so that a saga's submit costs a dict lookup per branch URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import Final

from fastdtm.grpc_syntax import GrpcSyntaxError, is_http_url, parse_target
from fastdtm.http_syntax import HttpSyntaxError, parse_url

#: Link-local (the cloud metadata address 169.254.169.254 is in it) and the unspecified addresses.
DEFAULT_DENY: Final = "169.254.0.0/16,fe80::/10,0.0.0.0/32,::/128"
#: Verdicts kept per URL at submit before the cache is emptied and starts again.
MAX_CACHED: Final = 4096

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# A host name label as resolvers take it (underscores appear in service records and container names).
_LABEL: Final = re.compile(r"(?!-)[a-z0-9_-]{1,63}")
_OCTAL: Final = re.compile(r"0[0-7]*")
_DECIMAL: Final = re.compile(r"[1-9][0-9]*")
_HEX: Final = re.compile(r"0x[0-9a-f]*")
# The last label of a name that looks like an attempt at an IPv4 address (all digits, or 0x...).
_NUMERIC: Final = re.compile(r"[0-9]+|0x[0-9a-f]*")


def parse_address(host: str) -> Address | None:
    """The address a host names when it is an IP literal, as the system resolver reads it; None for a name.

    IPv4 in inet_aton's forms: one to four parts, each decimal, octal (leading 0) or hex (0x), the last
    part filling the bytes left (`127.1`, `2130706433`, `0x7f.0.0.1`). IPv6 without brackets, its zone
    (`%eth0`) dropped. A single trailing dot is ignored."""
    if ":" in host:
        try:
            return IPv6Address(host.partition("%")[0])
        except ValueError:
            return None
    return _inet_aton(host.lower().removesuffix("."))


def _inet_aton(host: str) -> IPv4Address | None:
    parts = host.split(".")
    if len(parts) > 4:
        return None
    values = [_number(part) for part in parts]
    if None in values:
        return None
    *head, last = [v for v in values if v is not None]
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = last
    for i, value in enumerate(head):
        number |= value << (8 * (3 - i))
    return IPv4Address(number)


def _number(part: str) -> int | None:
    if _HEX.fullmatch(part):
        return int(part[2:] or "0", 16)
    if _OCTAL.fullmatch(part):
        return int(part, 8)
    if _DECIMAL.fullmatch(part):
        return int(part)
    return None


def _candidates(address: Address) -> tuple[Address, ...]:
    """An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) reaches the IPv4 address: both are checked."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return (address, address.ipv4_mapped)
    return (address,)


def _remember(cache: dict[str, str | None], key: str, verdict: str | None) -> str | None:
    if len(cache) >= MAX_CACHED:
        cache.clear()  # many distinct keys: start again rather than grow without end
    cache[key] = verdict
    return verdict


def _name(host: str) -> str:
    return host.lower().removesuffix(".")


@dataclass(frozen=True, slots=True)
class Rules:
    """One list (`--branch-deny` or `--branch-allow`), parsed."""

    setting: str
    networks: tuple[Network, ...] = ()
    names: frozenset[str] = frozenset()
    #: `*.example.com` is kept as `.example.com`.
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str, setting: str) -> Rules:
        """Raises ValueError naming the first rule that is neither a CIDR, an address nor a host name."""
        networks: list[Network] = []
        names: set[str] = set()
        suffixes: list[str] = []
        for raw in text.split(","):
            rule = raw.strip()
            if not rule:
                continue
            if "/" in rule or ":" in rule:
                networks.append(_network(rule))
            elif (address := parse_address(rule)) is not None:
                networks.append(ip_network(address))
            elif rule.startswith("*."):
                suffixes.append("." + _host_name(rule[2:], rule))
            else:
                names.add(_host_name(rule, rule))
        return cls(setting, tuple(networks), frozenset(names), tuple(suffixes))

    @property
    def empty(self) -> bool:
        return not (self.networks or self.names or self.suffixes)

    def network_of(self, address: Address) -> Network | None:
        for candidate in _candidates(address):
            for network in self.networks:
                if candidate in network:
                    return network
        return None

    def name_rule(self, host: str) -> str | None:
        """The rule `host` matches, as written in the setting (`*.` for a wildcard), or None."""
        name = _name(host)
        if name in self.names:
            return name
        for suffix in self.suffixes:
            if name.endswith(suffix):
                return "*" + suffix
        return None


def _network(rule: str) -> Network:
    try:
        return ip_network(rule.strip("[]"))
    except ValueError as exc:
        raise ValueError(f"{rule!r} is not a valid CIDR: {exc}") from None


def _host_name(name: str, rule: str) -> str:
    try:
        name = _name(name.encode("idna").decode("ascii") if not name.isascii() else name)
    except UnicodeError:
        name = ""
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels) or _NUMERIC.fullmatch(labels[-1]):
        raise ValueError(f"{rule!r} is neither a CIDR, an IP address nor a host name")
    return name


class BranchPolicy:
    """The branch-URL rules of one process, and whether a redirect may leave its origin."""

    def __init__(self, deny: str = DEFAULT_DENY, allow: str = "", *, follow_redirects: bool = False) -> None:
        """Raises ValueError for a rule that is not a CIDR, an address or a host name."""
        self.deny = Rules.parse(deny, "--branch-deny")
        self.allow = Rules.parse(allow, "--branch-allow")
        self.follow_redirects = follow_redirects
        # Submit-time verdicts per URL, and per host for a URL not seen yet (its parse costs ~2 µs, a verdict ~10).
        self._verdicts: dict[str, str | None] = {}
        self._hosts: dict[str, str | None] = {}

    def url_refusal(self, url: str) -> str | None:
        """Why `url` is refused at submit, or None. A URL the client cannot parse is not this check's matter."""
        try:
            return self._verdicts[url]
        except KeyError:
            pass
        try:
            host = parse_url(url).origin[1] if is_http_url(url) else parse_target(url).host
        except (HttpSyntaxError, GrpcSyntaxError):
            return None
        try:
            verdict = self._hosts[host]
        except KeyError:
            verdict = _remember(self._hosts, host, self.host_refusal(host))
        return _remember(self._verdicts, url, verdict)

    def host_refusal(self, host: str) -> str | None:
        """What can be told of a host without resolving it: an IP literal's address, or its name."""
        address = parse_address(host)
        if address is not None:
            return self.address_refusal(host, address)
        rule = self.deny.name_rule(host)
        if rule is not None:
            return f"host '{host}' matches '{rule}' on {self.deny.setting}"
        if not self.allow.empty and not self.allow.networks and self.allow.name_rule(host) is None:
            return f"host '{host}' is not on {self.allow.setting}"
        return None

    def address_refusal(self, host: str, address: Address) -> str | None:
        """Why a connection to `address`, which `host` named or resolved to, is refused, or None."""
        if parse_address(host) is None:
            shown = f"'{host}' resolves to {address}, which"
        else:
            shown = str(address) if _name(host) == str(address) else f"{host} ({address})"
        network = self.deny.network_of(address)
        if network is not None:
            return f"{shown} is in {network} on {self.deny.setting}"
        if self.allow.empty or self.allow.name_rule(host) is not None or self.allow.network_of(address):
            return None
        return f"{shown} is not on {self.allow.setting}"
