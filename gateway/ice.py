"""Which host addresses aioice offers as ICE candidates."""

from __future__ import annotations

import aioice.ice


def offer_only(addresses: list[str]) -> None:
    """Offer exactly these addresses (aioice never offers 127.0.0.1 by itself).

    aioice has no per-connection option for it, so this is process-wide; the
    gateway and the `voxray call` client each set it once at start.
    """
    if addresses:
        fixed = list(addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: fixed
