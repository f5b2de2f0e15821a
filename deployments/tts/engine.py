"""Kokoro-82M on onnxruntime; no Ray here.

kokoro-onnx does the phonemising (espeak-ng from its wheel) and holds the
voices; the ONNX run is ours, so a cancelled request can stop its run
mid-way (onnxruntime's RunOptions.terminate) instead of finishing a sentence
nobody will hear.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from kokoro_onnx import Kokoro
from kokoro_onnx.trim import trim as trim_silence

from deployments.tts.config import TtsArgs
from voxray.paths import models_dir

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
MAX_PHONEMES = 510  # the model's context
WARM_TEXT = ("People pause while they think, and then they go on with what they wanted to say "
             "about the weather, their plans for the weekend, and the food they like to cook. ")


class SynthesisCancelled(Exception):
    pass


class Cancel:
    """Handed to a synthesis; set from any thread to stop its ONNX run."""

    def __init__(self) -> None:
        self._options: ort.RunOptions | None = None
        self.cancelled = False
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            if self._options is not None:
                self._options.terminate = True


class KokoroEngine:
    def __init__(self, args: TtsArgs) -> None:
        self.args = args
        folder = Path(args.model_dir) if args.model_dir else models_dir() / "kokoro-v1.0"
        model, voices = folder / args.model_file, folder / args.voices_file
        for path in (model, voices):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run `voxray models prepare`")
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.intra_op_threads
        so.inter_op_num_threads = 1
        # Each input length has its own memory pattern, kept for the session's life: with
        # units of every length the replica grew by hundreds of MB (measured without it).
        so.enable_mem_pattern = False
        if args.device == "cuda":
            providers: list[str | tuple[str, dict[str, object]]] = [
                ("CUDAExecutionProvider", {"device_id": args.device_index}),
                "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        t0 = time.perf_counter()
        self._session = ort.InferenceSession(str(model), so, providers=providers)
        if args.device == "cuda" and "CUDAExecutionProvider" not in self._session.get_providers():
            raise RuntimeError("device is cuda but onnxruntime has no CUDA provider here")
        self._kokoro = Kokoro.from_session(self._session, str(voices))
        self.voices = frozenset(self._kokoro.voices.files)
        self._input_types = {i.name: i.type for i in self._session.get_inputs()}
        log.info("loaded Kokoro %s in %.2f s", model, time.perf_counter() - t0)

    def warmup(self, longest_chars: int = 0, concurrency: int = 1) -> None:
        """One short synthesis; with `longest_chars`, also the longest unit the replica will
        be given, on `concurrency` threads at once. onnxruntime's CPU arena grows to the
        largest runs it has served together and keeps that memory: taken here, the replica
        holds its working set from the start instead of growing at each new longest reply
        (a 30-minute soak grew in steps of 20-120 MB without it)."""
        self.synthesize("Hello there.", self.args.voice, 1.0, self.args.language)
        if longest_chars <= 0:
            return
        # a fifth longer: text dense in phonemes makes runs that long from that many chars
        chars = longest_chars * 6 // 5
        text = " ".join((WARM_TEXT * (chars // len(WARM_TEXT) + 1))[:chars].split()[:-1]) + "."
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda _: self.synthesize(text, self.args.voice, 1.0,
                                                    self.args.language), range(concurrency)))

    def phonemes(self, text: str, language: str) -> str:
        return " ".join(self._kokoro.tokenizer.phonemize(text, language).split())

    def synthesize(self, text: str, voice: str, speed: float, language: str,
                   cancel: Cancel | None = None) -> np.ndarray:
        """Speak normalised text; float32 mono 24 kHz with edge silence trimmed."""
        if voice not in self.voices:
            raise ValueError(f"unknown voice {voice!r}")
        style_table = self._kokoro.voices[voice]
        out = []
        phonemes = self.phonemes(text, language)
        for batch in _batches(phonemes, MAX_PHONEMES):
            tokens = self._kokoro.tokenizer.tokenize(batch)
            if not tokens:
                continue
            style = style_table[min(len(tokens), len(style_table)) - 1]
            options = ort.RunOptions()
            if cancel is not None:
                with cancel._lock:
                    if cancel.cancelled:
                        raise SynthesisCancelled()
                    cancel._options = options
            try:
                audio = self._session.run(None, {
                    "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                    "style": np.asarray(style, dtype=np.float32),
                    "speed": np.array([speed], dtype=np.float32),
                }, options)[0]
            except Exception as e:  # onnxruntime raises a plain error when terminated
                if cancel is not None and cancel.cancelled:
                    raise SynthesisCancelled() from e
                raise
            trimmed, _ = trim_silence(np.asarray(audio).ravel())
            out.append(trimmed)
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def _batches(phonemes: str, limit: int) -> list[str]:
    """Split at spaces into pieces the model's context holds."""
    batches, current = [], ""
    for word in phonemes.split(" "):
        if current and len(current) + 1 + len(word) > limit:
            batches.append(current)
            current = word[:limit]
        else:
            current = f"{current} {word}" if current else word[:limit]
    if current:
        batches.append(current)
    return batches
