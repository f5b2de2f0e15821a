"""Multi-node placement: each deployment's replicas land on the node type its config asks for.

A local three-node Ray cluster (`ray.cluster_utils.Cluster`: a head and two workers) where
custom resources stand in for GPU node types: `gpu_node_a` (say, L4 nodes for ASR and TTS)
and `gpu_node_b` (say, an H100 node for the LLM and Moshi). The production config goes through
voxray's own path (load_config -> to_serve_schema -> runtime.start), with each stage's
`num_gpus` swapped for its node type's resource and its model swapped for the light echo
app (loadtest/echo_app.py), so the test needs no GPU and little memory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from voxray import runtime
from voxray.config import DeploymentConfig, RayActorOptions, ServeConfig, load_config

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster]

# stage -> (node type resource, replicas, share of the resource per replica)
PLACEMENT = {"asr": ("gpu_node_a", 2, 0.25), "tts": ("gpu_node_a", 2, 0.25),
             "llm": ("gpu_node_b", 2, 0.25), "moshi": ("gpu_node_b", 1, 0.5)}


def placed_config() -> ServeConfig:
    ports = {"grpc_options": {"port": runtime.free_port()},
             "http_options": {"port": runtime.free_port()}, "proxy_location": "HeadOnly"}
    config = load_config(overrides=[ports])  # serve_config.yaml, production
    apps = []
    for app in config.applications:
        if app.name not in PLACEMENT:
            continue
        resource, replicas, share = PLACEMENT[app.name]
        (prod,) = app.deployments
        assert prod.ray_actor_options and prod.ray_actor_options.num_gpus  # asks for a GPU
        app.import_path = "loadtest.echo_app:build_app"
        app.args = {}
        app.deployments = [DeploymentConfig(
            name="EchoDeployment", num_replicas=replicas,
            ray_actor_options=RayActorOptions(num_cpus=0, resources={resource: share}))]
        apps.append(app)
    config.applications = apps
    return config


@contextlib.contextmanager
def local_cluster(head_cpus: int, nodes: list[dict[str, Any]]) -> Iterator[Any]:
    """A local multi-node Ray cluster (Ray's test Cluster): a head and these nodes."""
    from ray.cluster_utils import Cluster

    mp = pytest.MonkeyPatch()
    for key, value in runtime.LOCAL_RAY_ENV.items():
        mp.setenv(key, value)
    head = {"num_cpus": head_cpus, "include_dashboard": False}
    for tries_left in (2, 1, 0):
        c = None
        try:
            c = Cluster(initialize_head=True, head_node_args=head)
            for node in nodes:
                c.add_node(**node)
            c.wait_for_nodes()
            break
        except Exception:
            # On two busy cores (right after another cluster's vLLM processes shut down)
            # Ray's GCS can miss its start-up deadline (RuntimeError), or a node's raylet
            # its 30 s to register (a bare Exception): again, once they have gone.
            if c is not None:
                c.shutdown()
            if not tries_left:
                mp.undo()
                raise
            time.sleep(10)
    try:
        yield c
    finally:
        runtime.stop()
        c.shutdown()
        mp.undo()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster(2, [{"num_cpus": 1, "resources": {"gpu_node_a": 1}},
                           {"num_cpus": 1, "resources": {"gpu_node_b": 1}}]) as c:
        yield c


def test_each_stage_lands_on_the_node_type_it_asks_for(cluster: Any) -> None:
    import ray
    from ray import serve
    from ray._private import state

    config = placed_config()
    runtime.start(config, address=cluster.address, timeout_s=180, progress=lambda _: None)
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 3
    node_of = {r: next(nid for nid, res in nodes.items() if r in res)
               for r in ("gpu_node_a", "gpu_node_b")}
    assert node_of["gpu_node_a"] != node_of["gpu_node_b"]

    replicas: dict[str, list[str]] = {}
    for info in state.actors().values():
        name = info.get("ActorClassName", "")
        if info.get("State") == "ALIVE" and name.startswith("ServeReplica:"):
            app = name.split(":")[1]
            replicas.setdefault(app, []).append(info["Address"]["NodeID"])
    assert set(replicas) == set(PLACEMENT), replicas
    for app, (resource, count, _) in PLACEMENT.items():
        assert len(replicas[app]) == count, (app, replicas[app])
        assert set(replicas[app]) == {node_of[resource]}, (app, resource)
    # Serve's own view agrees: every replica RUNNING, none left pending for lack of a node
    status = serve.status().applications
    for app, (_, count, _) in PLACEMENT.items():
        dep = status[app].deployments["EchoDeployment"]
        assert dict(dep.replica_states) == {"RUNNING": count}, (app, dep.replica_states)
