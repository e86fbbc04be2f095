"""Call-time resolution of branch hosts under the branch-URL policy, shared by the HTTP and gRPC clients."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import ip_address
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from fastdtm.branch_policy import BranchPolicy

#: Seconds a host's checked addresses (or its refusal) are kept: as long as an HTTP connection idles.
RESOLVE_TTL: Final = 30.0
#: Hosts whose addresses are kept at once; past it the cache is emptied and starts again.
MAX_RESOLVED: Final = 4096


class CheckedResolver:
    """Call-time resolution under a policy, for the branch clients (HTTP and gRPC): every address a host
    resolves to is checked, and a client connects to one of those very addresses, so a DNS answer cannot
    change between the check and the connect. Addresses (or the refusal) are kept `ttl` seconds per
    (host, port)."""

    def __init__(self, policy: BranchPolicy, ttl: float = RESOLVE_TTL) -> None:
        self.policy = policy
        self._ttl = ttl
        #: (host, port) -> (until, in loop time; the checked addresses; the refusal, "" if none)
        self._resolved: dict[tuple[str, int], tuple[float, tuple[str, ...], str]] = {}

    async def addresses(self, host: str, port: int) -> tuple[tuple[str, ...], str]:
        """The host's addresses in the resolver's order, and why the call is refused ("" if it is not): a name
        that resolves into a denied range is refused whatever else it resolves to. Raises OSError as
        getaddrinfo does."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        cached = self._resolved.get((host, port))
        if cached is None or cached[0] <= now:
            cached = await self._resolve(host, port, now + self._ttl)
        _, addresses, refusal = cached
        return addresses, refusal

    async def _resolve(self, host: str, port: int, until: float) -> tuple[float, tuple[str, ...], str]:
        policy = self.policy
        refusal = policy.host_refusal(host)
        addresses: tuple[str, ...] = ()
        if not refusal:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            # Addresses as strings, in the resolver's order, once each; an IPv6 zone (`%eth0`) kept.
            addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
            for address in addresses:
                refusal = policy.address_refusal(host, ip_address(address.partition("%")[0])) or ""
                if refusal:
                    break
        if len(self._resolved) >= MAX_RESOLVED:
            self._resolved.clear()
        entry = self._resolved[(host, port)] = (until, addresses, refusal or "")
        return entry
