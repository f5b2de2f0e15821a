"""The caller's RTP audio packets put in order and handed on at once, for the VAD and ASR.

aiortc's audio jitter buffer holds 4 packets (80 ms) before it decodes one, for
smooth playout, and it waits for a missing packet until 16 are held: after one
lost packet it hands each packet on 14 packets late, for the rest of the call
(aiortc issue #543). The caller would be heard 280 ms late from then on, and
every answer would come that much later. The gateway plays nothing it receives,
so this buffer holds a packet only while one before it is missing, and gives
the missing one up after `reorder_packets` later packets have come.
"""

from __future__ import annotations

from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

# A packet this far behind the next expected one means the sender started its
# numbering again (aiortc's own bound for a misordered packet).
MAX_BEHIND = 100


class MicJitterBuffer(JitterBuffer):
    """One audio packet in, at most one frame out, in sequence order (what aiortc's
    receiver asks of its buffer). An audio packet is a whole frame (Opus, G.711), so
    a packet in its turn goes out as soon as it arrives."""

    def __init__(self, reorder_packets: int) -> None:
        super().__init__(capacity=16)
        self._reorder = reorder_packets
        self._next: int | None = None  # the sequence number due next
        self._held: dict[int, RtpPacket] = {}
        self.skipped = 0  # packets given up on: lost, or later than reorder_packets allow
        self.late = 0  # packets that came after they were given up on, dropped

    @property
    def held(self) -> int:
        """Packets waiting for one before them: the lag, in 20 ms packets."""
        return len(self._held)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._next is None:
            self._next = seq
        behind = uint16_add(self._next, -seq)
        if 0 < behind < 0x8000:
            if behind < MAX_BEHIND:
                self.late += 1
                return False, None
            self._held.clear()  # the sender's numbering started again
            self._next = seq
        self._held[seq] = packet
        if self._next not in self._held and len(self._held) > self._reorder:
            due = self._next
            nearest = min(self._held, key=lambda s: uint16_add(s, -due))
            self.skipped += uint16_add(nearest, -due)
            self._next = nearest
        ready = self._held.pop(self._next, None)
        if ready is None:
            return False, None
        self._next = uint16_add(self._next, 1)
        data: bytes = getattr(ready, "_data", b"")  # the depayloaded frame aiortc set on it
        return False, JitterFrame(data=data, timestamp=ready.timestamp)


def use_mic_jitter_buffer(receiver: RTCRtpReceiver, reorder_packets: int) -> MicJitterBuffer | None:
    """Put a MicJitterBuffer in an audio receiver in place of aiortc's (which has no
    setting for it); None for a video receiver."""
    attr = "_RTCRtpReceiver__jitter_buffer"
    if getattr(receiver, attr, None) is None or receiver.track.kind != "audio":
        return None
    buffer = MicJitterBuffer(reorder_packets)
    setattr(receiver, attr, buffer)
    return buffer
