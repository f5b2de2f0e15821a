"""Moshi's batched step on this machine: time per 80 ms tick against active slots.

Runs the scheduler's engine (MoshiBatch) directly, no Ray: the tiny random
checkpoint from `voxray models prepare` at 1..N active slots, then the
real-size Mimi codec (random weights, Kyutai's default config) encoding and
decoding one frame per tick, the per-conversation cost that does not shrink
with the tiny LM.

    python -m loadtest.bench_moshi [--slots 1 2 4 8 16] [--ticks 50] [--threads 2] [--json F]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from deployments.moshi.config import MoshiArgs
from deployments.moshi.engine import MoshiBatch
from loadtest.benchutil import pct
from loadtest.harness.stats import write_json

TICK_MS = 80.0



def bench_slots(slots: int, ticks: int) -> dict[str, float]:
    engine = MoshiBatch.from_args(MoshiArgs(dtype="float32", slots=slots, torch_compile=False,
                                            warmup_steps=3))
    rng = np.random.default_rng(0)
    active = np.ones(slots, bool)
    no_reset = np.zeros(slots, bool)
    times = []
    for _ in range(ticks):
        frames = (rng.standard_normal((slots, engine.frame_size)) * 0.1).astype(np.float32)
        times.append(engine.step(frames, active, no_reset).step_ms)
    p50 = pct(times, 50)
    return {"slots": slots, "step_p50_ms": p50, "step_p95_ms": pct(times, 95),
            "per_slot_ms": p50 / slots, "realtime_factor": p50 / TICK_MS}


def bench_real_mimi(ticks: int, batch: int = 1) -> dict[str, float]:
    from moshi.models import loaders

    mimi = loaders.get_mimi(None, device="cpu")
    mimi.streaming_forever(batch)
    x = torch.randn(batch, 1, mimi.frame_size) * 0.1
    enc, dec = [], []
    with torch.no_grad():
        for _ in range(ticks + 3):
            t0 = time.perf_counter()
            codes = mimi.encode(x)
            t1 = time.perf_counter()
            mimi.decode(codes)
            t2 = time.perf_counter()
            enc.append((t1 - t0) * 1000)
            dec.append((t2 - t1) * 1000)
    enc, dec = enc[3:], dec[3:]
    total = [a + b for a, b in zip(enc, dec, strict=True)]
    return {"batch": batch, "encode_p50_ms": pct(enc, 50), "decode_p50_ms": pct(dec, 50),
            "encode_decode_p50_ms": pct(total, 50), "encode_decode_p95_ms": pct(total, 95)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--ticks", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", help="write the results here")
    ns = ap.parse_args()
    torch.set_num_threads(ns.threads)
    tiny = [bench_slots(s, ns.ticks) for s in ns.slots]
    print("tiny Moshi (random), one batched step per 80 ms tick, CPU:")
    print(f"{'slots':>6} {'p50 ms':>8} {'p95 ms':>8} {'ms/slot':>8} {'x tick':>7}")
    for r in tiny:
        print(f"{r['slots']:>6} {r['step_p50_ms']:>8.1f} {r['step_p95_ms']:>8.1f} "
              f"{r['per_slot_ms']:>8.2f} {r['realtime_factor']:>7.2f}")
    mimi = [bench_real_mimi(max(10, ns.ticks // 2), b) for b in (1, 4)]
    print("real-size Mimi (random weights), streaming, per 80 ms frame:")
    for m in mimi:
        print(f"  batch {m['batch']}: encode {m['encode_p50_ms']:.1f} ms + decode "
              f"{m['decode_p50_ms']:.1f} ms = p50 {m['encode_decode_p50_ms']:.1f} / "
              f"p95 {m['encode_decode_p95_ms']:.1f} ms")
    if ns.json:
        write_json(ns.json, {"tiny_step": tiny, "real_mimi": mimi, "threads": ns.threads})
    return 0


if __name__ == "__main__":
    sys.exit(main())
