"""Autoscaling under a ramp of WebRTC callers: which deployment scales, how fast, and back.

Ramps callers up (one every `--spawn-every-s`), holds, then lets them all hang up, and
records each deployment's RUNNING replicas from `serve.status()` the whole time, until every
deployment is back to where it started. Reports the scale-up reaction time (first session ->
second replica RUNNING, and from the moment the load passed the target), the scale-down time
after the load ended, dropped sessions, and TTFAT per phase; writes JSON and an HTML plot.

By default it starts the CPU profile with loadtest/autoscale_profile.yaml (TTS scales at one
session per replica) on a local cluster and an in-process gateway. Against a running
`voxray up --profile cpu --profile loadtest/autoscale_profile.yaml`, pass --url (and
--ray-address auto, the default, to read Serve's status).

    python -m loadtest.bench_autoscale [--users 3] [--default-policy] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from gateway.config import local_gateway_config
from loadtest.__main__ import check_target
from loadtest.harness import plot
from loadtest.harness.replicas import ReplicaPoller
from loadtest.harness.report import Thresholds, build
from loadtest.harness.runner import loop_lag, run_user, sample_load
from loadtest.harness.scenario import load_scenario
from loadtest.harness.stats import RunStats, percentiles
from loadtest.harness.user import User

PROFILE = Path(__file__).parent / "autoscale_profile.yaml"


async def drive(url: str, users: int, spawn_every_s: float, hold_s: float, settle_s: float,
                scenario_path: str, ray_address: str | None) -> tuple[RunStats, dict[str, Any]]:
    scenario = load_scenario(scenario_path)
    stats = RunStats()
    poller = ReplicaPoller(ray_address, 0.5)
    poller.start(stats.started_mono)
    stop_users, stop_aux = asyncio.Event(), asyncio.Event()
    aux = [asyncio.create_task(sample_load(stats, stop_aux)),
           asyncio.create_task(loop_lag(stats, stop_aux))]
    tasks = []

    await asyncio.sleep(3)  # a baseline of replica samples
    load_start = stats.now()
    for uid in range(users):
        user = User(uid, url, scenario, stats, stop_users, seed=uid)
        tasks.append(asyncio.create_task(run_user(stats, user)))
        print(f"{stats.now():6.1f} s: {uid + 1} users", flush=True)
        if uid + 1 < users:
            await asyncio.sleep(spawn_every_s)
    await asyncio.sleep(hold_s)
    stop_users.set()
    print(f"{stats.now():6.1f} s: stopping users (each finishes its turn)", flush=True)
    await asyncio.gather(*tasks)
    load_end = stats.now()
    print(f"{load_end:6.1f} s: load over; waiting for the replicas to come back", flush=True)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        await asyncio.sleep(2)
        summary = poller.summary()
        if poller.samples and all(s["end"] <= s["start"] for s in summary.values()) and any(
                s["max"] > s["start"] for s in summary.values()):
            await asyncio.sleep(2)
            break
    stop_aux.set()
    await asyncio.gather(*aux, return_exceptions=True)
    await asyncio.to_thread(poller.stop)
    replicas = {"source": "serve.status()", "error": poller.error, "samples": poller.samples,
                "summary": poller.summary()}
    report = build(stats, scenario={"name": scenario.name, "mode": scenario.mode},
                   run={"url": url, "users": users, "spawn_rate": round(1 / spawn_every_s, 3),
                        "run_time_s": None, "ramp_s": round(load_start + spawn_every_s * (
                            users - 1), 1)},
                   thresholds=Thresholds(), cost=None, replicas=replicas)
    report["autoscaling"] = analyse(stats, poller.samples, load_start, load_end)
    return stats, report


def analyse(stats: RunStats, samples: list[dict[str, Any]], load_start: float,
            load_end: float) -> dict[str, Any]:
    out: dict[str, Any] = {"load_start_s": round(load_start, 1),
                           "load_end_s": round(load_end, 1), "deployments": {}}
    for dep in sorted({d for s in samples for d in s["running"]}):
        series = [(s["t_s"], s["running"].get(dep, 0)) for s in samples]
        base = next((n for t, n in series if t >= load_start), series[0][1])
        up = next((t for t, n in series if t > load_start and n > base), None)
        down = next((t for t, n in series if up is not None and t > max(up, load_end)
                     and n <= base), None)
        out["deployments"][dep] = {
            "replicas_before": base, "replicas_max": max(n for _, n in series),
            "scale_up_after_load_start_s": round(up - load_start, 1) if up else None,
            "scale_down_after_load_end_s": round(down - load_end, 1) if down else None}
    # When did two sessions first overlap? (ASR holds a stream per session; TTS and LLM one
    # per reply, so their load passes a target of 1 only when two replies overlap: later.)
    two = next((t for t, _, o in stats.load if o >= 2), None)
    out["two_sessions_open_at_s"] = two
    for d in out["deployments"].values():
        if two is not None and d["scale_up_after_load_start_s"] is not None:
            d["scale_up_after_two_sessions_s"] = round(
                load_start + d["scale_up_after_load_start_s"] - two, 1)
    phases = {"before scale-up": [], "after scale-up": []}  # type: dict[str, list[float]]
    ups = [load_start + d["scale_up_after_load_start_s"] for d in out["deployments"].values()
           if d["scale_up_after_load_start_s"] is not None]
    first_up = min(ups) if ups else float("inf")
    for t in stats.turns:
        if t.ok and t.kind == "turn" and t.client_ttfat_ms is not None:
            phases["before scale-up" if t.t_s < first_up else "after scale-up"].append(
                t.client_ttfat_ms)
    out["caller_ttfat_ms_by_phase"] = {k: percentiles(v) for k, v in phases.items()}
    out["sessions_dropped"] = stats.sessions_dropped
    return out


async def with_local_gateway(ns: argparse.Namespace, grpc_target: str
                             ) -> tuple[RunStats, dict[str, Any]]:
    from aiohttp import web

    from gateway.server import Gateway
    from voxray.ice import offer_only

    offer_only(["127.0.0.1"])
    cfg = local_gateway_config(max_sessions=max(4, ns.users))
    runner = web.AppRunner(Gateway(cfg, grpc_target).app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cfg.port).start()
    try:
        return await drive(f"http://127.0.0.1:{cfg.port}", ns.users, ns.spawn_every_s,
                           ns.hold_s, ns.settle_s, ns.scenario, "auto")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running gateway (loopback); default: start the stack here")
    ap.add_argument("--ray-address", default="auto", help="with --url: the cluster's address")
    ap.add_argument("--scenario", default="loadtest/scenarios/pipeline.yaml")
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--spawn-every-s", type=float, default=5.0)
    ap.add_argument("--hold-s", type=float, default=60.0, help="all users on, this long")
    ap.add_argument("--settle-s", type=float, default=120.0, help="wait for scale-down")
    ap.add_argument("--default-policy", action="store_true",
                    help="TTS on Serve's default policy (ongoing requests), not voxray's load")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--html", help="plot of TTFAT and replicas over time")
    ns = ap.parse_args(argv)
    if not 1 <= ns.users <= 16 or ns.hold_s > 1800 or ns.settle_s > 1800:
        print("bench_autoscale: --users 1..16, --hold-s and --settle-s up to 1800", file=sys.stderr)
        return 2
    if ns.url:
        stats, report = asyncio.run(drive(check_target(ns.url), ns.users, ns.spawn_every_s,
                                          ns.hold_s, ns.settle_s, ns.scenario,
                                          ns.ray_address))
    else:
        from voxray import runtime

        try:
            overlays = [yaml.safe_load(PROFILE.read_text())]
            if ns.default_policy:
                overlays.append({"applications": {"tts": {"deployments": {"TtsDeployment": {
                    "autoscaling_config": {"policy": None}}}}}})
            ep = runtime.start_local_profile(overrides=overlays, timeout_s=600, progress=print)
            stats, report = asyncio.run(with_local_gateway(ns, ep.grpc))
        finally:
            with contextlib.suppress(Exception):
                runtime.stop()
    print(report["text"])
    print(json.dumps(report["autoscaling"], indent=2))
    if ns.json:
        from loadtest.harness.stats import write_json

        write_json(ns.json, report)
    if ns.html:
        plot.render(stats, report, ns.html)
    return 0


if __name__ == "__main__":
    sys.exit(main())
