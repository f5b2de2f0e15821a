"""The caller's audio packets on their way to the VAD: in order, at once, no lasting delay
after a lost packet (aiortc's own audio buffer keeps ~14 packets from then on), and the
silence of a client that sends no packets while its user is quiet (Opus DTX)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from gateway.audio_in import InChunk, chunks_16k, resampled
from gateway.mic_jitter import MicJitterBuffer
from gateway.peer import answer_offer
from gateway.vad import CHUNK, SAMPLE_RATE
from voxray.clients.caller import RATE, Caller, SpeakerTrack, drop_rtp
from voxray.ice import offer_only


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(sequence_number=seq % 65536, timestamp=(960 * seq) % 2**32)
    p._data = seq.to_bytes(4, "big")  # type: ignore[attr-defined]
    return p


def feed(buffer: JitterBuffer, seqs: list[int]) -> tuple[list[int], list[int]]:
    """(the packets handed on, by their number; the packets held after each one came)."""
    out, held = [], []
    for seq in seqs:
        _, frame = buffer.add(packet(seq))
        if frame is not None:
            out.append(int.from_bytes(frame.data, "big"))
        held.append(sum(p is not None for p in buffer._packets) if type(buffer) is JitterBuffer
                    else buffer.held)  # type: ignore[attr-defined]
    return out, held


def test_a_lost_packet_is_given_up_without_a_lasting_delay() -> None:
    arrived = list(range(8)) + list(range(9, 60))  # packet 8 lost
    buffer = MicJitterBuffer(reorder_packets=1)
    out, held = feed(buffer, arrived)
    # each in order, the lost one given up once the next two came; from then on one
    # packet (20 ms) waits, as many as the window allows, never more
    assert out == arrived[:-1]
    assert max(held) <= 1 and held[-1] == 1
    assert (buffer.skipped, buffer.late) == (1, 0)
    # aiortc's own buffer (even handing on after 1 packet) is 14 packets behind for good
    _, stock_held = feed(JitterBuffer(capacity=16, prefetch=1), arrived)
    assert min(stock_held[-20:]) >= 10


def test_packets_out_of_order_are_put_back_in_order_within_the_window() -> None:
    arrived = [0, 1, 3, 2, 4, 5, 7, 6, 8]
    buffer = MicJitterBuffer(reorder_packets=1)
    out, held = feed(buffer, arrived)
    assert out == list(range(8))  # 8 waits behind 7, which came after it
    assert max(held) <= 1
    assert (buffer.skipped, buffer.late) == (0, 0)
    # no window: a packet is handed on when it comes, and one that comes after a later
    # one is dropped (and counted)
    buffer = MicJitterBuffer(reorder_packets=0)
    out, held = feed(buffer, arrived)
    assert out == [0, 1, 3, 4, 5, 7, 8]
    assert max(held) == 0
    assert (buffer.skipped, buffer.late) == (2, 2)
    # a wider window waits for more before giving a packet up
    buffer = MicJitterBuffer(reorder_packets=3)
    out, held = feed(buffer, [0, 2, 3, 1, 4, 6, 7, 8, 9, 10])
    assert out == [0, 1, 2, 3, 4, 6, 7]
    assert max(held) <= 3
    assert (buffer.skipped, buffer.late) == (1, 0)


def test_numbering_wraps_and_may_start_again() -> None:
    buffer = MicJitterBuffer(reorder_packets=1)
    out, _ = feed(buffer, [65533, 65534, 65535, 65536, 65537])
    assert out == [65533, 65534, 65535, 65536, 65537]
    # a sender that starts its numbering again (far behind) is followed, not dropped
    out, held = feed(buffer, [40_000, 40_001, 40_002])
    assert out == [40_000, 40_001, 40_002]
    assert held == [0, 0, 0] and buffer.late == 0


TONE = (0.3 * 32767 * np.sin(2 * np.pi * 440 * np.arange(RATE * 2) / RATE)).astype(np.int16)


async def tone_to_the_gateway(drop: Callable[[np.ndarray], bool], stock: bool = False,
                              listen_s: float = 1.0, dtx: bool = False
                              ) -> tuple[float, list[InChunk], Any]:
    """A real caller (aiortc) says a 2 s tone to the gateway's peer, which reads it as the
    gateway does (its jitter buffer, `chunks_16k`); `drop` is asked of each frame's PCM
    before its RTP packet goes. (when the tone's last sample went, the 32 ms chunks the
    VAD would see, the call)"""
    offer_only(["127.0.0.1"])
    caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = SpeakerTrack()
    frames: list[np.ndarray] = []
    make = mic.next_frame

    def next_frame(now: float) -> np.ndarray:
        frames.append(make(now))
        return frames[-1]

    mic.next_frame = next_frame  # type: ignore[method-assign]
    sender = caller.addTrack(mic)
    await caller.setLocalDescription(await caller.createOffer())
    sent = 0

    def drop_packet() -> bool:  # packets go out in the order their frames were made
        nonlocal sent
        sent += 1
        return drop(frames[sent - 1]) if sent <= len(frames) else False

    drop_rtp(sender, drop_packet, renumber=dtx)
    call: Any = SimpleNamespace(connected=False, mic_buffer=None)

    async def on_failed(why: str) -> None:
        pass

    pc, track = await answer_offer(caller.localDescription.sdp, call, SpeakerTrack(), 1,
                                   lambda dc: None, on_failed)
    if stock:  # aiortc's own audio buffer, for comparison
        receiver = next(r for r in pc.getReceivers() if r.track.kind == "audio")
        receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(16, prefetch=4)  # type: ignore[attr-defined]
    chunks: list[InChunk] = []

    async def listen() -> None:
        async for chunk in chunks_16k(track):
            chunks.append(chunk)

    try:
        await caller.setRemoteDescription(RTCSessionDescription(pc.localDescription.sdp,
                                                                "answer"))
        deadline = time.monotonic() + 15
        while not call.connected:
            assert time.monotonic() < deadline, "no connection"
            await asyncio.sleep(0.05)
        reader = asyncio.ensure_future(listen())
        await asyncio.sleep(1.0)
        _, last = mic.say(TONE)
        last_sent = await last
        await asyncio.sleep(listen_s)
        reader.cancel()
        return last_sent, chunks, call
    finally:
        await caller.close()
        await pc.close()


def loud(chunks: list[InChunk]) -> list[InChunk]:
    return [c for c in chunks if c.level_db > -35]


async def silence_lag_after_a_lost_packet(stock: bool) -> float:
    """Seconds from the tone's last sample sent to the last loud chunk the gateway's VAD
    would see, with one RTP packet lost (the 25th, in the second before the tone)."""
    count = 0

    def the_25th(pcm: np.ndarray) -> bool:
        nonlocal count
        count += 1
        return count == 25

    last_sent, chunks, call = await tone_to_the_gateway(the_25th, stock)
    assert count > 25 and loud(chunks), "the tone never reached the gateway"
    if not stock:  # the loss is counted for the call's log line
        assert call.mic_buffer.skipped == 1 and call.mic_buffer.late == 0
    return loud(chunks)[-1].arrived - last_sent


async def test_a_caller_is_heard_at_once_after_a_lost_packet() -> None:
    lag = await silence_lag_after_a_lost_packet(stock=False)
    stock = await silence_lag_after_a_lost_packet(stock=True)
    print(f"the tone's end heard {lag * 1000:.0f} ms after it was sent "
          f"(aiortc's own buffer: {stock * 1000:.0f} ms)")
    assert lag < 0.15
    assert stock > 0.25  # what the lost packet costs with aiortc's buffer: this test sees it


async def test_a_client_that_sends_no_packets_in_silence_is_heard_pausing_in_real_time() -> None:
    """Opus DTX: while the mic is silent, one packet per 400 ms. The silence between
    them reaches the VAD as silence, as long as it lasted."""
    count = 0

    def dtx(pcm: np.ndarray) -> bool:
        nonlocal count
        count += 1
        return int(np.abs(pcm).max(initial=0)) == 0 and count % 20 != 0

    last_sent, chunks, call = await tone_to_the_gateway(dtx, listen_s=1.5, dtx=True)
    heard = [i for i, c in enumerate(chunks) if c.level_db > -35]
    assert heard, "the tone never reached the gateway"
    tone_s = len(heard) * CHUNK / SAMPLE_RATE
    after = chunks[heard[-1] + 1:]
    silence_s = len(after) * CHUNK / SAMPLE_RATE
    print(f"tone {tone_s:.2f} s, then {silence_s:.2f} s of silence in the 1.5 s after it")
    assert 1.8 <= tone_s <= 2.2
    # packets came at most 0.4 s apart: the silence up to the last of them is all there
    assert silence_s >= 1.0
    assert all(c.level_db < -60 for c in after)
    assert call.mic_buffer.skipped == 0  # DTX leaves no packet missing


def test_a_callers_loss_is_a_share_of_its_packets() -> None:
    with pytest.raises(ValueError, match="mic_loss"):
        Caller("http://127.0.0.1:1", mic_loss=1.0)
    with pytest.raises(ValueError, match="one at a time"):
        Caller("http://127.0.0.1:1", mic_loss=0.01, mic_dtx=True)
    caller = Caller("http://127.0.0.1:1", mic_loss=0.1, seed=3)
    dropped = sum(caller._drop_mic_packet() for _ in range(10_000))
    assert 900 < dropped < 1100 and caller.mic_packets_dropped == dropped


def test_a_dtx_caller_sends_one_packet_in_twenty_once_quiet_for_ten() -> None:
    caller = Caller("http://127.0.0.1:1", mic_dtx=True)
    caller.mic.quiet.extend([False] * 5 + [True] * 60 + [False] * 3)
    sent = [not caller._drop_mic_packet() for _ in range(68)]
    assert all(sent[:15])  # speech, then 200 ms of quiet frames as usual
    quiet_sent = [i for i in range(15, 65) if sent[i]]
    assert quiet_sent == [5 + 19, 5 + 39, 5 + 59]  # then every 20th quiet frame
    assert all(sent[65:])  # speech again at once
    assert caller.mic_packets_dropped == 0  # not losses: nothing is missing in DTX


class FramesTrack:
    """A track that gives 20 ms 48 kHz frames: (RTP timestamp, seconds to wait before it)."""

    def __init__(self, frames: list[tuple[int, float]]) -> None:
        self.frames = list(frames)

    async def recv(self) -> av.AudioFrame:
        if not self.frames:
            raise MediaStreamError
        pts, wait = self.frames.pop(0)
        await asyncio.sleep(wait)
        frame = av.AudioFrame.from_ndarray(np.full((1, 960), 1000, np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = 48_000, pts
        frame.time_base = Fraction(1, 48_000)
        return frame


async def heard(frames: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(the 16 kHz audio resampled() hands on, where it is loud)"""
    track: Any = FramesTrack(frames)
    pcm = np.concatenate([p async for p, _ in resampled(track, 16_000, 320)])
    return pcm, np.abs(pcm) > 500


