"""Moshi's batch engine and duplex scheduler on the tiny random checkpoint, without Ray."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from deployments.moshi.checkpoint import checkpoint_info, make_tiny_checkpoint
from deployments.moshi.config import MoshiArgs
from deployments.moshi.engine import MoshiBatch
from deployments.moshi.scheduler import DuplexScheduler, NoFreeSlot, TickOutput, TickStats
from voxray import REPO_ROOT

FRAME = 1920


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("moshi") / "moshi-tiny")


def batch(tiny: Path, slots: int = 2, **kw: object) -> MoshiBatch:
    args = MoshiArgs(model=str(tiny), dtype="float32", slots=slots, greedy=True,
                     torch_compile=False, warmup_steps=0, **kw)  # type: ignore[arg-type]
    return MoshiBatch.from_args(args)


def speech(seed: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((frames, FRAME)) * 0.1).astype(np.float32)


def run_slot(engine: MoshiBatch, slot: int, audio: np.ndarray, *, reset_first: bool = True,
             others: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step `audio` through `slot` (and `others` in theirs); that slot's output audio and text."""
    pcm, text = [], []
    for i, frame in enumerate(audio):
        frames = np.zeros((engine.slots, FRAME), np.float32)
        active = np.zeros(engine.slots, bool)
        frames[slot], active[slot] = frame, True
        for other, their in (others or {}).items():
            frames[other], active[other] = their[i], True
        reset = np.zeros(engine.slots, bool)
        reset[slot] = reset_first and i == 0
        out = engine.step(frames, active, reset)
        pcm.append(out.pcm[slot].copy())
        text.append(out.text_tokens[slot])
    return np.stack(pcm), np.array(text)


def test_tiny_checkpoint_loads_through_the_checkpoint_path(tiny: Path) -> None:
    info = checkpoint_info(str(tiny))
    assert info.moshi_weights == tiny / "model.safetensors"
    assert info.mimi_config is not None and info.lm_config is not None
    engine = batch(tiny)
    assert engine.frame_size == FRAME
    out = engine.step(np.zeros((2, FRAME), np.float32), np.array([True, False]), np.zeros(2, bool))
    assert out.pcm.shape == (2, FRAME) and out.text_tokens.shape == (2,)
    assert out.text_tokens[1] == -1  # an idle slot produces nothing
    pieces = [engine.text_piece(t) for t in range(48)]
    assert engine.text_piece(1) == engine.text_piece(2) == engine.text_piece(3) == ""  # <s> </s>
    assert "<" not in "".join(pieces) and sum(bool(p) for p in pieces) > 40


def test_reused_slot_does_not_hear_the_previous_conversation(tiny: Path) -> None:
    a, b = speech(1, 12), speech(2, 12)
    fresh_pcm, fresh_text = run_slot(batch(tiny), 0, b)
    # The acoustic delay, then output.
    assert (fresh_text[:1] == -1).all() and (fresh_text[-5:] >= 0).all()
    assert np.abs(fresh_pcm[-5:]).max() > 0

    engine = batch(tiny)
    run_slot(engine, 0, a)
    reused_pcm, reused_text = run_slot(engine, 0, b)
    np.testing.assert_array_equal(reused_text, fresh_text)
    np.testing.assert_allclose(reused_pcm, fresh_pcm, atol=1e-5)

    # The check can fail: without the per-slot reset, b continues a's state.
    engine = batch(tiny)
    run_slot(engine, 0, a)
    stale_pcm, _ = run_slot(engine, 0, b, reset_first=False)
    assert np.abs(stale_pcm - fresh_pcm).max() > 1e-3


def test_slots_are_independent(tiny: Path) -> None:
    b, c = speech(2, 10), speech(3, 10)
    alone_pcm, alone_text = run_slot(batch(tiny, slots=3), 0, b)
    engine = batch(tiny, slots=3)
    run_slot(engine, 2, speech(4, 5))  # slot 2 busy earlier, slot 1 busy alongside
    together_pcm, together_text = run_slot(engine, 0, b, others={1: c})
    np.testing.assert_array_equal(together_text, alone_text)
    np.testing.assert_allclose(together_pcm, alone_pcm, atol=1e-4)


