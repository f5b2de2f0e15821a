"""Datagrams from strangers at a call's media port are dropped before they reach the call.

aioice hands every datagram that does not parse as STUN to the DTLS layer, whoever sent
it, and aiortc's DTLS receive loop ends on an empty one (`data[0]`), which ends the call:
one stray packet at a negotiated port hung up on the caller. Neither library has a hook
for this, so the guard wraps aioice's datagram handler: an empty datagram is dropped, and
once a candidate pair is nominated, so is anything but STUN from another address than the
pair's remote one (as browsers do). STUN still reaches aioice, which checks it itself.
"""

from __future__ import annotations

from typing import Any

from aioice import ice

_STUN_FIRST_BYTE_MAX = 3  # RFC 7983: first byte 0-3 is STUN; 20-63 DTLS; 128-191 RTP/RTCP


def _from_the_peer(protocol: ice.StunProtocol, addr: tuple[Any, ...]) -> bool:
    nominated = getattr(protocol.receiver, "_nominated", None)
    if not nominated:
        return True  # before nomination aioice's own checks decide
    return (addr[0], addr[1]) in {pair.remote_addr for pair in nominated.values()}


def install() -> None:
    """Once per process (idempotent)."""
    handler = ice.StunProtocol.datagram_received
    if getattr(handler, "voxray_guard", False):
        return

    def datagram_received(self: ice.StunProtocol, data: bytes | str,
                          addr: tuple[Any, ...]) -> None:
        if not data:
            return
        if isinstance(data, bytes) and data[0] > _STUN_FIRST_BYTE_MAX \
                and not _from_the_peer(self, addr):
            return
        handler(self, data, addr)

    datagram_received.voxray_guard = True  # type: ignore[attr-defined]
    ice.StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]