async def test_a_jump_in_timestamps_is_the_silence_that_passed() -> None:
    # 20 ms, 20 ms, then a packet 0.3 s later whose timestamp says so (DTX), then 20 ms
    pcm, loud = await heard([(0, 0), (960, 0), (960 * 16, 0.3), (960 * 17, 0)])
    assert len(pcm) == pytest.approx(16_000 * 0.34, abs=320)
    assert loud[:int(16_000 * 0.035)].all()
    assert not loud[int(16_000 * 0.045):int(16_000 * 0.315)].any()
    assert loud[int(16_000 * 0.325):].all()  # (the last frame's tail is still in the resampler)


async def test_timestamps_that_jump_faster_than_time_add_no_more_than_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose timestamps jump an hour per packet (a clock set again, or made up)
    gets no more silence than the time that passed: the VAD works in real time for it."""
    hour = 48_000 * 3600
    pcm, _ = await heard([(0, 0)] + [(hour * i, 0) for i in range(1, 11)])
    assert len(pcm) / 16_000 <= 11 * 0.02 + 0.5 + 0.1
    # and one long pause is at most MAX_GAP_S of silence (5 s; 0.1 s here)
    monkeypatch.setattr("gateway.audio_in.MAX_GAP_S", 0.1)
    pcm, loud = await heard([(0, 0), (960, 0), (960 * 16, 0.3), (960 * 17, 0)])
    assert len(pcm) == pytest.approx(16_000 * 0.16, abs=320)
