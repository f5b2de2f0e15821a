"""Run a scenario: spawn users at a rate, print live stats, stop at the run time, report."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from loadtest.harness.faults import KillPlan, ReplicaKiller
from loadtest.harness.memory import RssSampler
from loadtest.harness.replicas import ReplicaPoller
from loadtest.harness.report import Cost, Thresholds, build
from loadtest.harness.scenario import Scenario
from loadtest.harness.stats import RunStats
from loadtest.harness.user import User


@dataclass
class RunOptions:
    url: str
    users: int
    spawn_rate: float
    run_time_s: float
    stop_timeout_s: float = 30.0
    print_every_s: float = 2.0  # 0: no live table
    ray_address: str | None = "auto"
    replica_interval_s: float = 1.0
    seed: int = 1
    kill: KillPlan | None = None  # chaos: replicas killed on a schedule
    soak_interval_s: float | None = None  # soak: sample memory this often
    soak_warmup_s: float = 300.0  # growth is measured after this


async def sample_load(stats: RunStats, stop: asyncio.Event) -> None:
    while not stop.is_set():
        stats.load.append((round(stats.now(), 2), stats.users, stats.open_sessions))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    stats.load.append((round(stats.now(), 2), stats.users, stats.open_sessions))


async def loop_lag(stats: RunStats, stop: asyncio.Event) -> None:
    """How late this process's event loop wakes up: callers share it, so a busy loop
    delays their audio and their clocks."""
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(0.1)
        stats.loop_lag_ms.append(max(0.0, (time.monotonic() - t - 0.1) * 1000))


async def run_user(stats: RunStats, user: User) -> None:
    """One user's sessions until the run stops, counted in `stats.users` meanwhile."""
    stats.users += 1
    try:
        await user.run()
    finally:
        stats.users -= 1


async def _print_live(stats: RunStats, stop: asyncio.Event, every_s: float) -> None:
    n = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if n % 10 == 0:
            print(stats.live_line(header=True), flush=True)
        print(stats.live_line(), flush=True)
        n += 1


async def run(scenario: Scenario, opts: RunOptions, thresholds: Thresholds,
              cost: Cost | None) -> tuple[RunStats, dict[str, Any]]:
    stats = RunStats()
    stop_users = asyncio.Event()
    stop_aux = asyncio.Event()
    poller = ReplicaPoller(opts.ray_address, opts.replica_interval_s)
    poller.start(stats.started_mono)
    killer = ReplicaKiller(opts.kill, poller.connected) if opts.kill else None
    sampler = None
    if opts.soak_interval_s:
        sampler = RssSampler(urlparse(opts.url).port or 80, opts.soak_interval_s,
                             opts.soak_warmup_s)
    for side in (killer, sampler):
        if side is not None:
            side.start(stats.started_mono)
    aux = [asyncio.create_task(sample_load(stats, stop_aux)),
           asyncio.create_task(loop_lag(stats, stop_aux))]
    if opts.print_every_s > 0:
        aux.append(asyncio.create_task(_print_live(stats, stop_aux, opts.print_every_s)))
    tasks: list[asyncio.Task[None]] = []

    deadline = stats.started_mono + opts.run_time_s
    ramp_s = 0.0
    try:
        for uid in range(opts.users):
            if time.monotonic() >= deadline:
                break
            user = User(uid, opts.url, scenario, stats, stop_users, seed=opts.seed * 1000 + uid)
            tasks.append(asyncio.create_task(run_user(stats, user), name=f"user-{uid}"))
            ramp_s = stats.now()
            if uid + 1 < opts.users:
                await asyncio.sleep(1.0 / opts.spawn_rate)
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        stop_users.set()
        if killer is not None:  # no faults while the callers finish and hang up
            await asyncio.to_thread(killer.stop)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=opts.stop_timeout_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        stop_aux.set()
        await asyncio.gather(*aux, return_exceptions=True)
        if sampler is not None:
            await asyncio.to_thread(sampler.stop)
        await asyncio.to_thread(poller.stop)
    replicas = {"source": "serve.status()", "error": poller.error, "samples": poller.samples,
                "summary": poller.summary()}
    report = build(stats, scenario={"name": scenario.name, "mode": scenario.mode,
                                    "turns_per_session": scenario.turns_per_session,
                                    "barge_in_probability": scenario.barge_in.probability},
                   run={"url": opts.url, "users": opts.users, "spawn_rate": opts.spawn_rate,
                        "run_time_s": opts.run_time_s, "ramp_s": round(ramp_s, 1),
                        "started_unix": round(stats.started_unix, 1)},
                   thresholds=thresholds, cost=cost, replicas=replicas,
                   faults=None if killer is None else {"kills": killer.kills,
                                                       "error": killer.error},
                   memory=None if sampler is None else {
                       "interval_s": sampler.interval_s, "warmup_s": sampler.warmup_s,
                       "error": sampler.error, "processes": sampler.summary(),
                       "series": sampler.series})
    return stats, report
