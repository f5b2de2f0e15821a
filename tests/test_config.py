import subprocess
import sys
from pathlib import Path

import pytest
from ray.serve.schema import ServeDeploySchema

from voxray.config import ConfigError, load_config, merge, to_serve_schema


def test_production_config_and_cpu_profile_are_valid_serve_configs() -> None:
    for profiles in ([], ["cpu"], ["cpu", "test"]):
        config = load_config(profiles=profiles)
        ServeDeploySchema.model_validate(to_serve_schema(config))


def test_cpu_profile_overlays_the_production_config() -> None:
    gpu = load_config().app("asr")
    cpu = load_config(profiles=["cpu"]).app("asr")
    assert gpu.args["device"] == "cuda" and gpu.deployments[0].ray_actor_options.num_gpus
    assert cpu.args["device"] == "cpu" and cpu.args["model"] == "base"
    assert cpu.deployments[0].ray_actor_options.num_gpus is None  # removed by `null`
    assert cpu.deployments[0].ray_actor_options.num_cpus == 0.5
    # untouched keys come from the production file
    assert cpu.deployments[0].autoscaling_config.upscale_delay_s == 10


def test_unknown_serve_key_is_named() -> None:
    bad = {"applications": {"asr": {"deployments": {"AsrDeployment": {
        "autoscaling_config": {"target_ongoing_request": 3}}}}}}
    with pytest.raises(ConfigError) as e:
        load_config(profiles=["cpu"], overrides=[bad])
    assert ("applications[asr].deployments[AsrDeployment].autoscaling_config."
            "target_ongoing_request: unknown key") in str(e.value)


def test_unknown_or_bad_stage_arg_is_named() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(profiles=["cpu"], overrides=[{"applications": {"asr": {"args": {
            "beam": 3, "device": "gpu"}}}}])
    assert "applications[asr].args.beam: unknown key" in str(e.value)
    assert "applications[asr].args.device:" in str(e.value)


def test_cpu_cannot_take_a_gpu_dtype() -> None:
    with pytest.raises(ConfigError, match="compute_type 'float16' needs device cuda"):
        load_config(overrides=[{"applications": {"asr": {"args": {"device": "cpu"}}}}])


def test_overlay_naming_a_missing_application_fails() -> None:
    with pytest.raises(ConfigError, match="'nope'"):
        load_config(overrides=[{"applications": {"nope": {"args": {}}}}])


def test_merge_rules() -> None:
    base = {"a": {"b": 1, "c": 2}, "items": [{"name": "x", "v": 1}, {"name": "y", "v": 2}]}
    out = merge(base, {"a": {"c": None, "d": 3}, "items": {"y": {"v": 5}}})
    assert out == {"a": {"b": 1, "d": 3}, "items": [{"name": "x", "v": 1}, {"name": "y", "v": 5}]}
    assert base["a"] == {"b": 1, "c": 2}  # inputs untouched


def test_check_config_command_names_the_bad_key(tmp_path: Path) -> None:
    profile = tmp_path / "typo.yaml"
    profile.write_text("grpc_options:\n  prot: 9001\n")
    run = subprocess.run(
        [sys.executable, "-m", "voxray.cli", "check-config", "--profile", "cpu",
         "--profile", str(profile)], capture_output=True, text=True, check=False)
    assert run.returncode == 2
    assert "grpc_options.prot: unknown key" in run.stderr
    ok = subprocess.run([sys.executable, "-m", "voxray.cli", "check-config"],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "asr:" in ok.stdout
