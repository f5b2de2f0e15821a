"""`voxray render kuberay`: the checked-in example is what the command renders, its
RayService is what KubeRay's CRD accepts, its serveConfigV2 what Serve and voxray accept,
and every deployment fits a worker group. No Kubernetes here: what a cluster would do with
the manifests (scheduling, the operator's reconciling) is not checked."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from voxray import REPO_ROOT
from voxray.cli import main
from voxray.config import ConfigError, load_config
from voxray.kuberay import ClusterFile, load_cluster, place, quantity, render

EXAMPLE = REPO_ROOT / "deploy/kuberay"
CRD = Path(__file__).parent / "data/kuberay/ray.io_rayservices.yaml.gz"


def rendered(tmp_path: Path, *extra: str) -> tuple[int, str]:
    out = tmp_path / "out.yaml"
    rc = main(["render", "kuberay", "--cluster", "deploy/kuberay/cluster.yaml",
               "--out", str(out), *extra])
    return rc, out.read_text() if out.exists() else ""


def by_kind(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(text)}


def test_the_checked_in_example_is_what_the_command_renders(tmp_path: Path) -> None:
    rc, text = rendered(tmp_path)
    assert rc == 0
    assert text == (EXAMPLE / "rayservice.yaml").read_text(), (
        "deploy/kuberay/rayservice.yaml is stale: run .venv/bin/voxray render kuberay "
        "--cluster deploy/kuberay/cluster.yaml --out deploy/kuberay/rayservice.yaml")
    assert sorted(by_kind(text)) == ["ConfigMap", "Deployment", "RayService", "Service"]


def test_the_rayservice_is_valid_under_kuberays_crd() -> None:
    crd = yaml.safe_load(gzip.decompress(CRD.read_bytes()))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = version["schema"]["openAPIV3Schema"]
    service = by_kind((EXAMPLE / "rayservice.yaml").read_text())["RayService"]
    jsonschema.validate(service, schema)
    # the schema can fail: a field KubeRay does not have is refused
    spec = service["spec"]["rayClusterConfig"]
    bad = {**service, "spec": {**service["spec"], "rayClusterConfig": {
        **spec, "headGroupSpec": {**spec["headGroupSpec"], "rayStartParams": {"x": 1}}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_serve_config_v2_is_what_serve_and_voxray_accept(tmp_path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    docs = by_kind((EXAMPLE / "rayservice.yaml").read_text())
    v2 = yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])
    assert ServeDeploySchema.model_validate(v2).http_options.host == "0.0.0.0"
    # voxray's strict validation, stage args included, of both embedded configs
    (tmp_path / "v2.yaml").write_text(docs["RayService"]["spec"]["serveConfigV2"])
    served = load_config(tmp_path / "v2.yaml", [])
    (tmp_path / "full.yaml").write_text(docs["ConfigMap"]["data"]["serve_config.yaml"])
    full = load_config(tmp_path / "full.yaml", [])
    production = load_config(REPO_ROOT / "serve_config.yaml", [])
    assert [a.name for a in served.applications] == [a.name for a in production.applications]
    assert served.app("llm").args == production.app("llm").args
    gateway: Any = full.section("gateway")
    assert gateway.host == "0.0.0.0"
    # the gateway reaches the stages through KubeRay's serve service, port serve-grpc
    gw = docs["Deployment"]["spec"]["template"]["spec"]
    command = gw["containers"][0]["command"]
    assert command[command.index("--stages") + 1] == "voxray-serve-svc.voxray.svc.cluster" \
        f".local:{production.grpc_options.port}"
    head = docs["RayService"]["spec"]["rayClusterConfig"]["headGroupSpec"]
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]
             ["ports"]}
    assert ports["serve-grpc"] == production.grpc_options.port
    assert gw["hostNetwork"] is True


def test_every_deployment_fits_a_worker_group() -> None:
    docs = by_kind((EXAMPLE / "rayservice.yaml").read_text())
    cluster = docs["RayService"]["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replicas there
    groups = []
    for g in cluster["workerGroupSpecs"]:
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        groups.append((float(limits["cpu"]), float(limits.get("nvidia.com/gpu", 0)),
                       quantity(limits["memory"])))
        assert g["minReplicas"] <= g["maxReplicas"]
    assert any(g["minReplicas"] == 0 for g in cluster["workerGroupSpecs"])  # an elastic pool
    v2 = yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])
    for app in v2["applications"]:
        for d in app["deployments"]:
            o = d.get("ray_actor_options", {})
            need = (o.get("num_cpus", 1.0), o.get("num_gpus", 0.0), o.get("memory", 0.0))
            assert any(all(have >= want for have, want in zip(g, need, strict=True))
                       for g in groups), (app["name"], d["name"], need, groups)


def test_a_deployment_no_node_type_holds_is_named() -> None:
    data = yaml.safe_load((EXAMPLE / "cluster.yaml").read_text())
    data["node_types"] = [{"name": "cpu", "cpus": 8, "memory": "32Gi", "max_workers": 4}]
    config = load_config(REPO_ROOT / "serve_config.yaml", [])
    with pytest.raises(ConfigError, match=r"applications\[asr\]\.deployments\[AsrDeployment\]"
                                          r"\.ray_actor_options asks for CPUs 2, GPUs 0\.25"):
        render(config, ClusterFile.model_validate(data))
    # the CPU profile's replicas want no GPU: they fit that node type
    cpu = load_config(REPO_ROOT / "serve_config.yaml", ["cpu"])
    assert set(place(cpu, ClusterFile.model_validate(data)).values()) == {"cpu"}


def test_a_bad_cluster_file_is_refused_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load((EXAMPLE / "cluster.yaml").read_text())
    data["node_types"][0]["gpu_modle"] = "L4"
    data["node_types"][1]["max_workers"] = -1
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_cluster(tmp_path / "c.yaml")
    assert "node_types[gpu-l4].gpu_modle: unknown key" in str(e.value)
    assert "node_types[gpu-l4-burst].max_workers" in str(e.value)
    assert main(["render", "kuberay", "--cluster", str(tmp_path / "c.yaml")]) == 2
    assert "gpu_modle" in capsys.readouterr().err
    (tmp_path / "junk.yaml").write_bytes(b"\xff\xfe: [")
    with pytest.raises(ConfigError, match="junk.yaml"):
        load_cluster(tmp_path / "junk.yaml")


def test_a_profile_renders_its_overlay(tmp_path: Path) -> None:
    rc, text = rendered(tmp_path, "--profile", "cpu")
    assert rc == 0
    v2 = yaml.safe_load(by_kind(text)["RayService"]["spec"]["serveConfigV2"])
    asr = next(a for a in v2["applications"] if a["name"] == "asr")
    assert asr["args"]["device"] == "cpu"
    assert "profiles/cpu.yaml" in text.splitlines()[0]


def test_a_tensor_parallel_llm_needs_a_node_type_with_all_its_gpus() -> None:
    data = yaml.safe_load((EXAMPLE / "cluster.yaml").read_text())
    tp = {"applications": [{"name": "llm", "args": {"tensor_parallel_size": 2},
                            "deployments": [{"name": "LlmDeployment",
                                             "ray_actor_options": {"num_gpus": 0}}]}]}
    config = load_config(REPO_ROOT / "serve_config.yaml", [], [tp])
    # the example's nodes hold one L4 each: a strictly packed group of two fits none
    with pytest.raises(ConfigError, match=r"deployments\[LlmDeployment\]\.placement_group_bundles "
                                          r"asks for GPUs 2, CPUs 4 on one node"):
        render(config, ClusterFile.model_validate(data))
    data["node_types"].append({"name": "gpu-l4x2", "cpus": 24, "memory": "96Gi", "gpus": 2,
                               "gpu_model": "L4", "max_workers": 2})
    placed = place(config, ClusterFile.model_validate(data))
    assert placed["applications[llm].deployments[LlmDeployment]"] == "gpu-l4x2"
