"""The user's inbound WebRTC audio as 16 kHz mono PCM16 chunks for the VAD and ASR."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.vad import CHUNK, SAMPLE_RATE

# A frame larger than this (one second) is not a real-time audio frame.
MAX_FRAME_SAMPLES = 48_000
# Silence put in for a jump in the frames' timestamps is at most this long: more changes
# no turn decision, and a sender that set its clock again may jump by hours.
MAX_GAP_S = 5
# Silence is put in only while the audio handed on is no more than this ahead of the
# time since the first frame came (packets come bunched after a stall).
AHEAD_S = Fraction(1, 2)


@dataclass
class InChunk:
    pcm: np.ndarray  # int16, CHUNK samples
    start_sample: int  # in the session's 16 kHz timeline
    arrived: float  # time.monotonic() when its last sample arrived
    level_db: float  # RMS, dBFS


def level_db(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float32) / 32768.0
    return float(10 * np.log10(np.mean(x * x) + 1e-10))


async def resampled(track: MediaStreamTrack, rate: int,
                    size: int) -> AsyncIterator[tuple[np.ndarray, float]]:
    """Resample with av (any rate/layout in) to mono int16 at `rate`, in pieces of `size`
    samples, each with the time its last sample arrived.

    Time the frames' timestamps skip comes out as silence: a client with Opus DTX sends
    one packet per 400 ms while its user is quiet, and a lost packet leaves 20 ms out.
    Without it, the pause after the user's last word would reach the VAD 20 ms for every
    400 ms, and the turn would end seconds late.
    """
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    pending: np.ndarray = np.zeros(0, np.int16)
    due: Fraction | None = None  # seconds: where the next frame starts if none is missing
    first_at: float | None = None  # when the first frame came
    produced = Fraction(0)  # seconds of audio handed on since then, silence put in too
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame) or frame.samples > MAX_FRAME_SAMPLES:
            continue  # not audio, or absurdly large: skip it rather than stall the session
        arrived = time.monotonic()
        first_at = arrived if first_at is None else first_at
        if frame.pts is not None and frame.time_base is not None:
            start = frame.pts * frame.time_base
            if due is not None and start > due:
                # never more audio than the time that has passed (and a little jitter):
                # timestamps are the client's to choose, the VAD's work must stay real-time
                budget = Fraction(arrived - first_at) + AHEAD_S - produced
                gap = max(min(start - due, Fraction(MAX_GAP_S), budget), Fraction(0))
                pending = np.concatenate([pending, np.zeros(round(gap * rate), np.int16)])
                produced += gap
            due = start + Fraction(frame.samples, frame.sample_rate)
        produced += Fraction(frame.samples, frame.sample_rate)
        for out in resampler.resample(frame):
            pending = np.concatenate([pending, out.to_ndarray().reshape(-1).astype(np.int16)])
        while len(pending) >= size:
            yield pending[:size], arrived
            pending = pending[size:]


async def chunks_16k(track: MediaStreamTrack) -> AsyncIterator[InChunk]:
    """VAD-sized chunks at 16 kHz, placed on the session's timeline."""
    produced = 0
    async for pcm, arrived in resampled(track, SAMPLE_RATE, CHUNK):
        yield InChunk(pcm, produced, arrived, level_db(pcm))
        produced += CHUNK
