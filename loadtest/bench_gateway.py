"""Sessions per gateway process at real-time media.

How many calls one gateway process carries while its outbound audio keeps to the 20 ms
schedule: the gateway records how late each frame went out (`voxray_frame_late_ms`, the
pacing jitter its event loop adds), and a step passes while that stays under
`--max-late-p95-ms` (10) at p95. Steps of 1, 2, 4, ... callers talk to the agent without
pause (speak, hear the answer, speak again) for `--hold-s` each; with `--gateways N` the
processes share one port as `voxray up --gateways N` runs them, and the report shows each
one's sessions and frame lateness.

The stages are stand-ins on a local gRPC server in this process (they answer at once with
short tones): the subject is the gateway's own work per call (WebRTC, Opus, resampling, VAD,
the end-of-turn model, turn-taking), not the models'. The callers run here too, so on a
small machine they share the cores with the gateways: the report shows this process's
event-loop lag and each gateway's CPU, to tell which side ran out.

    python -m loadtest.bench_gateway [--gateways 1] [--steps 1,2,4,8,12,16] [--hold-s 30]
        [--json out.json]
    python -m loadtest.bench_gateway --gateways 2 --steps 4 --kill-one   # a gateway dies

Run it in a namespace with only loopback, as scripts/test.sh runs the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from glob import glob
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from loadtest.harness.runner import loop_lag
from loadtest.harness.stats import RunStats
from loadtest.stand_in_stages import Script, serve_stand_ins
from voxray import runtime
from voxray.clients.caller import Caller, load_48k, speak_turn
from voxray.ice import offer_only

PROFILE = Path(__file__).parent / "gateway_profile.yaml"
SPEECH = sorted(glob("tests/data/speech/s*.wav"))[:12]


def late_buckets(metrics_text: str) -> dict[float, float]:
    """The cumulative buckets of voxray_frame_late_ms: upper bound (ms) -> frames."""
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "voxray_frame_late_ms":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    out[float(s.labels["le"])] = s.value
    return out


def sessions_open(metrics_text: str) -> int:
    return int(sum(s.value for f in text_string_to_metric_families(metrics_text)
                   if f.name == "voxray_sessions" for s in f.samples))


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The q-quantile (ms) of the frames between two scrapes, interpolated in its bucket
    (Prometheus's histogram_quantile); None with no frames."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(cum - below, 1e-9)
        lower, below = bound, cum
    return lower


class Gateways:
    """N `voxray gateway` processes on one signalling port, each with its private port."""

    def __init__(self, n: int, stages: str) -> None:
        self.port = runtime.free_port()
        self.private = [runtime.free_port() for _ in range(n)] if n > 1 else [self.port]
        self.procs: list[subprocess.Popen[bytes]] = []
        base = [sys.executable, "-m", "voxray.cli", "gateway", "--stages", stages,
                "--profile", str(PROFILE), "--port", str(self.port)]
        for own in self.private:
            side = [] if n == 1 else ["--reuse-port", "--private-port", str(own),
                                      *sum((["--peer", f"http://127.0.0.1:{q}"]
                                            for q in self.private if q != own), [])]
            self.procs.append(subprocess.Popen([*base, *side], stdout=subprocess.DEVNULL))
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self, within_s: float = 60) -> None:
        deadline = time.monotonic() + within_s
        async with aiohttp.ClientSession() as http:
            for own, proc in zip(self.private, self.procs, strict=True):
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"a gateway exited ({proc.returncode})")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"http://127.0.0.1:{own}/healthz") as res:
                            if res.status == 200:
                                break
                    if time.monotonic() > deadline:
                        raise RuntimeError("a gateway did not start")
                    await asyncio.sleep(0.3)

    async def scrape(self) -> list[str]:
        async with aiohttp.ClientSession() as http:
            out = []
            for own in self.private:
                async with http.get(f"http://127.0.0.1:{own}/metrics") as res:
                    out.append(await res.text())
            return out

    def cpu_times(self) -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in self.ps]

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


async def talk(caller: Caller, who: int, stop: asyncio.Event,
               turns: list[tuple[int, float, bool]], seed: int) -> None:
    """Speak, hear the answer, speak again, until `stop`; each turn as (caller, when it
    ended, answered) in `turns`."""
    rng = np.random.default_rng(seed)
    while not stop.is_set():
        turn = await speak_turn(caller, load_48k(str(rng.choice(SPEECH))), within_s=20)
        turns.append((who, time.monotonic(), bool(turn.gateway)))


async def step(gws: Gateways, n: int, hold_s: float, seed: int) -> dict[str, Any]:
    """n callers talking for hold_s; the frame lateness and CPU between the scrapes."""
    talkers = await Talkers.start(gws.url, n, seed)
    try:
        before, cpu0, t0 = await gws.scrape(), gws.cpu_times(), time.monotonic()
        await asyncio.sleep(hold_s)
        after, cpu1, t1 = await gws.scrape(), gws.cpu_times(), time.monotonic()
    finally:
        await talkers.hang_up()
    turns, lags = talkers.turns, talkers.stats.loop_lag_ms
    per = []
    for b, a, c0, c1 in zip(before, after, cpu0, cpu1, strict=True):
        bb, ab = late_buckets(b), late_buckets(a)
        frames = ab.get(float("inf"), 0.0) - bb.get(float("inf"), 0.0)
        p50, p95 = quantile(bb, ab, 0.5), quantile(bb, ab, 0.95)
        within = (ab.get(10.0, 0.0) - bb.get(10.0, 0.0)) / frames if frames else None
        per.append({"sessions": sessions_open(a), "frames": int(frames),
                    "late_p50_ms": None if p50 is None else round(p50, 2),
                    "late_p95_ms": None if p95 is None else round(p95, 2),
                    "frames_within_10ms": None if within is None else round(within, 4),
                    "cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 1)})
    return {"callers": n, "gateways": per, "turns": len(turns),
            "turns_answered": sum(t[2] for t in turns),
            "bench_loop_lag_p95_ms": round(float(np.percentile(lags, 95)), 1) if lags else None}


@dataclass
class Talkers:
    """Callers talking to the gateways until stopped; their turns as (caller, when the
    turn ended, answered), and this process's event-loop lag."""

    callers: list[Caller]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    turns: list[tuple[int, float, bool]] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)  # this process's event-loop lag
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, url: str, n: int, seed: int) -> Talkers:
        t = cls([Caller(url) for _ in range(n)])
        for c in t.callers:
            await c.connect()
        t.tasks = [asyncio.create_task(talk(c, i, t.stop, t.turns, seed + i))
                   for i, c in enumerate(t.callers)]
        t.tasks.append(asyncio.create_task(loop_lag(t.stats, t.stop)))
        await asyncio.sleep(2)  # every call's media under way
        return t

    async def hang_up(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for c in self.callers:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                await c.hang_up()


async def kill_one(gws: Gateways, n: int, hold_s: float) -> dict[str, Any]:
    """n callers over the gateways; halfway through, the first gateway process is killed
    (SIGKILL). Its callers' calls end; every other caller's turns go on being answered."""
    talkers = await Talkers.start(gws.url, n, seed=7)
    try:
        await asyncio.sleep(hold_s / 2)
        sessions = [sessions_open(t) for t in await gws.scrape()]
        gws.procs[0].kill()
        killed_at = time.monotonic()
        await asyncio.sleep(hold_s / 2)
    finally:
        await talkers.hang_up()
    answered_after = {who for who, at, ok in talkers.turns if ok and at > killed_at + 1}
    return {"callers": n, "sessions_before_kill": sessions,
            "callers_answered_after_kill": len(answered_after),
            "callers_cut_off": n - len(answered_after),
            "only_its_calls_ended": n - len(answered_after) == sessions[0]
            and len(answered_after) == sum(sessions[1:])}


async def bench(n_gateways: int, steps: list[int], hold_s: float,
                max_late_p95_ms: float, kill: bool = False) -> dict[str, Any]:
    script = Script(asr_texts=["what is the weather like tomorrow"] * 100_000,
                    answer="Sure, it will be sunny and warm all day.", p_end=0.9)
    server, stages = await serve_stand_ins(script)
    gws = Gateways(n_gateways, stages)
    results: list[dict[str, Any]] = []
    try:
        await gws.ready()
        if kill:
            return {"gateways": n_gateways, "hold_s": hold_s,
                    "kill": await kill_one(gws, steps[0], hold_s)}
        for i, n in enumerate(steps):
            r = await step(gws, n, hold_s, seed=1000 * i)
            worst = max((g["late_p95_ms"] or 0.0) for g in r["gateways"])
            r["passed"] = worst < max_late_p95_ms and r["turns_answered"] > 0
            results.append(r)
            print(json.dumps(r), flush=True)
            if not r["passed"]:
                break
            await asyncio.sleep(2)  # the hung-up sessions gone
    finally:
        gws.stop()
        await server.stop(None)
    held = [r["callers"] for r in results if r["passed"]]
    return {"gateways": n_gateways, "hold_s": hold_s, "max_late_p95_ms": max_late_p95_ms,
            "max_callers_within_target": max(held) if held else 0, "steps": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtest.bench_gateway", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, default=1)
    ap.add_argument("--steps", default="1,2,4,8,12,16",
                    help="callers at once in each step, comma-separated")
    ap.add_argument("--hold-s", type=float, default=30.0)
    ap.add_argument("--max-late-p95-ms", type=float, default=10.0)
    ap.add_argument("--kill-one", action="store_true",
                    help="with --gateways 2 or more: one step of the first --steps callers, "
                         "and the first gateway process killed halfway through")
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args(argv)
    try:
        steps = [int(s) for s in ns.steps.split(",") if s.strip()]
    except ValueError:
        ap.error("--steps: comma-separated whole numbers, e.g. 1,2,4")
    if ns.gateways < 1 or not steps or min(steps) < 1:
        ap.error("--gateways and each of --steps must be at least 1")
    if ns.kill_one and ns.gateways < 2:
        ap.error("--kill-one needs --gateways 2 or more")
    offer_only(["127.0.0.1"])  # the gateways are on this machine (aioice skips loopback)
    out = asyncio.run(bench(ns.gateways, steps, ns.hold_s, ns.max_late_p95_ms, ns.kill_one))
    if ns.kill_one:
        print(json.dumps(out["kill"]))
    else:
        print(f"{ns.gateways} gateway process(es): {out['max_callers_within_target']} callers "
              f"with outbound frame lateness p95 under {ns.max_late_p95_ms:g} ms")
    if ns.json:
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
