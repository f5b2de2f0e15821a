"""Audio as bytes on the wire: PCM16 little-endian and G.711 (mu-law, A-law), any rate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import av
import numpy as np

Codec = Literal["pcm16", "pcmu", "pcma"]
_AV_CODEC = {"pcmu": "pcm_mulaw", "pcma": "pcm_alaw"}


class BadAudio(ValueError):
    """Bytes that are not audio in the session's input format."""


@dataclass(frozen=True)
class AudioFormat:
    codec: Codec
    rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.codec == "pcm16" else 1


def _frame(pcm: np.ndarray, rate: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(pcm.astype(np.int16).reshape(1, -1), format="s16",
                                       layout="mono")
    frame.sample_rate = rate
    return frame


class Decoder:
    """Bytes in `fmt` -> int16 PCM at `out_rate` (libav's G.711 and resampler; both keep
    state across calls, so feed one stream's pieces in order)."""

    def __init__(self, fmt: AudioFormat, out_rate: int) -> None:
        self._out_rate = out_rate
        self.fmt = fmt
        self._codec: av.AudioCodecContext | None = None
        if fmt.codec in _AV_CODEC:
            self._codec = av.CodecContext.create(_AV_CODEC[fmt.codec], "r")  # type: ignore[assignment]
            self._codec.sample_rate = fmt.rate  # type: ignore[union-attr]
            self._codec.layout = "mono"  # type: ignore[union-attr]
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=out_rate)

    def __call__(self, data: bytes) -> np.ndarray:
        if len(data) % self.fmt.bytes_per_sample:
            raise BadAudio(f"{len(data)} bytes is not a whole number of "
                           f"{self.fmt.codec} samples")
        if self._codec is None:
            pcm = np.frombuffer(data, "<i2")
        else:
            frames = self._codec.decode(av.Packet(data))
            pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]) if frames \
                else np.zeros(0, np.int16)
        if self.fmt.rate == self._out_rate or len(pcm) == 0:
            return pcm.astype(np.int16)
        out = self._resampler.resample(_frame(pcm, self.fmt.rate))
        return (np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.int16)
                if out else np.zeros(0, np.int16))


class Encoder:
    """int16 PCM at `src_rate` -> bytes in `fmt`."""

    def __init__(self, fmt: AudioFormat, src_rate: int) -> None:
        self.fmt = fmt
        self._src = src_rate
        self._codec: av.AudioCodecContext | None = None
        if fmt.codec in _AV_CODEC:
            self._codec = av.CodecContext.create(_AV_CODEC[fmt.codec], "w")  # type: ignore[assignment]
            self._codec.sample_rate = fmt.rate  # type: ignore[union-attr]
            self._codec.layout = "mono"  # type: ignore[union-attr]
            self._codec.format = "s16"  # type: ignore[union-attr]
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=fmt.rate)

    def __call__(self, pcm: np.ndarray) -> bytes:
        if self.fmt.rate != self._src:
            frames = self._resampler.resample(_frame(pcm, self._src))
        else:
            frames = [_frame(pcm, self._src)]
        if self._codec is None:
            return b"".join(f.to_ndarray().astype("<i2").tobytes() for f in frames)
        return b"".join(bytes(p) for f in frames for p in self._codec.encode(f))
