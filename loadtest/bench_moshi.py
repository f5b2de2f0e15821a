"""Moshi's batched step: time per 80 ms tick against active slots.

Runs the scheduler's engine (MoshiBatch) directly, no Ray. By default, on this
machine: the tiny random checkpoint from `voxray models prepare` at 1..N active
slots, then the real-size Mimi codec (random weights, Kyutai's default config)
encoding and decoding one frame per tick, the per-conversation cost that does
not shrink with the tiny LM.

    python -m loadtest.bench_moshi [--slots 1 2 4 8 16] [--ticks 50] [--threads 2] [--json F]

With `--size full`: Kyutai's real Moshi 7B and Mimi configurations with random
weights (the same shapes, so the same compute and memory as the checkpoint),
slots doubling from 1 until a step's p95 passes the 80 ms tick, memory runs out
or the time budget is spent, once per variant (CUDA graphs on/off, torch.compile);
it reports step p50/p95 per slot count, memory per slot, and the most slots whose
p95 stays under 80 ms: the conversations one GPU holds in real time.

    python -m loadtest.bench_moshi --size full --device cuda --json F   (scripts/gpu_bench.sh)
    python -m loadtest.bench_moshi --size tiny --device cpu             (the same path, small)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

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


VARIANTS = {"graphs": {"cuda_graphs": True, "torch_compile": False},
            "no-graphs": {"cuda_graphs": False, "torch_compile": False},
            "compile": {"cuda_graphs": True, "torch_compile": True}}


def _memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated() / 2**20
    return float("nan")  # CPU: the process's memory is not the model's alone


def sweep(size: str, device: str, dtype: str, variants: list[str], ticks: int,
          max_slots: int, budget_s: float,
          progress: Callable[[dict[str, Any]], None] = lambda _: None) -> dict[str, Any]:
    """One model, batched at 1, 2, 4 ... slots per variant; stops a variant at the first
    slot count whose p95 is over the tick (or that does not fit), or when the time is up.
    `progress` gets the results so far after each slot count (a run cut short keeps them)."""
    from deployments.moshi.checkpoint import random_models

    started = time.monotonic()
    base_mb = _memory_mb(device)
    models = random_models(size, device, dtype)
    model_mb = _memory_mb(device) - base_mb
    out: dict[str, Any] = {"size": size, "device": device, "dtype": dtype,
                           "model_mb": model_mb, "tick_ms": TICK_MS, "variants": {}}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name()
    for variant in variants:
        rows: list[dict[str, Any]] = []
        slots = 1
        while slots <= max_slots and time.monotonic() - started < budget_s:
            try:
                row = _bench_batch(models, slots, ticks, dtype, VARIANTS[variant], device)
            except torch.OutOfMemoryError:
                rows.append({"slots": slots, "error": "out of memory"})
                break
            finally:
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            state = row.pop("state_mb")
            row["state_mb_per_slot"] = state / slots if device.startswith("cuda") else None
            rows.append(row)
            out["variants"][variant] = {"rows": rows}
            progress(out)
            print(f"  {variant:>9} {slots:>4} slots: step p50 {row['step_p50_ms']:7.1f} ms, "
                  f"p95 {row['step_p95_ms']:7.1f} ms", flush=True)
            if row["step_p95_ms"] > TICK_MS:
                break
            slots *= 2
        fits = [r["slots"] for r in rows if r.get("step_p95_ms", 1e9) <= TICK_MS]
        per_slot = [r["state_mb_per_slot"] for r in rows if r.get("state_mb_per_slot")]
        out["variants"][variant] = {"rows": rows,
                                    "realtime_slots": max(fits, default=0),
                                    "stopped": "time budget" if time.monotonic() - started
                                    >= budget_s else "limit reached"}
        if device.startswith("cuda") and per_slot:  # what memory alone would allow
            free = torch.cuda.get_device_properties(device).total_memory / 2**20 - model_mb
            out["variants"][variant]["memory_slots"] = int(free / per_slot[-1])
        progress(out)
    out["seconds"] = time.monotonic() - started
    return out


def _bench_batch(models: Any, slots: int, ticks: int, dtype: str, variant: dict[str, bool],
                 device: str) -> dict[str, Any]:
    kind, _, index = device.partition(":")
    args = MoshiArgs(slots=slots, dtype=dtype, device="cuda" if kind == "cuda" else "cpu",
                     device_index=int(index or 0), warmup_steps=0, **variant)
    before = _memory_mb(device)
    batch = MoshiBatch(models, args)
    try:
        rng = np.random.default_rng(0)
        active, no_reset = np.ones(slots, bool), np.zeros(slots, bool)
        times = []
        for i in range(ticks + 5):  # the first steps capture graphs / compile
            frames = (rng.standard_normal((slots, batch.frame_size)) * 0.1).astype(np.float32)
            step = batch.step(frames, active, no_reset).step_ms
            if i >= 5:
                times.append(step)
        state_mb = _memory_mb(device) - before
    finally:
        batch.close()
    return {"slots": slots, "step_p50_ms": pct(times, 50), "step_p95_ms": pct(times, 95),
            "step_max_ms": max(times), "state_mb": state_mb}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--ticks", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--size", choices=["full", "tiny"],
                    help="random-weight Moshi of this size, slots doubling (see above)")
    ap.add_argument("--device", default="cuda", help="with --size: cuda, cuda:1, cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--variants", nargs="+", default=["graphs", "no-graphs"],
                    choices=sorted(VARIANTS))
    ap.add_argument("--max-slots", type=int, default=256)
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="with --size: stop starting slot counts after this long")
    ns = ap.parse_args()
    torch.set_num_threads(ns.threads)
    if ns.size:
        print(f"Moshi {ns.size} (random weights) on {ns.device}, {ns.dtype}, "
              f"{ns.ticks} ticks per slot count:", flush=True)
        result = sweep(ns.size, ns.device, ns.dtype, ns.variants, ns.ticks, ns.max_slots,
                       ns.budget_s, (lambda r: write_json(ns.json, r)) if ns.json else
                       (lambda _: None))
        for name, v in result["variants"].items():
            print(f"{name}: {v['realtime_slots']} conversations in real time "
                  f"(p95 step <= {TICK_MS:.0f} ms)")
        if ns.json:
            write_json(ns.json, result)
        return 0
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