async def test_scheduler_refuses_when_full_and_frees_slots(tiny: Path) -> None:
    sched = DuplexScheduler(batch(tiny, slots=2), max_buffered_frames=3)
    try:
        first, second = sched.open(), sched.open()
        assert {first.slot, second.slot} == {0, 1}
        with pytest.raises(NoFreeSlot, match="all 2 duplex slots"):
            sched.open()
        sched.close(first)
        assert sched.open().slot == first.slot
    finally:
        await sched.aclose()


async def test_late_stream_does_not_stall_the_others(tiny: Path) -> None:
    ticks: list[TickStats] = []
    sched = DuplexScheduler(batch(tiny, slots=2), max_buffered_frames=3, on_tick=ticks.append)
    steady, late = sched.open(), sched.open()
    frames = speech(5, 40)

    async def until(check: Callable[[], bool], within_s: float = 60.0) -> None:
        deadline = time.monotonic() + within_s
        while not check():
            assert time.monotonic() < deadline, "the scheduler stopped ticking"
            await asyncio.sleep(0.02)

    try:
        stop = asyncio.Event()

        async def feed_steady() -> None:
            # one frame per tick, as a caller sends them, however slow the ticks run
            i = 0
            while not stop.is_set() and i < len(frames):
                if steady.ticks >= i - 2:
                    steady.offer(i, frames[i])
                    i += 1
                await asyncio.sleep(0.01)

        feeder = asyncio.create_task(feed_steady())
        late.offer(0, frames[0])
        # The late stream goes silent: the scheduler steps it with silence and keeps the
        # steady one going, tick after tick, instead of waiting for the late frame.
        await until(lambda: late.late_frames >= 10)
        during_stall = steady.outbox.qsize()
        for i in range(1, 11):  # ...then its frames come in a burst
            late.offer(i, frames[i])
        await until(lambda: late.outbox.qsize() > 0 and _last(late.outbox).input_frame_index == 10)
        stop.set()
        await feeder
        outs = [steady.outbox.get_nowait() for _ in range(steady.outbox.qsize())]
        assert during_stall >= 8  # a stalled scheduler would give none
        assert [o.tick for o in outs] == list(range(len(outs)))
        used = [o.input_frame_index for o in outs if o.input_frame_index >= 0]
        assert used == sorted(used) and len(used) >= len(outs) // 2
        late_outs = [late.outbox.get_nowait() for _ in range(late.outbox.qsize())]
        assert late_outs[-1].late_frames >= 10
        assert sum(o.input_frame_index == -1 for o in late_outs) >= 10
        assert late_outs[-1].dropped_frames == 10 - 3  # the burst beyond the buffer
        assert [o.input_frame_index for o in late_outs if o.input_frame_index > 0] == [8, 9, 10]
        assert max(t.active for t in ticks) == 2
    finally:
        await sched.aclose()


def _last(queue: asyncio.Queue[TickOutput]) -> TickOutput:
    return queue._queue[-1]  # type: ignore[attr-defined]


def test_the_gpu_bench_script_runs_its_path_on_cpu(tmp_path: Path) -> None:
    """scripts/gpu_bench.sh as a GPU run calls it, with the tiny shapes on this CPU: the
    full-size path (random weights, slots doubling, variants, JSON) cannot rot unseen."""
    env = {**os.environ, "PYTHON": sys.executable, "BENCH_SIZE": "tiny", "BENCH_DEVICE": "cpu",
           "BENCH_TICKS": "4", "BENCH_MAX_SLOTS": "2", "BENCH_VARIANTS": "graphs no-graphs",
           "BENCH_SITE": str(tmp_path / "site")}
    run = subprocess.run(["scripts/gpu_bench.sh", str(tmp_path / "out")], cwd=REPO_ROOT,
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "moshi_tiny.json").read_text())
    assert result["size"] == "tiny" and set(result["variants"]) == {"graphs", "no-graphs"}
    for variant in result["variants"].values():
        rows = variant["rows"]
        # slots double until a step misses the 80 ms tick or the limit (2) is reached; a
        # slow box misses it with one slot already
        assert [r["slots"] for r in rows] == [1, 2][:len(rows)] and rows
        assert all(0 < r["step_p50_ms"] <= r["step_p95_ms"] for r in rows)
        assert len(rows) == 2 or rows[-1]["step_p95_ms"] > result["tick_ms"], rows
        assert variant["realtime_slots"] == max(
            [r["slots"] for r in rows if r["step_p95_ms"] <= result["tick_ms"]], default=0)
    assert "conversations in real time" in (tmp_path / "out" / "bench.log").read_text()
