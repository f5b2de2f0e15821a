"""End-to-end turn latency through WebRTC with the CPU defaults (the headline TTFAT).

Starts the CPU profile (ASR, LLM, TTS) and the gateway, then one aiortc caller
speaks test utterances one turn at a time, waiting for each reply to end.
Reports TTFAT as the caller hears it (last voiced sample sent -> first audible
reply sample received) and as the gateway measures it (last voiced frame ->
first audible sample sent), each stage's time, and barge-in stop latency
(the caller speaks over a long answer).

    python -m loadtest.bench_call [--turns 20] [--barge-ins 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import numpy as np
from aiohttp import web

from gateway.caller import Caller, let_agent_talk, load_48k, speak_turn
from gateway.config import GatewayConfig
from gateway.ice import offer_only
from gateway.server import Gateway
from loadtest.benchutil import pct
from loadtest.harness.stats import write_json
from voxray import runtime

UTTERANCES = [f"tests/data/speech/s{i:02d}.wav" for i in range(1, 25) if i != 18]
STAGES = ("end_of_turn_ms", "asr_final_ms", "llm_first_token_ms", "tts_first_audio_ms",
          "playout_ms", "ttfat_ms")



async def run(grpc_target: str, turns: int, barge_ins: int) -> dict[str, object]:
    offer_only(["127.0.0.1"])
    cfg = GatewayConfig(port=runtime.free_port(), ice_addresses=["127.0.0.1"])
    runner = web.AppRunner(Gateway(cfg, grpc_target).app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cfg.port).start()
    url = f"http://127.0.0.1:{cfg.port}"
    client: list[float] = []
    gateway: dict[str, list[float]] = {k: [] for k in STAGES}
    stops: list[float] = []
    heard_stop: list[float] = []
    try:
        caller = Caller(url)
        await caller.connect()
        for i in range(turns):
            turn = await speak_turn(caller, load_48k(UTTERANCES[i % len(UTTERANCES)]))
            if not turn.gateway or turn.client_ttfat_ms is None:
                print(f"turn {i + 1}: no reply", flush=True)
                continue
            client.append(turn.client_ttfat_ms)
            for k in STAGES:
                gateway[k].append(turn.gateway[k])
            print(f"turn {i + 1}: TTFAT caller {turn.client_ttfat_ms:.0f} ms, gateway "
                  + ", ".join(f"{k[:-3]} {turn.gateway[k]:.0f}" for k in reversed(STAGES)),
                  flush=True)
        story = load_48k("tests/data/speech/s18.wav")
        over = load_48k("tests/data/speech/s25.wav")
        for _ in range(barge_ins):
            await let_agent_talk(caller, story, 1.5)
            n = len(caller.events)
            spoke, _ = caller.mic.say(over)
            spoke_at = await spoke
            try:
                await caller.wait_event("interrupted", 15, since=n)
            except TimeoutError:
                kinds = [e["type"] for e in caller.events[n:] if e["type"] != "agent_text"]
                print(f"barge-in: no interruption; events {kinds}", flush=True)
                await caller.wait_event("agent_done", 60, since=n)
                continue
            paused = [e for e in caller.events[n:] if e["type"] == "agent_paused"]
            if not paused:
                print("barge-in: the agent had finished already", flush=True)
                continue
            stops.append(paused[0]["detail"]["stop_ms"])
            audible = [at for at, pcm in caller.heard.frames
                       if at >= spoke_at and np.abs(pcm).max() > 328]
            heard_stop.append((max(audible, default=spoke_at) - spoke_at) * 1000)
            await caller.wait_event("agent_done", 60, since=n)  # the reply to the interruption
        await caller.hang_up()
    finally:
        await runner.cleanup()
    report: dict[str, object] = {
        "turns": len(client),
        "ttfat_caller_p50_ms": pct(client, 50), "ttfat_caller_p95_ms": pct(client, 95),
        "gateway": {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in gateway.items()},
        "barge_in_stop_gateway_ms": {"p50": pct(stops, 50), "max": max(stops, default=0)},
        "barge_in_last_agent_audio_heard_ms": {"p50": pct(heard_stop, 50),
                                               "max": max(heard_stop, default=0)},
    }
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--barge-ins", type=int, default=5)
    ap.add_argument("--json", help="write the report here too")
    ns = ap.parse_args()
    try:
        ep = runtime.start_local_profile(timeout_s=600)
        report = asyncio.run(run(ep.grpc, ns.turns, ns.barge_ins))
    finally:
        runtime.stop()
    print(json.dumps(report, indent=2))
    if ns.json:
        write_json(ns.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
