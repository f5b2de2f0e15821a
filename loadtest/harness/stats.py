"""What a run measured: one record per turn, counters, percentiles, CSV/JSON writers."""

from __future__ import annotations

import csv
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
# Records that answer "how long until the agent spoke": pipeline turns and duplex utterances.
TURN_KINDS = ("turn", "duplex")
GATEWAY_STAGES = ("ttfat_ms", "end_of_turn_ms", "asr_final_ms", "reply_started_at_ms",
                  "llm_first_token_ms", "tts_first_audio_ms", "held_ms", "playout_ms")


@dataclass
class TurnRecord:
    """One turn as one caller lived it. Times `t_s` are seconds since the run started."""

    t_s: float
    user: int
    session: int
    kind: str  # "turn", "barge_in" or "duplex"
    ok: bool
    client_ttfat_ms: float | None = None  # caller's last voiced sample sent -> first audible reply
    gateway: dict[str, float] = field(default_factory=dict)  # the gateway's turn_metrics
    barge_in_stop_ms: float | None = None  # gateway: user speech start -> agent audio paused
    barge_in_heard_ms: float | None = None  # caller: speech start -> last agent audio heard
    underruns: int = 0
    reply_s: float = 0.0  # audible reply heard, first to last audible sample
    error: str = ""
    end_s: float = 0.0  # when the turn was over for the caller (seconds since the start)
    # an event during the turn in which the gateway said what went wrong
    # ("error", "stage_retry", "session_ended"): a failed turn without one is unexplained
    said_why: str = ""
    # a barge-in spoken as the answer ended: the agent had nothing left to stop
    missed: bool = False


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """count, p50/p90/p95/p99, min, max, mean (None where there are no values)."""
    out: dict[str, float | int | None] = {"count": len(values)}
    arr = np.asarray(values, dtype=float)
    for q in PERCENTILES:
        out[f"p{q}"] = round(float(np.percentile(arr, q)), 1) if len(arr) else None
    for name, fn in (("min", np.min), ("max", np.max), ("mean", np.mean)):
        out[name] = round(float(fn(arr)), 1) if len(arr) else None
    return out


