"""The Grafana dashboard and Prometheus config under deploy/ query what voxray exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ray
import yaml

from gateway.metrics import GatewayMetrics
from voxray import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "voxray.json"
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",), "gauge": ("",)}
_METRIC = re.compile(r"\b((?:voxray|ray)_[a-z0-9_]+)\b")
_RAY_METRIC = re.compile(r"\b(Counter|Gauge|Histogram)\(\s*\"([a-z0-9_]+)\"")


def gateway_series() -> dict[str, set[str]]:
    """Series names the gateway's /metrics shows, with their label names."""
    metrics = GatewayMetrics()
    out: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = set(getattr(metrics, _attr_of(metrics, family.name))._labelnames)
        for suffix in SUFFIXES[family.type]:
            out[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def _attr_of(metrics: GatewayMetrics, name: str) -> str:
    return next(a for a, m in vars(metrics).items() if getattr(m, "_name", None) == name)


def stage_series() -> set[str]:
    """What Ray exports of the stages' own metrics (ray_ + the name) and of Serve's."""
    out: set[str] = set()
    for source in REPO_ROOT.glob("deployments/*/metrics.py"):
        for kind, name in _RAY_METRIC.findall(source.read_text()):
            for suffix in SUFFIXES[kind.lower()] if kind == "Histogram" else ("",):
                out.add(f"ray_{name}{suffix}")
    serve = Path(ray.__file__).parent / "serve" / "_private"
    for source in serve.glob("*.py"):
        out |= {f"ray_{n}" for n in re.findall(r"\"(serve_[a-z0-9_]+)\"", source.read_text())}
    return out


def test_every_panel_queries_metrics_voxray_exports() -> None:
    dash = json.loads(DASHBOARD.read_text())
    gateway, stages = gateway_series(), stage_series()
    assert "ray_voxray_asr_final_latency_ms_bucket" in stages  # the scan finds them
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 10
    queried: set[str] = set()
    for p in panels:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            for name in _METRIC.findall(t["expr"]):
                queried.add(name)
                assert name in gateway or name in stages, (p["title"], name)
                if name in gateway:  # and it is grouped by labels the metric has
                    for by in re.findall(r"by \(([^)]*)\)", t["expr"]):
                        labels = {b.strip() for b in by.split(",")}
                        assert labels <= gateway[name], (p["title"], name, labels)
    # what the issue asks to see: TTFAT, stage times, barge-in, sessions, replicas, Moshi
    for needed in ("voxray_ttfat_ms_bucket", "voxray_turn_stage_ms_bucket",
                   "voxray_barge_in_stop_ms_bucket", "voxray_sessions",
                   "voxray_sessions_ended_total", "ray_serve_deployment_replica_healthy",
                   "ray_voxray_moshi_active_slots", "ray_voxray_moshi_late_frames_total"):
        assert needed in queried, needed


def test_the_prometheus_config_scrapes_the_gateway_and_ray() -> None:
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["voxray-gateway"]["metrics_path"] == "/metrics"
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    (files,) = [c["files"] for c in jobs["ray"]["file_sd_configs"]]
    assert files[0].endswith(PROMETHEUS_SERVICE_DISCOVERY_FILE)
