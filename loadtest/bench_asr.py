"""ASR benchmark on this machine: model speed, and streaming latency through Serve.

1. Real-time factor of the engine alone (no Ray) on every shipped utterance,
   with the trimmed and the padded (30 s) encoder window, and its WER.
2. Streaming through Serve's gRPC proxy with the CPU profile, one caller at a
   time speaking each utterance in real time (100 ms chunks) with 0.3 s of
   trailing silence, as a VAD would leave, then end of utterance:
   end of utterance -> final (p50/p95), partial lag behind the speech, WER.

    python -m loadtest.bench_asr [--model base] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from loadtest.benchutil import pct
from loadtest.harness.stats import write_json
from voxray.clients.asr_cli import last_voiced_sample, next_event, pump, speak_utterance
from voxray.stage_auth import stage_channel
from voxray.stage_clients.asr import AsrStream
from voxray.wer import word_errors

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"


def utterances() -> list[tuple[str, str, np.ndarray]]:
    out = []
    for line in (DATA / "sentences.txt").read_text().splitlines():
        if not line.strip():
            continue
        key, _, text = line.split("|", 2)
        with wave.open(str(DATA / "speech" / f"{key}.wav")) as w:
            pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        out.append((key, text, pcm))
    return out



def bench_engine(model: str) -> dict[str, dict[str, float]]:
    from deployments.asr.config import AsrArgs
    from deployments.asr.engine import WhisperEngine

    results = {}
    for window in ("trimmed", "padded"):
        engine = WhisperEngine(AsrArgs(model=model, window=window))
        engine.warmup()
        decode_s = audio_s = 0.0
        errors = words = 0
        times = []
        for _, text, pcm in utterances():
            t0 = time.perf_counter()
            hyp = engine.decode(pcm.astype(np.float32) / 32768, beam_size=1)
            times.append(time.perf_counter() - t0)
            decode_s += times[-1]
            audio_s += len(pcm) / 16000
            e, n = word_errors(text, hyp.text)
            errors, words = errors + e, words + n
        results[window] = {"rtf": decode_s / audio_s, "decode_p50_ms": pct(times, 50) * 1000,
                           "wer": errors / words, "utterances": len(times)}
    return results


@dataclass
class Row:
    key: str
    speech_s: float
    eou_ms: float
    final_decode_ms: float
    errors: int
    words: int
    lags_s: list[float]
    final: str


async def bench_streaming(target: str, tail_s: float) -> list[Row]:
    rows = []
    async with stage_channel(target) as channel:
        for key, text, pcm in utterances():
            pcm = pcm[: last_voiced_sample(pcm) + int(tail_s * 16000)]
            async with AsrStream(channel, f"bench-{uuid.uuid4().hex[:6]}") as stream:
                events: asyncio.Queue = asyncio.Queue()
                reader = asyncio.create_task(pump(stream, events))
                await next_event(events, 120)
                res = await speak_utterance(stream, events, pcm, chunk_ms=100)
                reader.cancel()
            e, n = word_errors(text, res.final)
            lags = [p.lag_s for p in res.partials if p.text and p.at_s <= res.audio_s]
            row = Row(key, res.audio_s - tail_s, res.eou_to_final_ms, res.final_decode_ms, e, n,
                      lags, res.final)
            rows.append(row)
            print(f"  {key} speech {row.speech_s:4.2f}s  eou->final {row.eou_ms:5.0f} ms  "
                  f"partials {len(lags):2d}  {res.final}", flush=True)
    return rows


def summarize(rows: list[Row]) -> dict[str, float]:
    short = [r.eou_ms for r in rows if r.speech_s <= 5.0]
    every = [r.eou_ms for r in rows]
    lags = [lag for r in rows for lag in r.lags_s]
    return {
        "utterances": len(rows), "eou_p50_ms": pct(every, 50), "eou_p95_ms": pct(every, 95),
        "short_utterances": len(short), "short_eou_p50_ms": pct(short, 50),
        "short_eou_p95_ms": pct(short, 95), "partial_lag_p50_ms": pct(lags, 50) * 1000,
        "partial_lag_p95_ms": pct(lags, 95) * 1000, "partial_lag_max_ms": max(lags) * 1000,
        "wer": sum(r.errors for r in rows) / sum(r.words for r in rows),
        "reused_finals": sum(r.final_decode_ms == 0 for r in rows),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="base")
    ap.add_argument("--tail", type=float, default=0.3)
    ap.add_argument("--json")
    ns = ap.parse_args()

    print(f"engine alone, Whisper {ns.model}, greedy, 2 threads:")
    engine = bench_engine(ns.model)
    for window, r in engine.items():
        print(f"  {window:8} RTF {r['rtf']:.3f}  decode p50 {r['decode_p50_ms']:.0f} ms  "
              f"WER {r['wer']:.3f}  ({r['utterances']} utterances)")

    from voxray import runtime

    endpoints = runtime.start_local_profile(
        ["asr"], [{"applications": {"asr": {"args": {"model": ns.model}}}}])
    try:
        print("streaming through the Serve gRPC proxy (real time, 100 ms chunks):")
        rows = asyncio.run(bench_streaming(endpoints.grpc, ns.tail))
    finally:
        runtime.stop()
    m = summarize(rows)
    print(f"end of utterance -> final: speech <= 5 s ({m['short_utterances']}): p50 "
          f"{m['short_eou_p50_ms']:.0f} ms, p95 {m['short_eou_p95_ms']:.0f} ms; all "
          f"{m['utterances']}: p50 {m['eou_p50_ms']:.0f} ms, p95 {m['eou_p95_ms']:.0f} ms")
    print(f"finals answered from the pause decode: {m['reused_finals']}/{m['utterances']}")
    print(f"partial lag behind the speech: p50 {m['partial_lag_p50_ms']:.0f} ms, p95 "
          f"{m['partial_lag_p95_ms']:.0f} ms, max {m['partial_lag_max_ms']:.0f} ms; "
          f"streaming WER {m['wer']:.3f}")
    if ns.json:
        write_json(ns.json, {"engine": engine, "streaming": m,
                             "rows": [asdict(r) for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
