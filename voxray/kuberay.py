"""A KubeRay RayService, and the gateway beside it, rendered from serve_config.yaml and a
small cluster file (deploy/kuberay/cluster.yaml), so the YAML stays the one truth.

Rendered: a ConfigMap with the validated config (the gateway reads its section), the
RayService (`serveConfigV2` from the config; a head group that runs no replicas; a worker
group per node type with Ray's autoscaler on), and the gateway as its own Deployment and
Service. Field names follow ray-operator/apis/ray/v1 (rayservice_types.go,
raycluster_types.go). A deployment whose `ray_actor_options` no node type can hold is an
error here, not a replica that stays PENDING in the cluster.

The gateway runs with host networking: aiortc's ICE host candidates are then the node's
own addresses, so a node needs an address its callers reach (the Service carries only the
HTTP signalling; media goes to the node directly).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from voxray.config import (
    ConfigError,
    DeploymentConfig,
    ServeConfig,
    Strict,
    format_validation_error,
    to_serve_schema,
)

K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
SERVE_DEFAULT_NUM_CPUS = 1.0  # a Serve replica's when ray_actor_options leaves it unset


class NodeType(Strict):
    """One kind of worker node: a worker group of the RayCluster."""

    name: str = Field(pattern=K8S_NAME, max_length=40)
    cpus: int = Field(ge=1)
    memory: str = Field(pattern=QUANTITY)
    gpus: int = Field(0, ge=0)
    # The GPU model as Ray names it (`accelerator_type` in ray_actor_options: "L4", "A100")
    gpu_model: str | None = None
    min_workers: int = Field(0, ge=0)  # 0: an elastic pool, nodes only while replicas need them
    max_workers: int = Field(ge=1)
    node_selector: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, float] = Field(default_factory=dict)  # custom Ray resources

    @field_validator("max_workers")
    @classmethod
    def _at_least_min(cls, v: int, info: Any) -> int:
        if v < info.data.get("min_workers", 0):
            raise ValueError("must be at least min_workers")
        return v


class HeadNode(Strict):
    cpus: int = Field(4, ge=1)  # Ray's GCS, Serve's controller and a proxy: no replicas
    memory: str = Field("16Gi", pattern=QUANTITY)


class GatewayPods(Strict):
    replicas: int = Field(2, ge=1)  # one per node at most (host networking)
    cpus: int = Field(2, ge=1)
    memory: str = Field("4Gi", pattern=QUANTITY)
    node_selector: dict[str, str] = Field(default_factory=dict)
    service_type: str = Field("LoadBalancer", pattern="^(ClusterIP|NodePort|LoadBalancer)$")


class ClusterFile(Strict):
    name: str = Field("voxray", pattern=K8S_NAME, max_length=40)
    namespace: str = Field("voxray", pattern=K8S_NAME)
    image: str  # voxray installed, model files under models_dir (`voxray models prepare`)
    ray_version: str = "2.60.0"
    models_dir: str = "/models"
    # A Secret with key `token`: the stage token every replica and gateway reads
    stage_token_secret: str = Field("voxray-stage-token", pattern=K8S_NAME)
    head: HeadNode = Field(default_factory=HeadNode)
    node_types: list[NodeType] = Field(min_length=1)
    gateway: GatewayPods = Field(default_factory=GatewayPods)


def load_cluster(path: Path | str) -> ClusterFile:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of cluster settings")
    try:
        return ClusterFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, data, str(path))) from None


def quantity(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert m is not None and m.group(2) in _UNITS, text
    return float(m.group(1)) * _UNITS[m.group(2)]


ACCELERATOR = "accelerator_type:"  # Ray's resource for a node's GPU model


def _asks(d: DeploymentConfig) -> tuple[str, list[dict[str, float]]]:
    """(the key that asks, what must fit on one node: one dict per unit of placement).
    A placement group packed strictly is one unit; otherwise each bundle is."""
    if d.placement_group_bundles:
        bundles = [dict(b) for b in d.placement_group_bundles]
        if d.placement_group_strategy == "STRICT_PACK":
            total: dict[str, float] = {}
            for b in bundles:
                for k, v in b.items():
                    total[k] = total.get(k, 0.0) + v
            bundles = [total]
        return "placement_group_bundles", bundles
    o = d.ray_actor_options
    ask = {"CPU": SERVE_DEFAULT_NUM_CPUS if o is None or o.num_cpus is None else o.num_cpus,
           "GPU": (o.num_gpus if o else None) or 0.0, "memory": (o.memory if o else None) or 0.0,
           **((o.resources if o else None) or {})}
    if o and o.accelerator_type:
        ask[ACCELERATOR + o.accelerator_type] = 0.001
    return "ray_actor_options", [ask]


def _fits(n: NodeType, ask: dict[str, float]) -> bool:
    offered = {"CPU": n.cpus, "GPU": n.gpus, "memory": quantity(n.memory), **n.resources}
    return all(n.gpu_model == k[len(ACCELERATOR):] if k.startswith(ACCELERATOR)
               else offered.get(k, 0) >= v for k, v in ask.items() if v)


def _shown(ask: dict[str, float]) -> str:
    names = {"CPU": "CPUs", "GPU": "GPUs", "memory": "memory bytes"}
    return ", ".join(f"a {k[len(ACCELERATOR):]}" if k.startswith(ACCELERATOR)
                     else f"{names.get(k, k)} {v:g}" for k, v in ask.items() if v)


def place(config: ServeConfig, cluster: ClusterFile) -> dict[str, str]:
    """The node type each deployment's replicas fit on (the first that offers what its
    ray_actor_options, or its placement group, ask); a ConfigError naming the deployment
    if none does."""
    placed: dict[str, str] = {}
    for app in config.applications:
        for d in app.deployments:
            key, units = _asks(d)
            where = f"applications[{app.name}].deployments[{d.name}]"
            for ask in units:
                fits = [n for n in cluster.node_types if _fits(n, ask)]
                if not fits:
                    whole = " on one node" if d.placement_group_strategy == "STRICT_PACK" \
                        and key == "placement_group_bundles" else ""
                    raise ConfigError(f"{where}.{key} asks for {_shown(ask)}{whole}: no node "
                                      f"type in the cluster file offers that")
                placed.setdefault(where, fits[0].name)
    return placed


def _env(cluster: ClusterFile) -> list[dict[str, Any]]:
    return [{"name": "VOXRAY_STAGE_TOKEN", "valueFrom": {"secretKeyRef": {
                "name": cluster.stage_token_secret, "key": "token"}}},
            {"name": "VOXRAY_MODELS_DIR", "value": cluster.models_dir}]


def _limits(cpus: int, memory: str, gpus: int = 0) -> dict[str, Any]:
    amount: dict[str, Any] = {"cpu": str(cpus), "memory": memory}
    if gpus:
        amount["nvidia.com/gpu"] = str(gpus)
    return {"limits": amount, "requests": dict(amount)}


def serve_config_v2(config: ServeConfig) -> dict[str, Any]:
    """What Serve's REST API deploys: the applications, proxies listening on the pod."""
    schema = to_serve_schema(config)
    schema["http_options"] = {**schema.get("http_options", {}), "host": "0.0.0.0"}
    return schema


