"""Which host addresses aioice offers as ICE candidates."""

from __future__ import annotations

import aioice.ice

_all_interfaces = aioice.ice.get_host_addresses


def offer_only(addresses: list[str]) -> None:
    """Offer exactly these addresses; empty: every interface, loopback included.

    aioice never offers 127.0.0.1 by itself, so a client on the same machine
    (or in a loopback-only network namespace) could not connect. aioice has no
    per-connection option for it, so this is process-wide; the gateway and the
    `voxray call` client each set it once at start.
    """
    if addresses:
        fixed = list(addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: fixed
    else:
        def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            found = _all_interfaces(use_ipv4, use_ipv6)
            return found + ["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else found

        aioice.ice.get_host_addresses = with_loopback
