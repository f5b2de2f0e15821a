"""The final report: percentiles, counters, replicas, thresholds, and cost per
conversation-minute from a price per GPU-hour and the measured capacity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.harness.stats import TURN_KINDS, RunStats, TurnRecord, percentiles


@dataclass
class Thresholds:
    ttfat_p95_ms: float | None = None  # caller-side
    ttfat_p99_ms: float | None = None
    gateway_ttfat_p95_ms: float | None = None
    error_rate: float | None = None  # failed turns / all turns
    max_dropped: int | None = None  # sessions ended by the gateway or an error
    max_unexplained: int | None = None  # failed turns with no event saying why


@dataclass
class Cost:
    gpu_price_per_hour: float
    gpus: float = 1.0  # GPUs (or machines) the stages use at this capacity
    api_price_per_minute: float | None = None
    capacity_sessions: float | None = None  # measured elsewhere (a sweep); else this run's


def sustained_sessions(stats: RunStats, ramp_end_s: float) -> float:
    """Mean open sessions from the end of the ramp to the end of the run."""
    steady = [o for t, _, o in stats.load if t >= ramp_end_s] or [o for _, _, o in stats.load]
    return round(float(np.mean(steady)), 2) if steady else 0.0


def check(thresholds: Thresholds, metrics: dict[str, Any], counters: dict[str, Any]
          ) -> list[dict[str, Any]]:
    """One entry per threshold set: name, limit, value, passed."""
    out = []

    def add(name: str, limit: float | None, value: float | None, below: bool = True) -> None:
        if limit is None:
            return
        passed = value is not None and (value <= limit if below else value >= limit)
        out.append({"name": name, "limit": limit, "value": value, "passed": passed,
                    "op": "<=" if below else ">="})

    add("caller TTFAT p95 ms", thresholds.ttfat_p95_ms, metrics["client_ttfat_ms"]["p95"])
    add("caller TTFAT p99 ms", thresholds.ttfat_p99_ms, metrics["client_ttfat_ms"]["p99"])
    add("gateway TTFAT p95 ms", thresholds.gateway_ttfat_p95_ms,
        metrics["gateway.ttfat_ms"]["p95"])
    all_turns = (counters["turns_ok"] + counters["turns_failed"] + counters["barge_ins_ok"]
                 + counters["barge_ins_failed"])
    failed = counters["turns_failed"] + counters["barge_ins_failed"]
    add("turn error rate", thresholds.error_rate, failed / all_turns if all_turns else None)
    add("dropped sessions", thresholds.max_dropped, counters["sessions_dropped"])
    add("unexplained failed turns", thresholds.max_unexplained, counters["turns_unexplained"])
    if out:  # a run that answered nothing (no caller got through) passes no threshold
        add("turns answered", 1, counters["turns_ok"] + counters["barge_ins_ok"], below=False)
    return out


def cost_section(cost: Cost, stats: RunStats, sustained: float, slo_met: bool | None
                 ) -> dict[str, Any]:
    hourly = cost.gpu_price_per_hour * cost.gpus
    minutes = stats.session_seconds / 60
    wall_h = stats.now() / 3600
    capacity = cost.capacity_sessions
    source = "--capacity-sessions"
    if capacity is None:
        capacity, source = sustained, "this run's sustained sessions"
    out: dict[str, Any] = {
        "gpu_price_per_hour": cost.gpu_price_per_hour, "gpus": cost.gpus,
        "capacity_sessions": capacity, "capacity_source": source,
        "capacity_met_slo": slo_met,
        # every replica busy with sessions all the hour
        "per_conversation_minute_at_capacity": round(hourly / 60 / capacity, 5)
        if capacity else None,
        # what this run actually served for the time it held the machines
        "per_conversation_minute_this_run": round(hourly * wall_h / minutes, 5)
        if minutes else None,
    }
    if cost.api_price_per_minute is not None and out["per_conversation_minute_at_capacity"]:
        out["api_price_per_minute"] = cost.api_price_per_minute
        out["self_hosted_vs_api"] = round(
            out["per_conversation_minute_at_capacity"] / cost.api_price_per_minute, 3)
    return out


def fault_section(stats: RunStats, kills: list[dict[str, Any]], error: str | None
                  ) -> dict[str, Any]:
    """What the kills did: the turns under way at a kill (from the utterance's start to
    the end of its reply) against the rest."""
    at = [k["t_s"] for k in kills if "replica" in k]
    crossed = [t for t in stats.turns if any(t.t_s <= k <= t.end_s for k in at)]
    others = [t for t in stats.turns if t not in crossed]

    def ttfat(turns: list[TurnRecord]) -> dict[str, float | int | None]:
        return percentiles([t.client_ttfat_ms for t in turns
                            if t.ok and t.kind in TURN_KINDS and t.client_ttfat_ms is not None])

    return {"kills": kills, "error": error, "replicas_killed": len(at),
            "turns_across_a_kill": len(crossed),
            "turns_across_a_kill_failed": sum(not t.ok for t in crossed),
            "ttfat_across_a_kill_ms": ttfat(crossed), "ttfat_other_turns_ms": ttfat(others)}


def build(stats: RunStats, *, scenario: dict[str, Any], run: dict[str, Any],
          thresholds: Thresholds, cost: Cost | None, replicas: dict[str, Any],
          faults: dict[str, Any] | None = None, memory: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    metrics = stats.metric_table()
    counters = stats.counters()
    checks = check(thresholds, metrics, counters)
    sustained = sustained_sessions(stats, run["ramp_s"])
    slo = [c for c in checks if c["name"].startswith("caller TTFAT p95")]
    lag = stats.loop_lag_ms
    report: dict[str, Any] = {
        "scenario": scenario, "run": run | {"duration_s": round(stats.now(), 1),
                                            "sustained_sessions": sustained},
        "metrics": metrics, "counters": counters, "errors": dict(stats.errors.most_common(20)),
        "thresholds": {"ttfat_p95_ms": thresholds.ttfat_p95_ms, "checks": checks,
                       "passed": all(c["passed"] for c in checks)},
        "replicas": replicas,
        "harness": {"loop_lag_p95_ms": round(float(np.percentile(lag, 95)), 1) if lag else None,
                    "loop_lag_max_ms": round(max(lag), 1) if lag else None},
    }
    if faults is not None:
        report["faults"] = fault_section(stats, faults["kills"], faults["error"])
    if memory is not None:
        report["memory"] = memory
    if cost is not None:
        report["cost"] = cost_section(cost, stats, sustained,
                                      slo[0]["passed"] if slo else None)
    report["text"] = text(report)
    return report


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.0f}"


def text(r: dict[str, Any]) -> str:
    run, c = r["run"], r["counters"]
    lines = [f"voxray load test: scenario {r['scenario']['name']} ({r['scenario']['mode']}), "
             f"{run['users']} users at {run['spawn_rate']}/s, {run['duration_s']:.0f} s against "
             f"{run['url']}", "",
             f"{'metric':<28}{'count':>7}{'p50':>8}{'p90':>8}{'p95':>8}{'p99':>8}{'max':>8}"]
    for name, m in r["metrics"].items():
        label = {"client_ttfat_ms": "TTFAT, caller-side",
                 "barge_in_stop_ms": "barge-in stop (gateway)",
                 "barge_in_heard_ms": "barge-in stop (caller)"}.get(
            name, name.replace("gateway.", "gateway ").replace("_ms", ""))
        lines.append(f"{label:<28}{m['count']:>7}" + "".join(
            f"{_ms(m[k]):>8}" for k in ("p50", "p90", "p95", "p99", "max")))
    lines += ["", f"sessions: {c['sessions_started']} started, {c['sessions_completed']} "
              f"completed, {c['sessions_refused']} refused (gateway full), "
              f"{c['sessions_failed']} failed to connect, {c['sessions_dropped']} dropped; "
              f"peak {c['peak_open_sessions']} open, {run['sustained_sessions']} sustained",
              f"turns: {c['turns_ok']} ok, {c['turns_failed']} failed "
              f"({c['turns_unexplained']} with no event saying why); barge-ins: "
              f"{c['barge_ins_ok']} ok, {c['barge_ins_failed']} failed, "
              f"{c.get('barge_ins_after_the_answer', 0)} spoken as the answer ended; underruns: "
              f"{c['underruns']} in {c['turns_with_underruns']} turns; "
              f"{c['conversation_minutes']} conversation-minutes"]
    for what, n in r["errors"].items():
        lines.append(f"  error x{n}: {what}")
    summary = r["replicas"].get("summary") or {}
    if summary:
        lines.append("replicas (RUNNING, from serve.status()):")
        for d, s in summary.items():
            extra = ""
            if s["first_scale_up_s"] is not None:
                extra = f"; scaled up at {s['first_scale_up_s']:.0f} s"
                if s["back_down_s"] is not None:
                    extra += f", back down at {s['back_down_s']:.0f} s"
            lines.append(f"  {d:<28} start {s['start']}, max {s['max']}, end {s['end']}{extra}")
    elif r["replicas"].get("error"):
        lines.append(f"replicas: not recorded ({r['replicas']['error']})")
    if "faults" in r:
        f = r["faults"]
        lines.append(f"faults: {f['replicas_killed']} replicas killed ("
                     + ", ".join(f"{k['app']} at {k['t_s']:.0f} s" + (
                         f" [{k['error']}]" if "error" in k else "") for k in f["kills"])
                     + f"); {f['turns_across_a_kill']} turns under way at a kill, "
                     f"{f['turns_across_a_kill_failed']} of them failed; TTFAT p50/p95 "
                     f"{_ms(f['ttfat_across_a_kill_ms']['p50'])}/"
                     f"{_ms(f['ttfat_across_a_kill_ms']['p95'])} ms across a kill, "
                     f"{_ms(f['ttfat_other_turns_ms']['p50'])}/"
                     f"{_ms(f['ttfat_other_turns_ms']['p95'])} ms otherwise")
        if f["error"]:
            lines.append(f"  faults: {f['error']}")
    if "memory" in r:
        m = r["memory"]
        lines.append(f"memory (RSS, growth per 10 min after {m['warmup_s']:.0f} s of warm-up):")
        for label, p in m["processes"].items():
            growth = p["growth_mb_per_10min"]
            lines.append(f"  {label:<40} {p['first_mb']:>7.0f} -> {p['last_mb']:>7.0f} MB, "
                         + ("growth -" if growth is None else f"growth {growth:+.1f} MB"))
        if m["error"]:
            lines.append(f"  memory: {m['error']}")
    h = r["harness"]
    if h["loop_lag_p95_ms"] is not None:
        lines.append(f"harness event-loop lag p95 {h['loop_lag_p95_ms']:.0f} ms, "
                     f"max {h['loop_lag_max_ms']:.0f} ms (high lag inflates caller-side times)")
    if "cost" in r:
        k = r["cost"]
        lines.append(f"cost: {k['gpus']:g} GPU x ${k['gpu_price_per_hour']:.2f}/h, capacity "
                     f"{k['capacity_sessions']} sessions ({k['capacity_source']}"
                     + ("" if k["capacity_met_slo"] is None else
                        ", TTFAT SLO " + ("met" if k["capacity_met_slo"] else "NOT met")) + ")")
        at_cap = k["per_conversation_minute_at_capacity"]
        this = k["per_conversation_minute_this_run"]
        lines.append("  per conversation-minute: "
                     + (f"${at_cap:.4f} at capacity" if at_cap else "- at capacity")
                     + (f", ${this:.4f} at this run's load" if this else ""))
        if "self_hosted_vs_api" in k:
            lines.append(f"  vs an API at ${k['api_price_per_minute']:.4f}/min: "
                         f"{k['self_hosted_vs_api']:.2f}x")
    checks = r["thresholds"]["checks"]
    for ch in checks:
        value = "-" if ch["value"] is None else f"{ch['value']:.3g}"
        lines.append(f"threshold {ch['name']} {ch.get('op', '<=')} {ch['limit']:g}: {value} "
                     f"{'PASS' if ch['passed'] else 'FAIL'}")
    return "\n".join(lines)
