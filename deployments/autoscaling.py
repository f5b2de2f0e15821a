"""A Serve autoscaling policy on what a stage reports of its own load.

Serve's default counts ongoing requests. For TTS that is overlapping replies: short streams
that seldom overlap, so under a load that keeps its synthesis workers busy the count stays
under target and a second replica comes late. A stage that reports `load` (the share of its
workers' capacity in use, deployments/load_meter.py, via `record_autoscaling_stats`) is
scaled on that instead: as many replicas as carry the summed load at `target` each.

serve_config.yaml: `autoscaling_config.policy: {policy_function:
deployments.autoscaling:LoadPolicy, policy_kwargs: {metric: load, target: 0.7}}`. Serve
applies min/max_replicas and the up/downscale delays around it, as for its own policy.
"""

from __future__ import annotations

from typing import Any

from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
from ray.serve.config import AutoscalingContext


class LoadPolicy:
    def __init__(self, metric: str = "load", target: float = 0.7) -> None:
        if not 0 < target <= 4:
            raise ValueError(f"policy_kwargs.target: {target} is not in (0, 4]")
        self.metric, self.target = metric, target

    def __call__(self, ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
        loads = (ctx.aggregated_metrics or {}).get(self.metric) or {}
        if not loads or ctx.current_num_replicas == 0:
            # nothing reported yet (replicas starting): Serve's own rule meanwhile
            return replica_queue_length_autoscaling_policy(ctx)
        return desired_replicas(list(loads.values()), ctx.current_num_replicas, self.target), {}


def desired_replicas(loads: list[float], replicas: int, target: float) -> float:
    """Replicas to carry the reported loads at `target` each. A replica not yet reporting
    is counted as carrying the mean of those that do."""
    mean = sum(loads) / len(loads)
    return mean * replicas / target
