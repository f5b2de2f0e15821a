"""Smart Turn v3.2 (pipecat-ai's end-of-turn audio model, BSD-2-Clause) on onnxruntime.

In: the last 8 s of the turn's 16 kHz audio, left-padded with zeros to 8 s,
normalised to zero mean and unit variance, as 80 Whisper log-mel bins x 800
frames (faster-whisper's feature extractor, the same transform the model was
trained on). Out: the probability that the speaker has finished.

One read-only ONNX session is shared by every session of the gateway; runs
go through one worker thread, off the event loop (~40-70 ms each here).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from faster_whisper.feature_extractor import FeatureExtractor

from voxray.paths import models_dir

SAMPLE_RATE = 16_000
WINDOW_S = 8
MODEL_FILE = "smart-turn-v3.2-cpu.onnx"


def default_path() -> Path:
    return models_dir() / "smart-turn" / MODEL_FILE


def _renice(nice: int) -> None:
    if nice:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)  # this thread only


class SmartTurn:
    def __init__(self, path: str | Path = "", threads: int = 1) -> None:
        path = Path(path) if path else default_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `voxray models prepare`")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._features = FeatureExtractor(feature_size=80, sampling_rate=SAMPLE_RATE,
                                          chunk_length=WINDOW_S)
        self._lock = threading.Lock()

    def features(self, pcm16: np.ndarray) -> np.ndarray:
        n = WINDOW_S * SAMPLE_RATE
        x = pcm16[-n:].astype(np.float32) / 32768.0
        x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        return np.asarray(self._features(x, padding=0), np.float32)  # (80, 800)

    def p_finished(self, pcm16: np.ndarray) -> float:
        """The turn's audio so far (16 kHz PCM16, its trailing silence included)."""
        feats = self.features(pcm16)[None]
        with self._lock:
            (out,) = self._session.run(None, {"input_features": feats})
        return float(np.asarray(out).reshape(-1)[0])


class SharedSmartTurn:
    """The model behind one worker thread, for every session's event loop calls.

    `nice`: the thread's niceness. On a box shared with the stage replicas (Ray runs
    them at 15) the verdict should not take the cores from the reply being made.
    """

    def __init__(self, path: str | Path = "", threads: int = 1, nice: int = 0) -> None:
        self.model = SmartTurn(path, threads)
        self.model.p_finished(np.zeros(SAMPLE_RATE, np.int16))  # the first run is slow
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn",
                                        initializer=_renice, initargs=(nice,))

    async def p_finished(self, pcm16: np.ndarray) -> tuple[float, float]:
        """(p, milliseconds of compute)."""
        def run() -> tuple[float, float]:
            t0 = time.perf_counter()
            p = self.model.p_finished(pcm16)
            return p, (time.perf_counter() - t0) * 1000

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
