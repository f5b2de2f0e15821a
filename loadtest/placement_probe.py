"""A stand-in for an LLM replica whose engine spans GPUs, for placement tests: it does with
its placement group what vLLM's Ray executor does (vllm/v1/executor/ray_utils.py: no bundle
with more than one GPU, a GPU bundle per rank, one worker on each) and reports where the
replica and its workers landed. No model, no GPU: the cluster's GPUs may be declared ones."""

from __future__ import annotations

from typing import Any

import ray
from ray import serve
from ray.serve import Application
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


def _where() -> dict[str, Any]:
    return {"node": ray.get_runtime_context().get_node_id(), "gpus": ray.get_gpu_ids()}


@ray.remote(num_cpus=0, num_gpus=1)
class _Rank:
    def where(self) -> dict[str, Any]:
        return _where()


@serve.deployment(name="PlacementProbe")
class PlacementProbe:
    def __init__(self, world_size: int) -> None:
        pg = get_current_placement_group()
        if pg is None:
            raise RuntimeError("the replica is in no placement group")
        bundles = pg.bundle_specs
        if any(b.get("GPU", 0) > 1 for b in bundles):
            raise RuntimeError(f"a bundle with more than one GPU: {bundles}")
        ranks = [i for i, b in enumerate(bundles) if b.get("GPU")]
        if len(ranks) < world_size:
            raise RuntimeError(f"{len(ranks)} GPU bundles for {world_size} ranks: {bundles}")
        self._bundles = bundles
        self._ranks = [_Rank.options(scheduling_strategy=PlacementGroupSchedulingStrategy(  # type: ignore[attr-defined]
            placement_group=pg, placement_group_capture_child_tasks=True,
            placement_group_bundle_index=i)).remote() for i in ranks[:world_size]]

    async def where(self) -> dict[str, Any]:
        return {"replica": _where(), "bundles": self._bundles,
                "ranks": [await r.where.remote() for r in self._ranks]}


def build_app(args: dict[str, Any]) -> Application:
    return PlacementProbe.bind(int(args["world_size"]))  # type: ignore[attr-defined,no-any-return]
