"""`python -m loadtest` (and `voxray loadtest`): load-test a running voxray with WebRTC callers.

A Locust-style command line over an asyncio-native harness: every simulated user is a real
aiortc caller on one shared event loop (aiortc is asyncio; Locust's gevent workers and
asyncio do not mix). Loopback targets only, bounded users and run time.

    python -m loadtest --url http://127.0.0.1:8080 --scenario loadtest/scenarios/pipeline.yaml \\
        --users 4 --spawn-rate 1 --run-time 60s --headless --csv out/run --json out/run.json \\
        --html out/run.html --fail-ttfat-p95-ms 2000 --gpu-price-per-hour 2.5

Exit code: 0 when every threshold passed, 1 when one failed (or, with
--exit-code-on-error, when any turn or session failed), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import re
import socket
import sys
from urllib.parse import urlparse

MAX_USERS = 64
MAX_RUN_TIME_S = 3600.0


class UsageError(ValueError):
    pass


def parse_duration(value: str) -> float:
    """Locust's run-time syntax: 90, 90s, 2m, 1h30m, 1m30s."""
    value = value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise argparse.ArgumentTypeError(f"not a duration: {value!r} (e.g. 90s, 2m, 1h30m)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_target(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"--url must be http(s)://host:port, not {url!r}")
    if not is_loopback_host(parsed.hostname):
        raise UsageError(f"--url {url}: this harness loads only addresses on this machine "
                         "(loopback, e.g. 127.0.0.1)")
    return url.rstrip("/")


def check_ray_address(address: str) -> str | None:
    if address.lower() == "none":
        return None
    if address == "auto":
        return address
    host = address.split("://")[-1].rsplit(":", 1)[0]
    if not is_loopback_host(host):
        raise UsageError(f"--ray-address {address}: loopback only (or 'auto', or 'none')")
    return address


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", "-H", "--host", default="http://127.0.0.1:8080",
                    help="the gateway (loopback only)")
    ap.add_argument("--scenario", "-f", "--locustfile", default="loadtest/scenarios/pipeline.yaml",
                    help="scenario YAML (see loadtest/scenarios/pipeline.yaml)")
    ap.add_argument("--users", "-u", type=int, default=1, help=f"peak users, 1..{MAX_USERS}")
    ap.add_argument("--spawn-rate", "-r", type=float, default=1.0, help="users started per second")
    ap.add_argument("--run-time", "-t", type=parse_duration, default=60.0,
                    help=f"e.g. 60s, 5m (at most {MAX_RUN_TIME_S / 60:.0f}m), from the start")
    ap.add_argument("--stop-timeout", type=parse_duration, default=30.0,
                    help="at the run time users finish their turn and hang up within this")
    ap.add_argument("--headless", action="store_true",
                    help="accepted for Locust compatibility; this harness has no web UI")
    ap.add_argument("--only-summary", action="store_true", help="no live stats table")
    ap.add_argument("--csv", metavar="PREFIX", help="write PREFIX_stats.csv, _turns.csv, "
                    "_history.csv, _failures.csv")
    ap.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    ap.add_argument("--html", metavar="FILE", help="write a plot of TTFAT and replicas over time")
    ap.add_argument("--ray-address", default="auto",
                    help="Ray cluster to read replica counts from (serve.status()); 'none': skip")
    ap.add_argument("--seed", type=int, default=1)
    th = ap.add_argument_group("thresholds (exit code 1 when one fails)")
    th.add_argument("--fail-ttfat-p95-ms", type=float, help="caller-side TTFAT p95")
    th.add_argument("--fail-ttfat-p99-ms", type=float, help="caller-side TTFAT p99")
    th.add_argument("--fail-gateway-ttfat-p95-ms", type=float)
    th.add_argument("--fail-error-rate", type=float, help="failed turns / turns, e.g. 0.01")
    th.add_argument("--fail-dropped", type=int, metavar="N", help="more than N dropped sessions")
    th.add_argument("--fail-unexplained", type=int, metavar="N",
                    help="more than N turns that failed with no event saying why")
    th.add_argument("--exit-code-on-error", type=int, default=0,
                    help="exit with this code if any turn or session failed (Locust: 1)")
    ch = ap.add_argument_group("chaos and soak")
    ch.add_argument("--kill", metavar="APPS",
                    help="kill a replica of these Serve applications in turn (e.g. asr,llm,tts) "
                    "every --kill-every, as a lost node would; the report counts what it did")
    ch.add_argument("--kill-every", type=parse_duration, default=30.0,
                    help="time between kills (default 30s); the first comes after the same")
    ch.add_argument("--soak", action="store_true",
                    help="sample the RSS of the gateway and of every replica through the run "
                    "and report its growth per 10 minutes after --soak-warmup")
    ch.add_argument("--soak-interval", type=parse_duration, default=10.0)
    ch.add_argument("--soak-warmup", type=parse_duration, default=300.0)
    co = ap.add_argument_group("cost")
    co.add_argument("--gpu-price-per-hour", type=float,
                    help="price of one GPU (or of the machine the stages run on) per hour")
    co.add_argument("--gpus", type=float, default=1.0, help="GPUs the measured capacity uses")
    co.add_argument("--capacity-sessions", type=float,
                    help="concurrent sessions within the SLO, from a sweep (default: this run's)")
    co.add_argument("--api-price-per-minute", type=float, help="a per-minute API to compare")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    ns = ap.parse_args(argv)
    try:
        url = check_target(ns.url)
        ray_address = check_ray_address(ns.ray_address)
        if not 1 <= ns.users <= MAX_USERS:
            raise UsageError(f"--users must be 1..{MAX_USERS}")
        if not 0 < ns.run_time <= MAX_RUN_TIME_S:
            raise UsageError(f"--run-time must be above 0 and at most {MAX_RUN_TIME_S:.0f} s")
        if ns.spawn_rate <= 0:
            raise UsageError("--spawn-rate must be above 0")
        kill = None
        if ns.kill is not None:
            from loadtest.harness.faults import KillPlan, parse_targets

            if ray_address is None:
                raise UsageError("--kill needs the Ray cluster (not --ray-address none)")
            if ns.kill_every < 1:
                raise UsageError("--kill-every must be at least 1 s")
            try:
                kill = KillPlan(parse_targets(ns.kill), ns.kill_every, ns.kill_every,
                                until_s=ns.run_time)
            except ValueError as e:
                raise UsageError(str(e)) from None
        if ns.soak and (ns.soak_interval < 1 or ns.soak_warmup >= ns.run_time):
            raise UsageError("--soak needs --soak-interval of 1 s or more and --soak-warmup "
                             "shorter than --run-time")
        from loadtest.harness.scenario import ScenarioError, load_scenario
        from loadtest.harness.stats import output_path

        for out in (ns.json, ns.html, ns.csv and f"{ns.csv}_stats.csv"):
            try:  # before the run, not after its report
                out and output_path(out)
            except OSError as e:
                raise UsageError(f"cannot write {out}: {e}") from None

        try:
            scenario = load_scenario(ns.scenario)
        except ScenarioError as e:
            raise UsageError(str(e)) from None
    except UsageError as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return 2

    from loadtest.harness import plot
    from loadtest.harness.report import Cost, Thresholds
    from loadtest.harness.runner import RunOptions, run
    from loadtest.harness.stats import write_csv, write_json

    logging.getLogger("aioice").setLevel(logging.ERROR)
    # The target is on this machine: offer it 127.0.0.1 (aioice never offers loopback
    # itself, so in a loopback-only namespace no caller would connect).
    from voxray.ice import offer_only

    offer_only(["127.0.0.1"])
    thresholds = Thresholds(ttfat_p95_ms=ns.fail_ttfat_p95_ms, ttfat_p99_ms=ns.fail_ttfat_p99_ms,
                            gateway_ttfat_p95_ms=ns.fail_gateway_ttfat_p95_ms,
                            error_rate=ns.fail_error_rate, max_dropped=ns.fail_dropped,
                            max_unexplained=ns.fail_unexplained)
    cost = None
    if ns.gpu_price_per_hour is not None:
        cost = Cost(ns.gpu_price_per_hour, ns.gpus, ns.api_price_per_minute,
                    ns.capacity_sessions)
    opts = RunOptions(url=url, users=ns.users, spawn_rate=ns.spawn_rate, run_time_s=ns.run_time,
                      stop_timeout_s=ns.stop_timeout,
                      print_every_s=0 if ns.only_summary else 2.0, ray_address=ray_address,
                      seed=ns.seed, kill=kill,
                      soak_interval_s=ns.soak_interval if ns.soak else None,
                      soak_warmup_s=ns.soak_warmup)
    print(f"loadtest: {ns.users} users ({ns.spawn_rate:g}/s) for {ns.run_time:.0f} s against "
          f"{url}, scenario {scenario.name}", flush=True)
    stats, report = asyncio.run(run(scenario, opts, thresholds, cost))
    print()
    print(report["text"], flush=True)
    if ns.json:
        write_json(ns.json, report)
    if ns.csv:
        write_csv(ns.csv, stats, report)
    if ns.html:
        plot.render(stats, report, ns.html)
    if not report["thresholds"]["passed"]:
        return 1
    c = report["counters"]
    if ns.exit_code_on_error and (c["turns_failed"] + c["barge_ins_failed"] + c["sessions_failed"]
                                  + c["sessions_dropped"]):
        return int(ns.exit_code_on_error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
