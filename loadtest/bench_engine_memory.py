"""Memory of an engine alone (no Ray) over many calls of every input length.

A replica's RSS must level off once it is warm, however long it serves. Streaming
makes inputs of every length (partial decodes of a growing utterance, units of one
to many words), and native libraries that keep something per input shape grow with
each new one. This drives one engine the way a replica does (its own worker threads)
and prints RSS after each block of calls, then the growth over the second half:

  asr: Whisper decodes of random prefixes of the shipped utterances, in a detected
       or a fixed language (the CPU profile's model and threads);
  tts: Kokoro syntheses of units of one word up to max_unit_chars, on two threads (the
       CPU profile's pool); `--keep-memory` turns the engine's `return_memory` off.

    python -m loadtest.bench_engine_memory --stage asr|tts [--calls 320] [--keep-memory]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil

from loadtest.bench_asr import utterances
from loadtest.harness.stats import write_json

BLOCK = 40
WORDS = ("the quick brown fox jumps over a lazy dog while people talk about weather music "
         "travel food and the best way to learn a language quickly every single day").split()


def asr_call(rng: random.Random) -> tuple[Callable[[], object], int]:
    from deployments.asr.config import AsrArgs
    from deployments.asr.engine import WhisperEngine

    engine = WhisperEngine(AsrArgs(model="base", language="auto", cpu_threads=2,
                                   languages=["en", "es", "fr", "de", "it", "pt"]))
    engine.warmup()
    clips = [pcm.astype(np.float32) / 32768 for _, _, pcm in utterances()]

    def call() -> object:
        clip = rng.choice(clips)
        end = rng.randint(min(8000, len(clip)), len(clip))
        return engine.decode(clip[:end], beam_size=1, language=rng.choice(["", "en"]))

    return call, 1


def tts_call(rng: random.Random, keep_memory: bool) -> tuple[Callable[[], object], int]:
    from deployments.tts.config import TtsArgs
    from deployments.tts.engine import KokoroEngine

    args = TtsArgs(intra_op_threads=1, return_memory=not keep_memory)
    engine = KokoroEngine(args)
    engine.warmup()
    print(f"warm RSS {psutil.Process().memory_info().rss / 2**20:.1f} MB", flush=True)

    def call() -> object:
        # units of one word up to max_unit_chars, as the replica's splitter makes them
        chars = rng.randint(1, args.max_unit_chars)
        words: list[str] = []
        while not words or len(" ".join(words)) < chars:
            words.append(rng.choice(WORDS))
        return engine.synthesize(" ".join(words) + ".", "af_heart", 1.0, "en-us")

    return call, 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("asr", "tts"), required=True)
    ap.add_argument("--calls", type=int, default=320)
    ap.add_argument("--keep-memory", action="store_true",
                    help="tts: onnxruntime keeps its arena's memory between runs")
    ap.add_argument("--json")
    a = ap.parse_args()
    rng = random.Random(0)
    call, threads = asr_call(rng) if a.stage == "asr" else tts_call(rng, a.keep_memory)
    proc = psutil.Process()
    series: list[tuple[int, float, float]] = []  # calls made, RSS MB, seconds
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for done in range(BLOCK, a.calls + BLOCK, BLOCK):
            list(pool.map(lambda _: call(), range(BLOCK)))
            gc.collect()
            series.append((done, proc.memory_info().rss / 2**20, time.perf_counter() - t0))
            print(f"{done:5d} calls  RSS {series[-1][1]:7.1f} MB  {series[-1][2]:6.0f} s",
                  flush=True)
    half = series[len(series) // 2]
    growth = (series[-1][1] - half[1]) / (series[-1][0] - half[0]) * 100
    print(f"{a.stage}: growth over the second half {growth:+.1f} MB per 100 calls; "
          f"{series[-1][2] / series[-1][0] * 1000:.0f} ms per call")
    if a.json:
        write_json(a.json, {"stage": a.stage, "series": series,
                            "growth_mb_per_100_calls": growth})
    return 0


if __name__ == "__main__":
    sys.exit(main())
