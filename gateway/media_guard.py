"""Empty datagrams at a call's media port are dropped before they reach the call.

aioice hands every datagram that does not parse as STUN to the DTLS layer, whoever sent
it, and aiortc's DTLS receive loop ends on an empty one (`data[0]`), which ends the call:
one stray packet at a negotiated port hung up on the caller. Neither library has a hook
for this, so the guard wraps aioice's datagram handler. (Other junk is already dropped
further on: DTLS records that do not verify, SRTP that does not authenticate.)
"""

from __future__ import annotations

from typing import Any

from aioice import ice


def install() -> None:
    """Once per process (idempotent)."""
    handler = ice.StunProtocol.datagram_received
    if getattr(handler, "voxray_guard", False):
        return

    def datagram_received(self: ice.StunProtocol, data: bytes | str,
                          addr: tuple[Any, ...]) -> None:
        if data:
            handler(self, data, addr)

    datagram_received.voxray_guard = True  # type: ignore[attr-defined]
    ice.StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]
