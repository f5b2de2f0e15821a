"""End-to-end turn latency through WebRTC with the CPU defaults (the headline TTFAT).

Starts the CPU profile (ASR, LLM, TTS) and the gateway (or uses a running one with
--url), then one aiortc caller speaks one turn at a time, waiting for each reply to
end. Utterances come from the turn set (tests/data/turns):

* complete: short finished questions in several voices; TTFAT as the caller hears it
  (last voiced sample sent -> first audible reply sample received) and as the
  gateway measures it, each stage, and how the speculative reply fared;
* paused: sentences with 0.4-1.2 s pauses between their phrases; TTFAT from the end
  of the last phrase, and every time the agent was audible before it (a cut-in).

With --cpu-profile, a sampler process reads every thread's CPU time from /proc through
the run, and each turn's window (the end of the user's speech -> the first audible reply
sample, as the caller hears them) is split by process and thread: where the two cores
went while the caller waited; the answer's window (first -> last audible sample) likewise,
where underruns are made. Run it against `voxray up` (--url) to see the gateway apart
from the caller; in its own gateway mode both are the one "caller" process.

Each reply's first unit is then made again by the Kokoro engine alone (nothing else
running), the in-call TTS first audio's yardstick.

Also: silences inside each answer (underruns: a unit not ready when the one before it
ended), the turn model's time per decision, speculative work thrown away per turn, and
barge-in stop latency (the caller speaks over a long answer).

    python -m loadtest.bench_call [--set complete|paused|both] [--turns 24]
        [--barge-ins 5] [--url http://127.0.0.1:8080] [--profile overlay.yaml]
        [--cpu-profile] [--mic-loss 0.01] [--mic-dtx] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from aiohttp import web

from gateway.config import local_gateway_config
from gateway.server import Gateway
from loadtest import cpu_sampler
from loadtest.benchutil import pct
from loadtest.harness.stats import write_json
from loadtest.turnset import TurnSample, samples
from voxray import runtime
from voxray.clients.caller import RATE, Caller, let_agent_talk, load_48k
from voxray.config import merge
from voxray.ice import offer_only

AUDIBLE = 328
CORES = float(len(os.sched_getaffinity(0)))
UNDERRUN_GAP_MS = 600  # as the load harness counts them (Kokoro's own pauses are shorter)
STAGES = ("end_of_turn_ms", "asr_final_ms", "reply_started_at_ms", "llm_first_token_ms",
          "tts_first_audio_ms", "held_ms", "playout_ms", "ttfat_ms")


def audible(caller: Caller, since: float, until: float) -> list[float]:
    return caller.heard.audible_between(since, until)


async def quiet(caller: Caller, for_s: float = 1.0, within_s: float = 90.0) -> None:
    """Until the agent has been silent for `for_s`."""
    deadline = time.monotonic() + within_s
    while caller.heard.last_audible() > time.monotonic() - for_s:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def settled(caller: Caller, for_s: float = 1.5, within_s: float = 90.0) -> None:
    """Until the agent is silent and no event has come for `for_s`: a turn split by a
    cut-in has its rest answered after the turn itself, and the next turn must not take
    that answer for its own."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        await quiet(caller, within_s=max(0.0, deadline - time.monotonic()))
        n = len(caller.events)
        await asyncio.sleep(for_s)
        if len(caller.events) == n and caller.heard.last_audible() < time.monotonic() - for_s:
            return