def gateway_config(config: ServeConfig) -> dict[str, Any]:
    """The whole validated config, as the gateway pods read it (listening on all
    addresses: the pods use the node's network)."""
    data = config.model_dump(exclude_none=True)
    data["gateway"] = {**data.get("gateway", {}), "host": "0.0.0.0"}
    return data


def render(config: ServeConfig, cluster: ClusterFile, source: str = "") -> list[dict[str, Any]]:
    """The manifests, in the order `kubectl apply -f` should create them."""
    place(config, cluster)
    name, ns = cluster.name, cluster.namespace
    grpc_port = config.grpc_options.port
    http_port = config.http_options.port
    gw_port = int(getattr(config.section("gateway"), "port", 8080))
    labels = {"app.kubernetes.io/name": "voxray", "app.kubernetes.io/instance": name}
    meta = {"namespace": ns, "labels": labels}
    head = {
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
        "template": {"spec": {"containers": [{
            "name": "ray-head", "image": cluster.image, "env": _env(cluster),
            "resources": _limits(cluster.head.cpus, cluster.head.memory),
            # named as KubeRay expects: "serve" and "serve-*" go into <name>-serve-svc
            # (a "metrics" port is added by the operator)
            "ports": [{"name": "gcs-server", "containerPort": 6379},
                      {"name": "dashboard", "containerPort": 8265},
                      {"name": "client", "containerPort": 10001},
                      {"name": "serve", "containerPort": http_port},
                      {"name": "serve-grpc", "containerPort": grpc_port}]}]}}}
    workers = []
    for n in cluster.node_types:
        group: dict[str, Any] = {
            "groupName": n.name, "replicas": n.min_workers, "minReplicas": n.min_workers,
            "maxReplicas": n.max_workers, "rayStartParams": {}}
        if n.resources:
            group["resources"] = {k: f"{v:g}" for k, v in sorted(n.resources.items())}
        spec: dict[str, Any] = {"containers": [{
            "name": "ray-worker", "image": cluster.image, "env": _env(cluster),
            "resources": _limits(n.cpus, n.memory, n.gpus)}]}
        if n.node_selector:
            spec["nodeSelector"] = dict(n.node_selector)
        group["template"] = {"spec": spec}
        workers.append(group)
    rayservice = {
        "apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": name, **meta},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config_v2(config), sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": cluster.ray_version,
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 60},
                "headGroupSpec": head,
                "workerGroupSpecs": workers}}}
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", **meta},
        "data": {"serve_config.yaml": yaml.safe_dump(gateway_config(config), sort_keys=False)}}
    gw_labels = {**labels, "app.kubernetes.io/component": "gateway"}
    pod: dict[str, Any] = {
        "hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet",
        # host networking: two gateways cannot share a node's port
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": gw_labels},
             "topologyKey": "kubernetes.io/hostname"}]}},
        "containers": [{
            "name": "gateway", "image": cluster.image, "env": _env(cluster),
            "command": ["voxray", "gateway",
                        "--stages", f"{name}-serve-svc.{ns}.svc.cluster.local:{grpc_port}",
                        "--config", "/etc/voxray/serve_config.yaml", "--profile", "none"],
            "ports": [{"name": "signalling", "containerPort": gw_port}],
            "readinessProbe": {"httpGet": {"path": "/metrics", "port": gw_port}},
            "resources": _limits(cluster.gateway.cpus, cluster.gateway.memory),
            "volumeMounts": [{"name": "config", "mountPath": "/etc/voxray"}]}],
        "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}]}
    if cluster.gateway.node_selector:
        pod["nodeSelector"] = dict(cluster.gateway.node_selector)
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{name}-gateway", **meta},
        "spec": {"replicas": cluster.gateway.replicas,
                 "selector": {"matchLabels": gw_labels},
                 "template": {"metadata": {"labels": gw_labels}, "spec": pod}}}
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": f"{name}-gateway", **meta},
        "spec": {"type": cluster.gateway.service_type, "selector": gw_labels,
                 # a WHIP session's later requests (DELETE, PATCH) reach its own gateway
                 "sessionAffinity": "ClientIP",
                 "ports": [{"name": "signalling", "port": 80, "targetPort": gw_port,
                            "protocol": "TCP"}]}}
    return [configmap, rayservice, deployment, service]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded configs) as `|` blocks, readable in a diff; no
    anchors for the labels used twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text,
                                   style="|" if "\n" in text else None)


_Dumper.add_representer(str, _str)


def to_yaml(manifests: list[dict[str, Any]], header: str) -> str:
    body = yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, width=100)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body
