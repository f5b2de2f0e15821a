"""serve_config.yaml as typed data: load, overlay a profile, validate strictly.

Serve's own schema silently drops unknown keys, so a typo such as
`target_ongoing_request` would deploy with a default nobody asked for. Every
model here forbids extra keys, and each application's `args` is validated by
the stage that owns it, so a bad key is named at start-up.

This module imports nothing above it: a stage registers its args model, and the
gateway its section, as entry points (pyproject.toml), found here by name.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from voxray import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"
PROFILES_DIR = REPO_ROOT / "profiles"

PlacementStrategy = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoscalingPolicy(Strict):
    """Serve's custom autoscaling policy: an import path and its constructor's kwargs."""

    policy_function: str = Field(pattern=r"^[\w.]+:\w+$")
    policy_kwargs: dict[str, Any] = Field(default_factory=dict)


class AutoscalingConfig(Strict):
    min_replicas: int = Field(1, ge=0)
    initial_replicas: int | None = Field(None, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)
    metrics_interval_s: float | None = Field(None, gt=0)
    look_back_period_s: float | None = Field(None, gt=0)
    smoothing_factor: float | None = Field(None, gt=0)
    upscale_smoothing_factor: float | None = Field(None, gt=0)
    downscale_smoothing_factor: float | None = Field(None, gt=0)
    upscaling_factor: float | None = Field(None, gt=0)
    downscaling_factor: float | None = Field(None, gt=0)
    upscale_delay_s: float | None = Field(None, ge=0)
    downscale_delay_s: float | None = Field(None, ge=0)
    downscale_to_zero_delay_s: float | None = Field(None, ge=0)
    aggregation_function: Literal["mean", "max", "min"] | None = None
    policy: AutoscalingPolicy | None = None


class RayActorOptions(Strict):
    num_cpus: float | None = Field(None, ge=0)
    num_gpus: float | None = Field(None, ge=0)
    memory: float | None = Field(None, ge=0)
    resources: dict[str, float] | None = None
    accelerator_type: str | None = None
    runtime_env: dict[str, Any] | None = None


class DeploymentConfig(Strict):
    name: str
    num_replicas: int | Literal["auto"] | None = None
    max_ongoing_requests: int | None = Field(None, ge=1)
    max_queued_requests: int | None = None
    autoscaling_config: AutoscalingConfig | None = None
    ray_actor_options: RayActorOptions | None = None
    graceful_shutdown_timeout_s: float | None = Field(None, ge=0)
    graceful_shutdown_wait_loop_s: float | None = Field(None, ge=0)
    health_check_period_s: float | None = Field(None, gt=0)
    health_check_timeout_s: float | None = Field(None, gt=0)
    user_config: dict[str, Any] | None = None
    request_router_config: dict[str, Any] | None = None
    # Serve places a replica in a placement group of these bundles (the replica in the
    # first); the LLM's args set them when its engine spans GPUs.
    placement_group_bundles: list[dict[str, float]] | None = Field(None, min_length=1)
    placement_group_strategy: PlacementStrategy | None = None


class ApplicationConfig(Strict):
    name: str
    route_prefix: str
    import_path: str
    args: dict[str, Any] = Field(default_factory=dict)
    runtime_env: dict[str, Any] | None = None
    deployments: list[DeploymentConfig] = Field(default_factory=list)


class GrpcOptions(Strict):
    port: int = Field(9000, ge=1, le=65535)
    grpc_servicer_functions: list[str]
    request_timeout_s: float | None = Field(None, gt=0)


class HttpOptions(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    request_timeout_s: float | None = Field(None, gt=0)
    keep_alive_timeout_s: float | None = Field(None, gt=0)


class ServeConfig(Strict):
    proxy_location: Literal["EveryNode", "HeadOnly", "Disabled"] = "EveryNode"
    http_options: HttpOptions = Field(default_factory=HttpOptions)
    grpc_options: GrpcOptions
    logging_config: dict[str, Any] | None = None
    applications: list[ApplicationConfig]
    # Not Serve's: the WebRTC gateway's own section (validated by the model the gateway
    # registers; `section("gateway")` is that model).
    gateway: dict[str, Any] = Field(default_factory=dict)
    _sections: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    def section(self, name: str) -> BaseModel:
        """A validated non-Serve section, as its registered model."""
        return self._sections[name]

    def app(self, name: str) -> ApplicationConfig:
        for app in self.applications:
            if app.name == name:
                return app
        raise KeyError(f"no application named {name!r} in the config")


class ConfigError(ValueError):
    """A config file failed validation; the message names the bad key."""


def _label(path: tuple[Any, ...], data: Mapping[str, Any]) -> str:
    """Turn a pydantic location into `applications[asr].deployments[Asr].key`."""
    parts: list[str] = []
    node: Any = data
    for key in path:
        if isinstance(key, int) and isinstance(node, list):
            item = node[key] if key < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            parts[-1] += f"[{name}]" if name else f"[{key}]"
            node = item
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts)


def format_validation_error(err: ValidationError, data: Mapping[str, Any], source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {_label(tuple(e['loc']), data)}: {what}")
    return "\n".join(lines)


def merge(base: Any, overlay: Any) -> Any:
    """Deep-merge `overlay` onto `base`.

    Lists of named items (applications, deployments) are overlaid by `name`,
    given in the overlay as a mapping from name to fields. A `null` in the
    overlay deletes the key.
    """
    if isinstance(base, list) and _named_items(base) and isinstance(overlay, list):
        # serve_config.yaml's own form (`- name: asr ...`): the same merge by name
        if not _named_items(overlay):
            raise ConfigError("a list that overlays applications or deployments must give "
                              "each item a `name` (or use the form `asr: {...}`)")
        overlay = {item["name"]: {k: v for k, v in item.items() if k != "name"}
                   for item in overlay}
    if isinstance(base, list) and isinstance(overlay, Mapping):
        by_name = {item.get("name"): i for i, item in enumerate(base) if isinstance(item, dict)}
        items = copy.deepcopy(base)
        for name, fields in overlay.items():
            if name not in by_name:
                known = ", ".join(str(n) for n in by_name)
                raise ConfigError(f"overlay names {name!r}, which the base config does not "
                                  f"have (it has: {known})")
            items[by_name[name]] = merge(items[by_name[name]], fields)
        return items
    if isinstance(base, Mapping) and isinstance(overlay, Mapping):
        out = dict(copy.deepcopy(base))
        for key, value in overlay.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    return copy.deepcopy(overlay)


def _named_items(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, Mapping) and "name" in i for i in items)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such file") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


DEFAULT_PROFILE = "cpu"  # this repository's machines have no GPU


def resolve_profiles(given: list[str] | None) -> list[str]:
    """The overlays `--profile` means: the CPU profile first, then each given one on top
    (`--profile test` is CPU + test); `none` among them leaves the CPU profile out
    (`--profile none`: serve_config.yaml alone, as on a GPU cluster). Each once, in order."""
    given = list(given or [])
    chain = given if "none" in given else [DEFAULT_PROFILE, *given]
    out: list[str] = []
    for p in chain:
        if p != "none" and p not in out:
            out.append(p)
    return out


def shown(path: Path | str) -> str:
    """A config file's path as messages show it: relative to the repository if inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(REPO_ROOT)) if p.is_absolute() else str(p)
    except ValueError:
        return str(p)