async def one_turn(caller: Caller, sample: TurnSample) -> dict[str, Any] | None:
    """Say one sample and listen to the reply; None if no reply came."""
    pcm = load_48k(sample.path)
    n = len(caller.events)
    first, last = caller.mic.say(pcm)
    began = await first - float(np.argmax(np.abs(pcm) > AUDIBLE)) / RATE
    await last
    spoke_until = began + sample.last_voiced_s
    try:
        metrics = await caller.wait_event("turn_metrics", 60, since=n)
        await caller.wait_event(("agent_done", "interrupted", "error"), 90, since=n)
    except TimeoutError:
        return None
    await asyncio.sleep(0.3)  # the last frames through the jitter buffer
    heard = audible(caller, spoke_until, time.monotonic())
    gaps = [(b - a) * 1000 - 20 for a, b in zip(heard, heard[1:], strict=False)]
    # where each underrun fell: ms into the answer (from its first audible frame), length
    holes = [[round((a - heard[0]) * 1000), round(g)]
             for a, g in zip(heard, gaps, strict=False) if g > UNDERRUN_GAP_MS]
    new = caller.events[n:]
    judged = [e for e in new if e["type"] == "pause_judged"]
    return {
        "id": sample.id, "set": sample.set, "voice": sample.voice,
        "client_ttfat_ms": (heard[0] - spoke_until) * 1000 if heard else None,
        "waited": [spoke_until, heard[0]] if heard else None,  # time.monotonic()
        "answered": [heard[0], heard[-1]] if heard else None,  # the answer playing
        # its first 1.5 s: the first unit plays while the second is made
        "opening": [heard[0], min(heard[-1], heard[0] + 1.5)] if heard else None,
        "cut_ins": len(audible(caller, began, spoke_until)),
        "gateway": {k: metrics[k] for k in STAGES},
        "speculation": metrics["speculation"], "joined": metrics["joined"],
        "wasted_llm_tokens": metrics["wasted_llm_tokens"],
        "wasted_tts_s": metrics["wasted_tts_s"],
        "decisions": [{"model_ms": e["model_ms"], "words_ms": e["words_ms"],
                       "p_finished": e["p_finished"], "wait_ms": e["wait_ms"]}
                      for e in judged],
        "finals": [e["text"] for e in new if e["type"] == "final"],
        "reply": "".join(e["text"] for e in new
                         if e["type"] == "agent_text" and e.get("turn") == metrics["turn"]),
        # silence inside the answer: a unit not ready when the one before it ended
        "longest_gap_ms": max(gaps, default=0.0),
        "underruns": len(holes),
        "holes": holes,
    }


async def barge_in(caller: Caller) -> tuple[float, float] | None:
    """(gateway's stop ms, last agent audio heard after the caller began to speak, ms)."""
    await let_agent_talk(caller, load_48k("tests/data/speech/s18.wav"), 1.5)
    n = len(caller.events)
    spoke, _ = caller.mic.say(load_48k("tests/data/speech/s25.wav"))
    spoke_at = await spoke
    try:
        interrupted = await caller.wait_event("interrupted", 15, since=n)
    except TimeoutError:
        await caller.wait_event("agent_done", 60, since=n)
        return None
    paused = [e for e in caller.events[n:] if e["type"] == "agent_paused"]
    if not paused:
        return None  # the agent had finished already
    # only the old answer's tail counts: the reply to the interruption comes later
    heard = audible(caller, spoke_at, interrupted["received_at"] + 0.3)
    await caller.wait_event("agent_done", 60, since=n)  # the reply to the interruption
    await quiet(caller)
    return paused[0]["detail"]["stop_ms"], (max(heard, default=spoke_at) - spoke_at) * 1000


def summary(turns: list[dict[str, Any]]) -> dict[str, Any]:
    client = [t["client_ttfat_ms"] for t in turns if t["client_ttfat_ms"] is not None]
    decisions = [d for t in turns for d in t["decisions"]]
    return {
        "turns": len(turns),
        "client_ttfat_ms": {"p50": pct(client, 50), "p95": pct(client, 95),
                            "max": max(client, default=float("nan"))},
        "gateway_ms": {k: {"p50": pct([t["gateway"][k] for t in turns], 50),
                           "p95": pct([t["gateway"][k] for t in turns], 95)} for k in STAGES},
        "cut_in_turns": sum(1 for t in turns if t["cut_ins"]),
        "speculation": {k: sum(t["speculation"] == k for t in turns)
                        for k in ("hit", "miss", "none")},
        "wasted_per_turn": {
            "llm_tokens": float(np.mean([t["wasted_llm_tokens"] for t in turns]))
            if turns else float("nan"),
            "tts_audio_s": float(np.mean([t["wasted_tts_s"] for t in turns]))
            if turns else float("nan")},
        "underruns_per_turn": float(np.mean([t["underruns"] for t in turns]))
        if turns else float("nan"),
        # after the first unit (a cached opener plays ~0.5 s) or later in the answer
        "underruns_within_1s_per_turn": float(np.mean(
            [sum(at < 1000 for at, _ in t["holes"]) for t in turns])) if turns else float("nan"),
        "longest_gap_ms": {"p50": pct([t["longest_gap_ms"] for t in turns], 50),
                           "max": max((t["longest_gap_ms"] for t in turns), default=0.0)},
        "turn_model_ms": {"p50": pct([d["model_ms"] for d in decisions], 50),
                          "p95": pct([d["model_ms"] for d in decisions], 95),
                          "decisions": len(decisions)},
        "pause_words_ms": {"p50": pct([d["words_ms"] for d in decisions
                                       if d["words_ms"] >= 0], 50),
                           "missing": sum(d["words_ms"] < 0 for d in decisions)},
    }


