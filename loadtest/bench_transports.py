"""TTFAT by transport: the same questions over WebRTC (WHIP), the Realtime API WebSocket
(the official openai SDK) and Twilio Media Streams, on one gateway with the CPU defaults.

The three callers are connected at once and take turns, one question at a time, in
rotation, so each transport meets the box in the same state. Per transport: the
gateway's own TTFAT (its turn_metrics: last voiced sample received -> first audible
reply sample sent, the figure the transports share) and the client's (last voiced
sample sent -> first audible sample received: after aiortc's jitter buffer for
WebRTC, on arrival for the WebSocket, at a phone's 20 ms playout for Twilio).

    python -m loadtest.bench_transports [--turns 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway import events as ev
from gateway.config import local_gateway_config
from gateway.server import Gateway
from loadtest.benchutil import pct
from loadtest.harness.stats import write_json
from loadtest.turnset import samples
from voxray import runtime
from voxray.clients.caller import Caller, load_48k
from voxray.clients.realtime_caller import RealtimeCaller
from voxray.clients.twilio_caller import TwilioCaller
from voxray.ice import offer_only

TRANSPORTS = ("webrtc", "realtime", "twilio")


async def _quiet(last_audible: Callable[[], float], for_s: float = 1.2,
                 within_s: float = 90.0) -> None:
    deadline = time.monotonic() + within_s
    while last_audible() > time.monotonic() - for_s and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)


async def run(gw: Gateway, url: str, turns: int) -> dict[str, Any]:
    seen: list[ev.TurnMetrics] = []
    observe = gw.metrics.observe

    def record(event: ev.Event) -> None:
        if isinstance(event, ev.TurnMetrics):
            seen.append(event)
        observe(event)

    gw.metrics.observe = record  # type: ignore[method-assign]
    webrtc, realtime = Caller(url), RealtimeCaller(url)
    twilio = TwilioCaller(url.replace("http", "ws", 1) + "/twilio")
    await webrtc.connect()
    await realtime.connect()
    await twilio.connect()

    async def say_webrtc(pcm: Any) -> float | None:
        n = len(webrtc.events)
        _, last = webrtc.mic.say(pcm)
        sent = await last
        await webrtc.wait_event(("agent_done", "interrupted", "error"), 90, since=n)
        await _quiet(webrtc.heard.last_audible)
        first = webrtc.heard.first_audible_after(sent)
        return (first - sent) * 1000 if first else None

    async def say_realtime(pcm: Any) -> float | None:
        ttfat, _, _ = await realtime.say_and_hear(pcm, 90)
        await _quiet(realtime.heard.last_audible)
        return ttfat

    async def say_twilio(pcm: Any) -> float | None:
        ttfat, _ = await twilio.say_and_hear(pcm, 90)
        return ttfat

    say: dict[str, Callable[[Any], Awaitable[float | None]]] = {
        "webrtc": say_webrtc, "realtime": say_realtime, "twilio": say_twilio}
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in TRANSPORTS}
    questions = samples("complete")
    try:
        for i in range(turns):
            sample = questions[i % len(questions)]
            pcm = load_48k(sample.path)
            for transport in TRANSPORTS:
                n = len(seen)
                client = await say[transport](pcm)
                server = seen[n].ttfat_ms if len(seen) > n else None
                results[transport].append({"id": sample.id, "client_ttfat_ms": client,
                                           "gateway_ttfat_ms": server})
                print(f"turn {i + 1} {sample.id} {transport:8s}: gateway "
                      f"{server if server is None else round(server)} ms, client "
                      f"{client if client is None else round(client)} ms", flush=True)
    finally:
        await webrtc.hang_up()
        await realtime.close()
        await twilio.hang_up()
    summary: dict[str, Any] = {}
    for transport, rows in results.items():
        g = [r["gateway_ttfat_ms"] for r in rows if r["gateway_ttfat_ms"] is not None]
        c = [r["client_ttfat_ms"] for r in rows if r["client_ttfat_ms"] is not None]
        summary[transport] = {"turns": len(rows), "answered": len(g),
                              "gateway_ttfat_ms": {"p50": pct(g, 50), "p95": pct(g, 95)},
                              "client_ttfat_ms": {"p50": pct(c, 50), "p95": pct(c, 95)}}
    base = summary["webrtc"]["gateway_ttfat_ms"]["p50"]
    for transport in TRANSPORTS:
        summary[transport]["gateway_p50_minus_webrtc_ms"] = (
            summary[transport]["gateway_ttfat_ms"]["p50"] - base)
    return {"summary": summary, "turns": results}


async def with_own_gateway(grpc_target: str, turns: int) -> dict[str, Any]:
    cfg = local_gateway_config()
    gw = Gateway(cfg, grpc_target)
    runner = web.AppRunner(gw.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cfg.port).start()
    try:
        return await run(gw, f"http://127.0.0.1:{cfg.port}", turns)
    finally:
        await runner.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--turns", type=int, default=8, help="questions per transport")
    ap.add_argument("--json", help="write the report here too")
    ns = ap.parse_args()
    offer_only(["127.0.0.1"])
    try:
        ep = runtime.start_local_profile(timeout_s=600)
        report = asyncio.run(with_own_gateway(ep.grpc, ns.turns))
    finally:
        runtime.stop()
    print(json.dumps(report["summary"], indent=2))
    if ns.json:
        write_json(ns.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