def describe(path: Path | str, profiles: list[str]) -> str:
    """`serve_config.yaml + profiles/cpu.yaml + ...`: what a config was made of."""
    return " + ".join([shown(path), *(shown(profile_path(p)) for p in profiles)])


def profile_path(profile: str) -> Path:
    p = Path(profile)
    return p if p.suffix in (".yaml", ".yml") else PROFILES_DIR / f"{profile}.yaml"


APP_ARGS_GROUP = "voxray.app_args"  # name: an application's import_path module
SECTIONS_GROUP = "voxray.config_sections"  # name: a top-level key of the config


@cache
def _registered(group: str) -> dict[str, type[BaseModel]]:
    """The models registered in an entry-point group, by name."""
    return {ep.name: ep.load() for ep in entry_points(group=group)}


def _args_model(import_path: str) -> type[BaseModel] | None:
    return _registered(APP_ARGS_GROUP).get(import_path.split(":", 1)[0])


def load_config(
    path: Path | str = DEFAULT_CONFIG,
    profiles: list[str] | None = None,
    overrides: list[Mapping[str, Any]] | None = None,
) -> ServeConfig:
    """Load serve_config.yaml, apply profile overlays then in-code overrides, validate."""
    path = Path(path)
    data: dict[str, Any] = _read_yaml(path)
    source = shown(path)
    for profile in profiles or []:
        p = profile_path(profile)
        try:
            data = merge(data, _read_yaml(p))
        except ConfigError as e:
            raise ConfigError(f"{shown(p)}: {e}") from None
        source += f" + {shown(p)}"
    for extra in overrides or []:
        data = merge(data, extra)
    try:
        config = ServeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, data, source)) from None
    for name, section in _registered(SECTIONS_GROUP).items():
        raw = getattr(config, name, None)
        try:
            config._sections[name] = section.model_validate(raw or {})
        except ValidationError as e:
            msg = format_validation_error(e, raw or {}, source)
            raise ConfigError(msg.replace("\n  ", f"\n  {name}.")) from None
    for i, app in enumerate(config.applications):
        model = _args_model(app.import_path)
        if model is None:
            continue
        try:
            args = model.model_validate(app.args)
        except ValidationError as e:
            wrapped = {"applications": data["applications"]}
            msg = format_validation_error(e, app.args, source)
            prefix = _label(("applications", i, "args"), wrapped)
            raise ConfigError(msg.replace("\n  ", f"\n  {prefix}.")) from None
        # A stage whose args imply deployment options fills the unset ones (the LLM: a
        # placement group for an engine that spans GPUs).
        derive = getattr(args, "derived_deployment_options", None)
        if derive is not None:
            try:
                derived = derive({d.name: d.model_dump(exclude_none=True)
                                  for d in app.deployments})
            except ValueError as e:
                raise ConfigError(f"{source}: invalid configuration\n  "
                                  f"applications[{app.name}].{e}") from None
            for name, options in derived.items():
                d = next((d for d in app.deployments if d.name == name), None)
                if d is None:
                    d = DeploymentConfig(name=name)
                    app.deployments.append(d)
                for key, value in options.items():
                    if getattr(d, key) is None:
                        setattr(d, key, value)
        # A stage whose args fix a deployment option says so (Moshi: slots).
        fixed: dict[str, dict[str, Any]] = getattr(args, "fixed_deployment_options", dict)()
        for d in app.deployments:
            for key, want in fixed.get(d.name, {}).items():
                got = getattr(d, key)
                if got is not None and got != want:
                    where = f"applications[{app.name}].deployments[{d.name}].{key}"
                    raise ConfigError(f"{source}: invalid configuration\n  {where}: must be "
                                      f"{want} (from the app's args) or unset, not {got}")
    return config


def to_serve_schema(config: ServeConfig) -> dict[str, Any]:
    """The dict Serve's ServeDeploySchema accepts (unset fields left to Serve's defaults)."""
    return config.model_dump(exclude_none=True, exclude={"gateway"})