async def run(url: str, which: str, turns: int, barge_ins: int,
              mic_loss: float = 0.0, mic_dtx: bool = False) -> dict[str, Any]:
    chosen = samples() if which == "both" else samples(which)
    caller = Caller(url, mic_loss=mic_loss, mic_dtx=mic_dtx)
    await caller.connect()
    results: list[dict[str, Any]] = []
    stops: list[tuple[float, float]] = []
    try:
        for i in range(turns):
            sample = chosen[i % len(chosen)]
            r = await one_turn(caller, sample)
            if r is None:
                print(f"turn {i + 1} ({sample.id}): no reply", flush=True)
                continue
            results.append(r)
            g = r["gateway"]
            client = r["client_ttfat_ms"]
            print(f"turn {i + 1} ({sample.id}, {sample.set}): TTFAT caller "
                  f"{client:.0f} ms" if client is not None else "no audio", "| gateway "
                  + ", ".join(f"{k[:-3]} {g[k]:.0f}" for k in reversed(STAGES))
                  + f" | {r['speculation']} | longest gap {r['longest_gap_ms']:.0f} ms"
                  + (" | CUT IN" if r["cut_ins"] else ""),
                  flush=True)
            await settled(caller)
        for _ in range(barge_ins):
            got = await barge_in(caller)
            if got is not None:
                stops.append(got)
                print(f"barge-in: paused after {got[0]:.0f} ms at the gateway, last agent "
                      f"audio heard {got[1]:.0f} ms after the caller began", flush=True)
    finally:
        await caller.hang_up()
    report: dict[str, Any] = {
        "sets": {kind: summary([r for r in results if r["set"] == kind])
                 for kind in ("complete", "paused") if any(r["set"] == kind for r in results)},
        "barge_in": {
            "n": len(stops),
            "gateway_stop_ms": {"p50": pct([s for s, _ in stops], 50),
                                "p95": pct([s for s, _ in stops], 95)},
            "caller_heard_stop_ms": {"p50": pct([h for _, h in stops], 50),
                                     "p95": pct([h for _, h in stops], 95)}},
        "mic_packets_dropped": caller.mic_packets_dropped,
        "turns": results,
    }
    return report


async def with_own_gateway(grpc_target: str, which: str, turns: int, barge_ins: int,
                           gateway: dict[str, Any] | None = None,
                           mic_loss: float = 0.0, mic_dtx: bool = False) -> dict[str, Any]:
    cfg = local_gateway_config(**(gateway or {}))
    runner = web.AppRunner(Gateway(cfg, grpc_target).app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cfg.port).start()
    try:
        return await run(f"http://127.0.0.1:{cfg.port}", which, turns, barge_ins, mic_loss,
                         mic_dtx)
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def cpu_samples(on: bool) -> Iterator[list[dict[str, Any]]]:
    """The sampler's samples, filled in when the block ends (empty when off)."""
    got: list[dict[str, Any]] = []
    if not on:
        yield got
        return
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
        proc = subprocess.Popen([sys.executable, "-m", "loadtest.cpu_sampler",
                                 "--out", out.name, "--interval", "0.1"])
        try:
            yield got
        finally:
            proc.terminate()
            proc.wait(10)
            got.extend(cpu_sampler.load(out.name))


def cpu_profile(turns: list[dict[str, Any]], samples: list[dict[str, Any]],
                window: str = "waited") -> dict[str, Any]:
    """Per turn, the cores each process held in one window of it (`waited`: while the caller
    waited for the first audio; `answered`: while the answer played, where underruns are
    made; `opening`: its first 1.5 s, while the unit after the first is made); the busiest
    threads."""
    per_process: dict[str, list[float]] = defaultdict(list)
    threads: dict[str, float] = defaultdict(float)
    idle: list[float] = []
    waited_s = 0.0
    windows = [t[window] for t in turns if t.get(window)]
    for start, end in windows:
        used = cpu_sampler.attribute(samples, start, end)
        span = end - start
        waited_s += span
        totals: dict[str, float] = defaultdict(float)
        for key, secs in used.items():
            totals[key.split("/", 1)[0]] += secs
            threads[key] += secs
        for name in set(per_process) | set(totals):
            per_process[name].append(totals.get(name, 0.0) / span)
        idle.append(CORES - sum(totals.values()) / span)
    n = len(windows)
    for series in per_process.values():  # a process first seen late had 0 before
        series[:0] = [0.0] * (n - len(series))
    return {
        "turns": n,
        "cores_p50": {name: pct(v, 50) for name, v in
                      sorted(per_process.items(), key=lambda kv: -sum(kv[1]))},
        "idle_cores_p50": pct(idle, 50),
        "top_threads_share": {k: v / waited_s for k, v in
                              sorted(threads.items(), key=lambda kv: -kv[1])[:12]}
        if waited_s else {},
    }


