"""The user's inbound WebRTC audio as 16 kHz mono PCM16 chunks for the VAD and ASR."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.vad import CHUNK, SAMPLE_RATE

# A frame larger than this (one second) is not a real-time audio frame.
MAX_FRAME_SAMPLES = 48_000


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
    samples, each with the time its last sample arrived."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    pending: np.ndarray = np.zeros(0, np.int16)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, av.AudioFrame) or frame.samples > MAX_FRAME_SAMPLES:
            continue  # not audio, or absurdly large: skip it rather than stall the session
        arrived = time.monotonic()
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
