import subprocess
import sys
from pathlib import Path

import pytest
from ray.serve.schema import ServeDeploySchema

from voxray import REPO_ROOT
from voxray.config import ConfigError, load_config, merge, resolve_profiles, to_serve_schema


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


def test_the_readme_check_config_example_as_written(tmp_path: Path) -> None:
    """The README's example, run where a user would have written my-typo.yaml."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("$ .venv/bin/voxray check-config --profile my-typo.yaml\n", 1)[1]
    expected = block.split("```", 1)[0].strip().splitlines()
    (tmp_path / "my-typo.yaml").write_text(
        "applications:\n  asr:\n    deployments:\n      AsrDeployment:\n"
        "        autoscaling_config:\n          target_ongoing_request: 2\n")
    run = subprocess.run([str(REPO_ROOT / ".venv/bin/voxray"), "check-config", "--profile",
                          "my-typo.yaml"], cwd=tmp_path, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == expected, run.stderr


def test_profiles_compose_on_the_cpu_profile() -> None:
    assert resolve_profiles(None) == ["cpu"]
    assert resolve_profiles(["test"]) == ["cpu", "test"]  # not CUDA ASR on a CPU box
    assert resolve_profiles(["cpu", "test", "cpu"]) == ["cpu", "test"]
    assert resolve_profiles(["none"]) == []
    assert resolve_profiles(["none", "x.yaml"]) == ["x.yaml"]
    asr = load_config(profiles=resolve_profiles(["test"])).app("asr")
    assert asr.args["device"] == "cpu" and asr.args["model"] == "tiny.en"


def test_an_overlay_in_the_config_files_own_list_form_merges(tmp_path: Path) -> None:
    listed = {"applications": [{"name": "asr", "args": {"model": "tiny.en"}}]}
    mapped = {"applications": {"asr": {"args": {"model": "tiny.en"}}}}
    a = load_config(profiles=["cpu"], overrides=[listed]).app("asr")
    b = load_config(profiles=["cpu"], overrides=[mapped]).app("asr")
    assert a == b and a.route_prefix == "/asr" and a.args["device"] == "cpu"
    profile = tmp_path / "listed.yaml"
    profile.write_text("applications:\n  - name: asr\n    args: {model: tiny.en}\n"
                       "  - name: nope\n    args: {}\n")
    with pytest.raises(ConfigError, match=r"listed.yaml: overlay names 'nope'.*it has: asr"):
        load_config(profiles=["cpu", str(profile)])
    with pytest.raises(ConfigError, match="each item a `name`"):
        load_config(profiles=["cpu"], overrides=[{"applications": [{"args": {}}]}])


def test_direct_ingress_with_a_custom_router_is_refused_before_a_cluster_starts(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from voxray import runtime
    from voxray.cli import main

    def start(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cluster was started before the config was refused")

    monkeypatch.setattr(runtime, "start", start)
    assert main(["up", "--direct-ingress", "--no-gateway", "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "applications[llm].deployments[LlmDeployment].request_router_config" in err, err
    assert "--profile direct-ingress" in err
    # the profile it names drops the router, so the check passes
    config = load_config(profiles=resolve_profiles(["direct-ingress"]))
    assert config.app("llm").deployments[0].request_router_config is None
    runtime.check_direct_ingress(config)
    assert config.app("llm").args == load_config(profiles=["cpu"]).app("llm").args


def _llm(args: dict[str, object], actor: dict[str, object] | None = None) -> dict[str, object]:
    deployment: dict[str, object] = {"name": "LlmDeployment"}
    if actor is not None:
        deployment["ray_actor_options"] = actor
    return {"applications": [{"name": "llm", "args": args, "deployments": [deployment]}]}


def test_an_llm_over_several_gpus_gets_them_as_a_placement_group() -> None:
    config = load_config(overrides=[_llm({"tensor_parallel_size": 4},
                                         {"num_gpus": None, "num_cpus": 4,
                                          "accelerator_type": "H100"})])
    (d,) = config.app("llm").deployments
    h100 = {"GPU": 1.0, "accelerator_type:H100": 0.001}
    assert d.placement_group_bundles == [h100 | {"CPU": 4.0}, h100, h100, h100]
    assert d.placement_group_strategy == "STRICT_PACK"
    ServeDeploySchema.model_validate(to_serve_schema(config))  # Serve's own checks, bundle 0 too
    # the engine runs Ray's executor, which takes those bundles
    from deployments.llm.config import LlmArgs
    from deployments.llm.engine import engine_kwargs

    args = LlmArgs.model_validate(config.app("llm").args)
    assert engine_kwargs(args, "/m")["distributed_executor_backend"] == "ray"
    assert "distributed_executor_backend" not in engine_kwargs(LlmArgs(), "/m")  # one GPU, CPU
    # pipeline stages count too, and the strategy is the config's
    config = load_config(overrides=[_llm({"tensor_parallel_size": 2, "placement_strategy": "PACK",
                                          "engine_kwargs": {"pipeline_parallel_size": 2}},
                                         {"num_gpus": 0})])
    (d,) = config.app("llm").deployments
    assert len(d.placement_group_bundles or []) == 4 and d.placement_group_strategy == "PACK"
    # on CPU, or on one GPU, no group
    cpu = load_config(profiles=["cpu"], overrides=[_llm({"tensor_parallel_size": 2})])
    assert cpu.app("llm").deployments[0].placement_group_bundles is None
    assert load_config().app("llm").deployments[0].placement_group_bundles is None


def test_an_llm_over_several_gpus_refuses_what_would_not_place_naming_the_key() -> None:
    # serve_config.yaml's LlmDeployment asks for num_gpus: 1 (its engine on one GPU)
    with pytest.raises(ConfigError, match=r"applications\[llm\]\.deployments\[LlmDeployment\]"
                                          r"\.ray_actor_options\.num_gpus: must be 0 or unset"):
        load_config(overrides=[_llm({"tensor_parallel_size": 2})])
    with pytest.raises(ConfigError, match=r"distributed_executor_backend must be 'ray'"):
        load_config(overrides=[_llm({"tensor_parallel_size": 2,
                                     "engine_kwargs": {"distributed_executor_backend": "mp"}},
                                    {"num_gpus": 0})])
    with pytest.raises(ConfigError, match=r"placement_strategy"):
        load_config(overrides=[_llm({"placement_strategy": "TIGHT"})])


def test_a_call_has_no_time_cap_unless_one_is_configured() -> None:
    from gateway.config import gateway_config

    for profiles in ([], ["cpu"], ["cpu", "test"]):
        cfg = gateway_config(load_config(profiles=profiles))
        assert cfg.max_session_s is None, profiles  # the idle timeout still ends a silent call
        assert cfg.idle_timeout_s > 0
    capped = load_config(overrides=[{"gateway": {"max_session_s": 3600}}])
    assert gateway_config(capped).max_session_s == 3600