def first_units_alone(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Each reply's first unit, as the CPU profile's TTS cuts it, made by the Kokoro engine
    alone in this process once the calls are over: what the in-call first audio is held
    against (in a call it also waits for the LLM's next word and the gRPC hops)."""
    from deployments.tts.config import TtsArgs
    from deployments.tts.engine import KokoroEngine
    from deployments.tts.text import UnitSplitter, normalize
    from voxray.config import load_config

    args = TtsArgs(**load_config(profiles=["cpu"]).app("tts").args)
    engine = KokoroEngine(args)
    engine.warmup()
    alone: list[float] = []
    for t in turns:
        splitter = UnitSplitter(args.first_unit_max_words, args.max_unit_chars)
        units = splitter.feed(t.get("reply", "")) + splitter.flush()
        if not units:
            continue
        t0 = time.perf_counter()
        engine.synthesize(normalize(units[0].text), args.voice, args.speed, args.language)
        t["first_unit"] = units[0].text
        t["first_unit_alone_ms"] = (time.perf_counter() - t0) * 1000
        alone.append(t["first_unit_alone_ms"])
    in_call = [t["gateway"]["tts_first_audio_ms"] for t in turns if "first_unit_alone_ms" in t]
    return {"engine_alone_ms": {"p50": pct(alone, 50), "p95": pct(alone, 95)},
            "in_call_tts_first_audio_ms": {"p50": pct(in_call, 50), "p95": pct(in_call, 95)},
            "in_call_over_alone_p50": pct(in_call, 50) / pct(alone, 50) if alone else None}


def share(text: str) -> float:
    """--mic-loss: a share of packets, 0 up to (not including) 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is outside 0-1 (0.01: one packet in 100)")
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--set", choices=("complete", "paused", "both"), default="complete")
    ap.add_argument("--turns", type=int, default=24)
    ap.add_argument("--barge-ins", type=int, default=5)
    ap.add_argument("--url", help="a running gateway (voxray up); default: start the CPU "
                                  "profile and a gateway here")
    ap.add_argument("--profile", action="append", default=[], metavar="YAML",
                    help="an overlay on the CPU profile (stages and gateway), to compare a "
                         "setting; repeatable")
    ap.add_argument("--cpu-profile", action="store_true",
                    help="per turn, where the cores went while the caller waited, and while "
                         "the answer played (/proc)")
    ap.add_argument("--mic-loss", type=share, default=0.0, metavar="SHARE",
                    help="drop this share of the caller's audio packets on the way out (a "
                         "lossy uplink: 0.01 is one packet in a hundred)")
    ap.add_argument("--mic-dtx", action="store_true",
                    help="send as a client with Opus DTX does: one packet per 400 ms while "
                         "the caller is quiet")
    ap.add_argument("--json", help="write the report here too")
    ns = ap.parse_args()
    if ns.mic_loss and ns.mic_dtx:
        ap.error("--mic-loss and --mic-dtx go one at a time (a DTX caller's packets keep "
                 "consecutive numbers, so its losses would not show as losses)")
    overlays = [yaml.safe_load(Path(f).read_text()) or {} for f in ns.profile]
    offer_only(["127.0.0.1"])
    if ns.url:
        with cpu_samples(ns.cpu_profile) as samples:
            report = asyncio.run(run(ns.url, ns.set, ns.turns, ns.barge_ins, ns.mic_loss,
                                     ns.mic_dtx))
    else:
        try:
            ep = runtime.start_local_profile(overrides=overlays, timeout_s=600)
            gateway: dict[str, Any] = {}
            for overlay in overlays:
                gateway = merge(gateway, overlay.get("gateway") or {})
            with cpu_samples(ns.cpu_profile) as samples:
                report = asyncio.run(with_own_gateway(ep.grpc, ns.set, ns.turns,
                                                      ns.barge_ins, gateway, ns.mic_loss,
                                                      ns.mic_dtx))
        finally:
            runtime.stop()
    if ns.cpu_profile:
        report["cpu_profile"] = cpu_profile(report["turns"], samples)
        report["cpu_profile_answering"] = cpu_profile(report["turns"], samples, "answered")
        report["cpu_profile_opening"] = cpu_profile(report["turns"], samples, "opening")
    report["first_units"] = first_units_alone(report["turns"])
    print(json.dumps({k: v for k, v in report.items() if k != "turns"}, indent=2))
    if ns.json:
        write_json(ns.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