@dataclass
class RunStats:
    started_mono: float = field(default_factory=time.monotonic)
    started_unix: float = field(default_factory=time.time)
    turns: list[TurnRecord] = field(default_factory=list)
    sessions_started: int = 0
    sessions_completed: int = 0
    sessions_refused: int = 0  # 503 from a full gateway
    sessions_failed: int = 0  # could not connect for another reason
    sessions_dropped: int = 0  # ended by the gateway or an error before the caller hung up
    session_seconds: float = 0.0  # conversation time of every session, summed
    errors: Counter[str] = field(default_factory=Counter)
    users: int = 0  # running now
    open_sessions: int = 0
    peak_open_sessions: int = 0
    loop_lag_ms: list[float] = field(default_factory=list)  # this process's own event-loop delay
    # (t_s, users, open sessions) every second
    load: list[tuple[float, int, int]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started_mono

    def error(self, what: str) -> None:
        self.errors[what[:200]] += 1

    def session_open(self) -> None:
        self.sessions_started += 1
        self.open_sessions += 1
        self.peak_open_sessions = max(self.peak_open_sessions, self.open_sessions)

    def session_closed(self, seconds: float, dropped: bool) -> None:
        self.open_sessions -= 1
        self.session_seconds += seconds
        if dropped:
            self.sessions_dropped += 1
        else:
            self.sessions_completed += 1

    # -- aggregates ---------------------------------------------------------------------

    def values(self, key: str, since_s: float = 0.0) -> list[float]:
        out: list[float] = []
        for t in self.turns:
            if t.t_s < since_s or not t.ok:
                continue
            if key == "client_ttfat_ms" and t.kind in TURN_KINDS and t.client_ttfat_ms is not None:
                out.append(t.client_ttfat_ms)
            elif key.startswith("gateway.") and t.kind in TURN_KINDS and key[8:] in t.gateway:
                out.append(float(t.gateway[key[8:]]))
            elif key == "barge_in_stop_ms" and t.barge_in_stop_ms is not None:
                out.append(t.barge_in_stop_ms)
            elif key == "barge_in_heard_ms" and t.barge_in_heard_ms is not None:
                out.append(t.barge_in_heard_ms)
        return out

    def metric_table(self) -> dict[str, dict[str, float | int | None]]:
        keys = ["client_ttfat_ms", *(f"gateway.{s}" for s in GATEWAY_STAGES),
                "barge_in_stop_ms", "barge_in_heard_ms"]
        return {k: percentiles(self.values(k)) for k in keys}

    def counters(self) -> dict[str, Any]:
        turns = [t for t in self.turns if t.kind in TURN_KINDS]
        barge = [t for t in self.turns if t.kind == "barge_in"]
        return {
            "turns_ok": sum(t.ok for t in turns), "turns_failed": sum(not t.ok for t in turns),
            # failed, and no event from the gateway said why: what a caller must never meet
            "turns_unexplained": sum(not t.ok and not t.said_why and not t.missed
                                     for t in self.turns),
            "barge_ins_ok": sum(t.ok for t in barge),
            "barge_ins_failed": sum(not t.ok and not t.missed for t in barge),
            "barge_ins_after_the_answer": sum(t.missed for t in barge),
            "underruns": sum(t.underruns for t in self.turns),
            "turns_with_underruns": sum(t.underruns > 0 for t in self.turns),
            "sessions_started": self.sessions_started,
            "sessions_completed": self.sessions_completed,
            "sessions_refused": self.sessions_refused, "sessions_failed": self.sessions_failed,
            "sessions_dropped": self.sessions_dropped,
            "peak_open_sessions": self.peak_open_sessions,
            "conversation_minutes": round(self.session_seconds / 60, 2),
            "errors": sum(self.errors.values()),
        }

    # -- live table ---------------------------------------------------------------------

    def live_line(self, header: bool = False) -> str:
        cols = ("time", "users", "sessions", "turns", "fails", "refused", "underrun",
                "TTFAT p50", "p95", "gw p50", "lag p95")
        if header:
            return " ".join(f"{c:>9}" for c in cols)
        caller = self.values("client_ttfat_ms")
        gw = self.values("gateway.ttfat_ms")
        c = self.counters()

        def fmt(vals: list[float], q: float) -> str:
            return f"{np.percentile(vals, q):.0f}" if vals else "-"

        lag = self.loop_lag_ms[-50:]
        cells = (f"{self.now():.0f}s", self.users, self.open_sessions, c["turns_ok"],
                 c["turns_failed"] + c["barge_ins_failed"] + c["sessions_dropped"]
                 + c["sessions_failed"], c["sessions_refused"], c["underruns"],
                 fmt(caller, 50), fmt(caller, 95), fmt(gw, 50), fmt(lag, 95))
        return " ".join(f"{str(x):>9}" for x in cells)


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def output_path(path: str | Path) -> Path:
    """`path`, with the folders it needs made (`--json out/run.json` on a fresh clone)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def write_json(path: str | Path, report: dict[str, Any]) -> None:
    output_path(path).write_text(json.dumps(_clean(report), indent=2) + "\n")


def write_csv(prefix: str, stats: RunStats, report: dict[str, Any]) -> list[str]:
    """Locust-style files: PREFIX_stats.csv (percentiles per metric), PREFIX_turns.csv (every
    turn), PREFIX_history.csv (load and replicas per second), PREFIX_failures.csv."""
    written = []
    path = f"{prefix}_stats.csv"
    output_path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "count", *(f"p{q}" for q in PERCENTILES), "min", "max", "mean"])
        for name, row in report["metrics"].items():
            w.writerow([name, row["count"], *(row[f"p{q}"] for q in PERCENTILES),
                        row["min"], row["max"], row["mean"]])
        for name, value in report["counters"].items():
            w.writerow([name, value])
    written.append(path)
    path = f"{prefix}_turns.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        names = [n for n in asdict(TurnRecord(0, 0, 0, "", True)) if n != "gateway"]
        w.writerow([*names, *(f"gateway_{s}" for s in GATEWAY_STAGES)])
        for t in stats.turns:
            row = asdict(t)
            w.writerow([row[n] for n in names]
                       + [t.gateway.get(s, "") for s in GATEWAY_STAGES])
    written.append(path)
    path = f"{prefix}_history.csv"
    deployments = sorted({d for s in report["replicas"]["samples"] for d in s["running"]})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "users", "open_sessions", *(f"replicas:{d}" for d in deployments)])
        samples = report["replicas"]["samples"]
        for t_s, users, open_ in stats.load:
            last = [s for s in samples if s["t_s"] <= t_s + 0.5]
            running = last[-1]["running"] if last else {}
            w.writerow([round(t_s, 1), users, open_, *(running.get(d, "") for d in deployments)])
    written.append(path)
    path = f"{prefix}_failures.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["error", "occurrences"])
        for what, n in stats.errors.most_common():
            w.writerow([what, n])
    written.append(path)
    return written
