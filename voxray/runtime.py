"""Start Serve applications from a validated config, on a local or existing Ray cluster."""

from __future__ import annotations

import errno
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxray.config import ConfigError, ServeConfig, to_serve_schema
from voxray.stage_auth import TOKEN_ENV, ensure_token

log = logging.getLogger(__name__)

# Ray 2.60 turns token authentication on by default; the embedded local
# cluster is private to this machine, so it runs without. Ray starts its workers
# at nice 15, which leaves a replica's `cpu_nice` only 4 steps to yield by (the
# LLM's 10 became 19 against TTS's 15: it still took a third of the cores while
# the first words were synthesised); from 0 the replicas' niceness is what counts.
LOCAL_AUTH_ENV = {"RAY_AUTH_MODE": "disabled"}
LOCAL_RAY_ENV = LOCAL_AUTH_ENV | {"RAY_worker_niceness": "0"}
DIRECT_INGRESS_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}


class DeployError(RuntimeError):
    pass


@dataclass(frozen=True)
class Endpoints:
    grpc: str
    http: str
    metrics: str | None  # Prometheus text format, all Ray and voxray metrics of this node


def check_direct_ingress(config: ServeConfig) -> None:
    """Serve's direct ingress (HAProxy) fails an app whose ingress deployment has a custom
    request router (DEPLOY_FAILED, after the cluster has started): refuse it up front."""
    routed = [f"applications[{a.name}].deployments[{d.name}].request_router_config"
              for a in config.applications for d in a.deployments if d.request_router_config]
    if routed:
        raise ConfigError(
            f"--direct-ingress: {', '.join(routed)} sets a custom request router, which "
            "Serve's HAProxy ingress does not support on an ingress deployment; add "
            "`--profile direct-ingress` (profiles/direct-ingress.yaml drops the router) or "
            "run without --direct-ingress")


def start(
    config: ServeConfig,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    direct_ingress: bool = False,
    metrics_port: int | None = None,
    timeout_s: float = 600,
    progress: Callable[[str], None] = print,
) -> Endpoints:
    """Connect to (or start) Ray, start Serve's proxies and deploy every application."""
    env = dict(LOCAL_RAY_ENV) if address is None else {}
    if direct_ingress:
        check_direct_ingress(config)
        env |= DIRECT_INGRESS_ENV
    os.environ.update(env)  # read by Ray's processes at start
    token = ensure_token()

    import ray
    from ray.serve._private import api as serve_api
    from ray.serve.config import gRPCOptions
    from ray.serve.schema import ServeDeploySchema

    if not ray.is_initialized():
        if address is None:
            progress(f"starting a local Ray cluster ({num_cpus or 'all'} logical CPUs)")
            ray.init(num_cpus=num_cpus, include_dashboard=False, namespace="serve",
                     runtime_env={"env_vars": env}, log_to_driver=False,
                     _metrics_export_port=metrics_port)
        else:
            ray.init(address=address, namespace="serve")
    schema = ServeDeploySchema.model_validate(with_token(to_serve_schema(config), token))
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(),
        grpc_options=gRPCOptions(**schema.grpc_options.model_dump()),
        proxy_location=schema.proxy_location,
    )
    names = [a.name for a in config.applications]
    before = deployed_times(names)
    progress(f"deploying {', '.join(names)}")
    client.deploy_apps(schema, _blocking=False)
    wait_running(names, timeout_s, progress, newer_than=before)
    return Endpoints(
        grpc=f"127.0.0.1:{config.grpc_options.port}",
        http=f"http://127.0.0.1:{config.http_options.port}",
        metrics=f"http://127.0.0.1:{metrics_port}/metrics" if metrics_port else None,
    )


def with_token(schema: dict[str, Any], token: str) -> dict[str, Any]:
    """Every application's replicas get the stage token in their environment."""
    for app in schema.get("applications", []):
        env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env.setdefault(TOKEN_ENV, token)
    return schema


# A port the kernel picks (bind to 0) comes from its ephemeral range, where Ray's
# own gRPC servers and clients get theirs too: one of them can take it before Serve
# binds it. Ray's workers listen on 10002-19999. So ports are drawn between the two.
_RAY_WORKER_PORTS_END = 19999
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    """Nothing listens on `port` on any address, IPv4 or IPv6 (gRPC binds [::])."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, host in families:
        try:
            with socket.socket(family) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
        except OSError as e:
            if family == socket.AF_INET6 and e.errno == errno.EADDRNOTAVAIL:
                continue  # no IPv6 on this host
            return False
    return True


def free_port() -> int:
    """A free TCP port (two Serve instances must not share 9000) that no other process
    on this machine is handed by the kernel meanwhile."""
    low, high = _ephemeral_range()
    ranges = [(_RAY_WORKER_PORTS_END + 1, low - 1), (high + 1, 65535)]
    candidates = [r for r in ranges if r[1] - r[0] >= 1000]
    for _ in range(500 if candidates else 0):
        port = random.randint(*candidates[0])
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # the kernel's range fills the whole port space
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_local_profile(
    apps: list[str] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> Endpoints:
    """The CPU profile (only `apps`, if given) on a local cluster, on free ports."""
    from voxray.config import load_config

    ports = {"grpc_options": {"port": free_port()}, "http_options": {"port": free_port()}}
    config = load_config(profiles=["cpu"], overrides=[ports, *(overrides or [])])
    if apps is not None:
        config.applications = [config.app(name) for name in apps]
    kwargs.setdefault("num_cpus", 4)
    kwargs.setdefault("progress", lambda _: None)
    return start(config, **kwargs)


def deployed_times(names: list[str]) -> dict[str, float]:
    """When each running application was last deployed (none yet: absent)."""
    from ray import serve

    apps = serve.status().applications
    return {n: apps[n].last_deployed_time_s for n in names if n in apps}


def wait_running(names: list[str], timeout_s: float, progress: Callable[[str], None],
                 newer_than: dict[str, float] | None = None) -> None:
    """Until every application is RUNNING; with `newer_than`, RUNNING from a deploy made
    after those times (a re-deploy: the old config's RUNNING does not count)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    last: dict[str, str] = {}
    newer_than = newer_than or {}
    while True:
        apps = serve.status().applications
        states = {n: "NOT_STARTED" if n not in apps else "DEPLOYING" if apps[n]
                  .last_deployed_time_s <= newer_than.get(n, -1.0) else apps[n].status.value
                  for n in names}
        for n, s in states.items():
            if last.get(n) != s:
                progress(f"  {n}: {s}")
            if s == "DEPLOY_FAILED":
                raise DeployError(f"application {n} failed to deploy:\n{apps[n].message}")
        last = states
        if all(s == "RUNNING" for s in states.values()):
            return
        if time.monotonic() > deadline:
            raise DeployError(f"applications not running after {timeout_s:.0f} s: {states}")
        time.sleep(1.0)


def stop() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
