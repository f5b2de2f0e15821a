"""TTS benchmark through Serve's gRPC proxy with the CPU profile.

Each simulated caller streams an LLM-like answer into SynthesizeStream, one
word every 33 ms (about 30 tokens/s), and records:
  first audio after the first unit's text is complete (the delta that
  completed it is named by the first audio event's reply_to_seq),
  first audio after the first delta,
  real-time factor: the stream's wall time / the audio it produced,
  gaps: how long a listener who started at the first chunk would wait on
  later chunks (underruns).
Run with 1 and 4 concurrent streams. First, the engine alone (no Ray) on
first units of one to three words and a sentence, the floor under every figure
above: wall and CPU time per run, with onnxruntime's threads spinning between
operators and not (`intra_op_spinning`). With --op-profile, also where a run's time
goes, per operator type (onnxruntime's profiler over the same texts).

    python -m loadtest.bench_tts [--rounds 3] [--engine-only] [--op-profile] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

import numpy as np

from loadtest.benchutil import pct
from loadtest.harness.stats import write_json
from voxray.stage_auth import stage_channel
from voxray.v1 import common_pb2, tts_pb2, tts_pb2_grpc

ANSWERS = [
    "Sure. The capital of France is Paris, a city of about two million people.",
    "The weather tomorrow looks sunny, with a high of twenty two degrees and a light breeze.",
    "Okay, I booked a table for two at seven tonight. I will send you a reminder an hour before.",
    "Good question! Light from the sun is scattered by the air, and blue light scatters the most.",
    "Yes, that works. Your flight now leaves on Tuesday at nine fifteen from gate twelve.",
    "Of course. I added eggs, bread and butter to your shopping list for this week.",
    "Hmm, I am not sure. Let me check the schedule and get back to you in a minute.",
    "Right away. The lights in the kitchen and the living room are now off.",
]
WORD_INTERVAL_S = 0.033
# First units of one to three words and a sentence: what the engine alone is timed on.
ENGINE_TEXTS = ("Sure.", "The capital", "Okay, here is", "The weather today is sunny and warm.")


@dataclass
class Result:
    first_unit_to_audio_ms: float
    first_delta_to_audio_ms: float
    audio_s: float
    wall_s: float
    underrun_ms: float


async def one_stream(stub: tts_pb2_grpc.TtsStub, text: str) -> Result:
    words = text.split(" ")
    sent_at: dict[int, float] = {}
    queue: asyncio.Queue[tts_pb2.TtsStreamRequest | None] = asyncio.Queue()
    queue.put_nowait(tts_pb2.TtsStreamRequest(start=tts_pb2.VoiceOptions()))

    async def requests() -> AsyncIterator[tts_pb2.TtsStreamRequest]:
        while (r := await queue.get()) is not None:
            yield r

    async def feed() -> None:
        for i, w in enumerate(words, start=1):
            sent_at[i] = time.monotonic()
            queue.put_nowait(tts_pb2.TtsStreamRequest(meta=common_pb2.Meta(seq=i),
                                                      text=w + " "))
            await asyncio.sleep(WORD_INTERVAL_S)
        queue.put_nowait(None)

    first: tuple[float, int] | None = None
    play_end = 0.0  # when a listener starting at the first chunk would have heard everything
    underrun = 0.0
    samples = 0
    feeder = None
    # The stream is opened ahead of the text, as the gateway does; text starts on `ready`.
    async for ev in stub.SynthesizeStream(requests(), metadata=(("application", "tts"),)):
        if ev.WhichOneof("kind") == "ready":
            feeder = asyncio.create_task(feed())
        if ev.WhichOneof("kind") != "audio":
            continue
        now = time.monotonic()
        if first is None:
            first = (now, ev.meta.reply_to_seq)
            play_end = now
        underrun += max(0.0, now - play_end)
        n = len(ev.audio.audio.pcm16) // 2
        play_end = max(play_end, now) + n / 24000
        samples += n
    assert feeder is not None and first is not None
    await feeder
    return Result((first[0] - sent_at[first[1]]) * 1000, (first[0] - sent_at[1]) * 1000,
                  samples / 24000, time.monotonic() - sent_at[1], underrun * 1000)


async def run(target: str, concurrency: int, rounds: int) -> list[Result]:
    results: list[Result] = []
    async with stage_channel(target) as ch:
        stub = tts_pb2_grpc.TtsStub(ch)
        await one_stream(stub, "Warm up.")
        for r in range(rounds):
            texts = [ANSWERS[(r * concurrency + i) % len(ANSWERS)] for i in range(concurrency)]
            results += await asyncio.gather(*(one_stream(stub, t) for t in texts))
    return results


def summary(results: list[Result]) -> dict[str, float]:
    unit = [r.first_unit_to_audio_ms for r in results]
    delta = [r.first_delta_to_audio_ms for r in results]
    return {"streams": len(results), "first_unit_to_audio_p50_ms": pct(unit, 50),
            "first_unit_to_audio_p95_ms": pct(unit, 95),
            "first_delta_to_audio_p50_ms": pct(delta, 50),
            "rtf_p50": pct([r.wall_s / r.audio_s for r in results], 50),
            "underrun_p50_ms": pct([r.underrun_ms for r in results], 50),
            "underrun_max_ms": max(r.underrun_ms for r in results)}


def bench_engine(spinning: bool = True) -> dict[str, dict[str, float]]:
    """Median wall and CPU time (all the process's threads) per run, per text, and the
    CPU time a second of the speech made cost: what one caller's answer, played as it
    is made, takes of the box."""
    from deployments.tts.config import TtsArgs
    from deployments.tts.engine import KokoroEngine

    engine = KokoroEngine(TtsArgs(intra_op_spinning=spinning))
    engine.warmup()
    out = {}
    for text in ENGINE_TEXTS:
        wall, cpu = [], []
        for _ in range(5):
            t0, c0 = time.perf_counter(), time.process_time()
            audio = engine.synthesize(text, "af_heart", 1.0, "en-us")
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        audio_s, cpu_ms = len(audio) / 24_000, float(np.median(cpu))
        out[text] = {"wall_ms": float(np.median(wall)), "cpu_ms": cpu_ms, "audio_s": audio_s,
                     "cpu_s_per_audio_s": cpu_ms / 1000 / audio_s}
    return out


def op_profile(rounds: int = 3) -> dict[str, float]:
    """Each operator type's share of the time spent in operators, over `rounds` runs of
    each engine-alone text (the CPU profile's session options, threads not spinning)."""
    from deployments.tts.config import TtsArgs
    from deployments.tts.engine import KokoroEngine

    with tempfile.TemporaryDirectory() as folder:
        engine = KokoroEngine(TtsArgs(intra_op_spinning=False), profile_prefix=f"{folder}/kokoro")
        engine.warmup()
        for _ in range(rounds):
            for text in ENGINE_TEXTS:
                engine.synthesize(text, "af_heart", 1.0, "en-us")
        trace = json.loads(engine.end_profiling().read_text())
    per_op: Counter[str] = Counter()
    for event in trace:
        if event.get("cat") == "Node" and "op_name" in event.get("args", {}):
            per_op[event["args"]["op_name"]] += event["dur"]
    total = sum(per_op.values()) or 1
    return {op: us / total for op, us in per_op.most_common()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--engine-only", action="store_true",
                    help="only the engine alone, with onnxruntime's threads spinning and not")
    ap.add_argument("--op-profile", action="store_true",
                    help="also each operator type's share of a run's time")
    ns = ap.parse_args()
    from voxray import runtime

    out: dict[str, object] = {}
    for spinning in (True, False):
        runs = out[f"engine_spinning_{'on' if spinning else 'off'}"] = bench_engine(spinning)
        print(f"engine alone, threads spinning {'on' if spinning else 'off'}, median of 5: "
              + ", ".join(f"{text!r} {t['wall_ms']:.0f} ms ({t['cpu_ms']:.0f} ms CPU, "
                          f"{t['cpu_s_per_audio_s']:.2f} CPU s per s of speech)"
                          for text, t in runs.items()), flush=True)
    if ns.op_profile:
        shares = out["engine_op_shares"] = op_profile()
        print("engine alone, time in operators by type: "
              + ", ".join(f"{op} {share:.0%}" for op, share in list(shares.items())[:8]),
              flush=True)
    if ns.engine_only:
        if ns.json:
            write_json(ns.json, out)
        return 0
    endpoints = runtime.start_local_profile(["tts"])
    try:
        for concurrency in (1, 4):
            rounds = ns.rounds * (2 if concurrency == 1 else 1)
            results = asyncio.run(run(endpoints.grpc, concurrency, rounds))
            s = summary(results)
            out[f"concurrency_{concurrency}"] = {"summary": s,
                                                 "results": [asdict(r) for r in results]}
            print(f"{concurrency} concurrent: first unit complete -> first audio p50 "
                  f"{s['first_unit_to_audio_p50_ms']:.0f} ms, p95 "
                  f"{s['first_unit_to_audio_p95_ms']:.0f} ms; first delta -> audio p50 "
                  f"{s['first_delta_to_audio_p50_ms']:.0f} ms; wall/audio p50 "
                  f"{s['rtf_p50']:.2f}; underrun p50 {s['underrun_p50_ms']:.0f} ms, "
                  f"max {s['underrun_max_ms']:.0f} ms ({s['streams']:.0f} streams)", flush=True)
    finally:
        runtime.stop()
    if ns.json:
        write_json(ns.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
