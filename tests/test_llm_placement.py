"""Tensor-parallel LLM replicas: an engine over N GPUs gets them as a placement group.

voxray's own path (load_config derives the LLM deployment's placement group from its args;
runtime.start deploys it) on a local four-node Ray cluster whose GPUs are declared, not real:
a node with two, two nodes with one each. The replica is the placement stand-in
(loadtest/placement_probe.py), which does with its group what vLLM's Ray executor does;
the subject is where things land, not the model. Unchecked here: vLLM itself on real GPUs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.test_placement import local_cluster
from voxray import runtime
from voxray.config import DeploymentConfig, ServeConfig, load_config

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster]


def probe_config(tensor_parallel_size: int, strategy: str) -> ServeConfig:
    ports = {"grpc_options": {"port": runtime.free_port()},
             "http_options": {"port": runtime.free_port()}, "proxy_location": "HeadOnly"}
    llm = {"name": "llm",
           "args": {"tensor_parallel_size": tensor_parallel_size, "placement_strategy": strategy},
           "deployments": [{"name": "LlmDeployment", "autoscaling_config": None, "num_replicas": 1,
                            "ray_actor_options": {"num_cpus": 0.5, "num_gpus": 0}}]}
    config = load_config(overrides=[ports, {"applications": [llm]}])  # production: cuda
    app = config.app("llm")
    (derived,) = app.deployments
    app.import_path = "loadtest.placement_probe:build_app"
    app.args = {"world_size": tensor_parallel_size}
    app.deployments = [DeploymentConfig(
        name="PlacementProbe", num_replicas=1, ray_actor_options=derived.ray_actor_options,
        placement_group_bundles=derived.placement_group_bundles,
        placement_group_strategy=derived.placement_group_strategy)]
    config.applications = [app]
    return config


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # declared GPUs: a node with two, two with one
    with local_cluster(1, [{"num_cpus": 1, "num_gpus": 2, "resources": {"pair": 1}},
                           {"num_cpus": 1, "num_gpus": 1, "resources": {"single": 1}},
                           {"num_cpus": 1, "num_gpus": 1, "resources": {"single": 1}}]) as c:
        yield c


def deployed_where(cluster: Any, config: ServeConfig) -> tuple[dict[str, Any], dict[str, str]]:
    import ray
    from ray import serve

    runtime.start(config, address=cluster.address, timeout_s=180, progress=lambda _: None)
    where = serve.get_app_handle("llm").where.remote().result(timeout_s=60)
    kind = {n["NodeID"]: next((k for k in ("pair", "single") if k in n["Resources"]), "head")
            for n in ray.nodes() if n["Alive"]}
    return where, kind


def test_a_tensor_parallel_replica_gets_its_gpus_on_one_node(cluster: Any) -> None:
    config = probe_config(2, "STRICT_PACK")
    (d,) = config.app("llm").deployments
    assert d.placement_group_bundles == [{"GPU": 1.0, "CPU": 0.5}, {"GPU": 1.0}]
    where, kind = deployed_where(cluster, config)
    # Replica and ranks on the one node that holds both GPUs, each rank on its own GPU
    assert {kind[r["node"]] for r in where["ranks"]} == {"pair"}, where
    assert kind[where["replica"]["node"]] == "pair"
    assert sorted(str(g) for r in where["ranks"] for g in r["gpus"]) == ["0", "1"], where
    assert where["replica"]["gpus"] == []  # the replica holds none: its ranks do


def test_a_packed_group_spans_nodes_when_the_config_allows_it(cluster: Any) -> None:
    where, kind = deployed_where(cluster, probe_config(3, "PACK"))
    nodes = {r["node"] for r in where["ranks"]}
    assert len(where["ranks"]) == 3 and len(nodes) == 2, where
    assert {kind[n] for n in nodes} == {"pair", "single"}, where
