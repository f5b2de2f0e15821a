"""The TTS autoscaling signal: a replica's synthesis load, and the policy that scales on it.
No Ray cluster: the policy is called with the context Serve's controller would give it, and
wrapped by Serve's own bounds-and-delays wrapper as the controller does."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from ray.serve._private.common import DeploymentID, ReplicaID
from ray.serve.autoscaling_policy import (
    _apply_autoscaling_config,
    replica_queue_length_autoscaling_policy,
)
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from deployments.autoscaling import LoadPolicy
from deployments.decode_pool import BACKGROUND, DecodePool
from deployments.load_meter import LoadMeter
from voxray.config import load_config, to_serve_schema


def test_the_meter_reports_the_mean_level_since_the_last_report() -> None:
    now = [0.0]
    meter = LoadMeter(2, clock=lambda: now[0])
    meter.add(2)  # both workers busy for 1 s
    now[0] = 1.0
    meter.add(1)  # a third job queued for 1 s more
    now[0] = 2.0
    assert meter.share() == pytest.approx((2 * 1 + 3 * 1) / 2 / 2)
    meter.add(-3)
    now[0] = 4.0
    assert meter.share() == 0.0  # idle since the last report


async def test_a_pool_s_load_counts_jobs_queued_and_running() -> None:
    pool = DecodePool(workers=1)
    gate = threading.Event()
    jobs = [asyncio.create_task(pool.run(BACKGROUND, lambda: gate.wait(5))) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert pool.load.level == 3  # one running, two waiting: three times its capacity
    gate.set()
    await asyncio.gather(*jobs)
    assert pool.load.level == 0 and pool.load.share() > 0


def context(loads: dict[str, float] | None, replicas: int, ongoing: float = 0.0,
            **config: Any) -> AutoscalingContext:
    dep = DeploymentID(name="TtsDeployment", app_name="tts")
    ids = [ReplicaID(unique_id=f"r{i}", deployment_id=dep) for i in range(replicas)]
    metrics = None if loads is None else {"load": {ids[int(k)]: v for k, v in loads.items()}}
    return AutoscalingContext(
        deployment_id=dep, deployment_name=dep.name, app_name=dep.app_name,
        current_num_replicas=replicas, target_num_replicas=replicas, running_replicas=ids,
        total_num_requests=ongoing, total_queued_requests=0.0, aggregated_metrics=metrics,
        raw_metrics=None, capacity_adjusted_min_replicas=config.get("min_replicas", 1),
        capacity_adjusted_max_replicas=config.get("max_replicas", 8), policy_state={},
        last_scale_up_time=None, last_scale_down_time=None, current_time=0.0,
        config=AutoscalingConfig(**({"upscale_delay_s": 0, "downscale_delay_s": 0} | config)))


def test_the_policy_scales_on_load_where_serve_s_counts_streams() -> None:
    policy = _apply_autoscaling_config(LoadPolicy(target=0.5))
    # One TTS replica, its workers busy 1.4x over (work queueing), while the replies in
    # flight average one stream: Serve's rule at target 1 keeps one replica.
    busy = context({"0": 1.4}, replicas=1, ongoing=1.0, target_ongoing_requests=1)
    assert _apply_autoscaling_config(replica_queue_length_autoscaling_policy)(busy)[0] == 1
    assert policy(busy)[0] == 3  # 1.4 / 0.5 -> 3 replicas (max_replicas: Serve's controller)
    # a quiet pair goes back to one (after downscale_delay_s, 0 here), never below min
    assert policy(context({"0": 0.1, "1": 0.0}, replicas=2))[0] == 1
    # replicas not reporting yet count as carrying the mean of those that do
    assert policy(context({"0": 1.0}, replicas=2))[0] == 4


def test_before_any_report_the_policy_is_serve_s_own() -> None:
    policy = _apply_autoscaling_config(LoadPolicy(target=0.7))
    assert policy(context(None, replicas=1, ongoing=3.0, target_ongoing_requests=1))[0] == 3
    with pytest.raises(ValueError, match="policy_kwargs.target"):
        LoadPolicy(target=0)


def test_the_production_tts_scales_on_load_and_serve_accepts_the_policy() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = load_config()
    (tts,) = config.app("tts").deployments
    assert tts.autoscaling_config and tts.autoscaling_config.policy
    assert tts.autoscaling_config.policy.policy_function == "deployments.autoscaling:LoadPolicy"
    schema = ServeDeploySchema.model_validate(to_serve_schema(config))
    (dep,) = next(a for a in schema.applications if a.name == "tts").deployments
    assert dep.autoscaling_config["policy"]["policy_kwargs"] == {"metric": "load", "target": 0.7}
    # the CPU profile keeps Serve's rule (no room for a second replica on two cores)
    (cpu,) = load_config(profiles=["cpu"]).app("tts").deployments
    assert cpu.autoscaling_config and cpu.autoscaling_config.policy is None
