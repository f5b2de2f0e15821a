"""Kokoro-82M on onnxruntime; no Ray here.

kokoro-onnx does the phonemising (espeak-ng from its wheel) and holds the
voices; the ONNX run is ours, so a cancelled request can stop its run
mid-way (onnxruntime's RunOptions.terminate) instead of finishing a sentence
nobody will hear.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
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
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


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
    def __init__(self, args: TtsArgs, profile_prefix: str | None = None) -> None:
        """profile_prefix: time every operator of every run (onnxruntime's profiler, for
        benchmarks); `end_profiling` writes the trace to `<profile_prefix>_<time>.json`."""
        self.args = args
        folder = Path(args.model_dir) if args.model_dir else models_dir() / "kokoro-v1.0"
        model, voices = folder / args.model_file, folder / args.voices_file
        for path in (model, voices):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run `voxray models prepare`")
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.intra_op_threads
        so.inter_op_num_threads = 1
        if not args.intra_op_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if profile_prefix is not None:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        # Each input length has its own memory pattern, kept for the session's life: with
        # units of every length the replica grew by hundreds of MB (measured without it).
        so.enable_mem_pattern = False
        # The CPU arena grows to what the largest runs made at once needed, and keeps it:
        # a replica grew by steps of 20-120 MB at each new longest reply. Shrunk after each
        # run, with the blocks it frees mmapped (so that freeing them gives them back), a
        # replica stays at its idle size, at the same time per run (a 30-minute soak; units of
        # every length on two threads, timed with and without it).
        self._run_config = {"memory.enable_memory_arena_shrinkage": "cpu:0"} \
            if args.return_memory else {}
        if args.return_memory:
            _mmap_blocks_over(1 << 20)
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

    def end_profiling(self) -> Path:
        """The operator trace so far (a Chrome trace JSON); profiling stops."""
        return Path(self._session.end_profiling())

    def warmup(self) -> None:
        self.synthesize("Hello there.", self.args.voice, 1.0, self.args.language)

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
            for key, value in self._run_config.items():
                options.add_run_config_entry(key, value)
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


def _mmap_blocks_over(size: int) -> None:
    """Serve allocations of `size` bytes or more with mmap, so freeing one returns it to the
    OS. glibc's own threshold rises to the largest block freed (up to 32 MB), after which
    freed arena regions stay in the heap; a fixed one stops that. No-op off glibc."""
    libc = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(libc), "mallopt", None) if libc else None
    if mallopt is None or not mallopt(M_MMAP_THRESHOLD, size):
        log.info("mallopt is not available: freed memory may stay with the process")


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
