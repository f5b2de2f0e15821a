"""Which processes and threads hold the cores: per-thread CPU time sampled from /proc (Linux).

Run as its own process, so that sampling costs the measured processes no GIL time:

    python -m loadtest.cpu_sampler --out samples.jsonl [--interval 0.1]
    python -m loadtest.cpu_sampler --summary samples.jsonl   # cores per process, whole run

Each line is one sample: {"t": time.monotonic(), "cpu": {"process/thread tid": seconds}},
the CPU seconds each thread used since the previous sample (threads that used none are left
out). Every process is read each time, and the threads of those that used CPU since the
last sample. `attribute` splits those seconds over a time window, so a
benchmark can say, per turn, where the cores went between the end of the user's speech and
the first audible sample of the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")
_RAY_NAME = re.compile(r"^ray::(?:ServeReplica:(?P<app>[^:]+):[^.\s]+|(?P<actor>[\w]+))")


def process_label(pid: int, cmdline: list[str], comm: str) -> str:
    """A short, stable name: the Serve app of a replica, vLLM's processes, the gateway."""
    first = cmdline[0] if cmdline else comm
    if (m := _RAY_NAME.match(first)) is not None:
        return m.group("app") or m.group("actor")
    if first.startswith("VLLM::"):
        return "llm " + first[6:]
    joined = " ".join(cmdline)
    if "voxray.cli gateway" in joined or " gateway " in f" {joined} ":
        return "gateway"
    for name in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py"):
        if name in joined:
            return name.removesuffix(".py")
    if "bench_call" in joined or "voxray loadtest" in joined or "loadtest" in joined:
        return "caller"
    return comm or f"pid {pid}"


def _stat_ticks(path: str) -> tuple[str, int] | None:
    """(comm, utime + stime) of a /proc stat file."""
    try:
        with open(path, "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    close = raw.rfind(")")
    comm = raw[raw.find("(") + 1 : close]
    fields = raw[close + 2 :].split()
    return comm, int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


class Sampler:
    def __init__(self) -> None:
        self.me = os.getpid()
        self._labels: dict[int, str] = {}
        self._process_ticks: dict[int, int] = {}
        self._thread_ticks: dict[tuple[int, int], int] = {}

    def _label(self, pid: int, comm: str) -> str:
        if pid not in self._labels:
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                raw = b""
            cmdline = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
            self._labels[pid] = process_label(pid, cmdline, comm)
        return self._labels[pid]

    def sample(self) -> dict[str, float]:
        used: dict[str, float] = defaultdict(float)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == self.me:
                continue
            pid = int(entry.name)
            got = _stat_ticks(f"/proc/{pid}/stat")
            if got is None:
                continue
            comm, ticks = got
            before = self._process_ticks.get(pid)
            self._process_ticks[pid] = ticks
            if before == ticks:
                continue  # no thread of it ran: its threads need no reading
            label = self._label(pid, comm)
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                t = _stat_ticks(f"/proc/{pid}/task/{tid}/stat")
                if t is None:
                    continue
                key = (pid, int(tid))
                # a thread not seen in a process seen before is new: all its time is
                # since (its process's threads are read whenever the process ran)
                prev = self._thread_ticks.get(key, None if before is None else 0)
                self._thread_ticks[key] = t[1]
                if prev is not None and t[1] > prev:
                    used[f"{label}/{t[0]} {tid}"] += (t[1] - prev) * TICK_S
        return dict(used)


def attribute(samples: Iterable[dict[str, object]], start: float, end: float
              ) -> dict[str, float]:
    """CPU seconds per 'process/thread' within [start, end]: each sample's seconds are spread
    evenly over the interval since the sample before it."""
    out: dict[str, float] = defaultdict(float)
    prev_t: float | None = None
    for s in samples:
        t = _time(s)
        if prev_t is not None and t > prev_t:
            overlap = min(t, end) - max(prev_t, start)
            if overlap > 0:
                share = overlap / (t - prev_t)
                for key, secs in s["cpu"].items():  # type: ignore[attr-defined]
                    out[key] += secs * share
        prev_t = t
    return dict(out)


def _time(sample: dict[str, object]) -> float:
    return float(sample["t"])  # type: ignore[arg-type]


def load(path: str) -> list[dict[str, object]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summary(samples: list[dict[str, object]]) -> dict[str, float]:
    """Cores each process held on average from the first sample to the last, busiest first,
    and the cores left idle ("idle")."""
    if len(samples) < 2:
        return {}
    start, end = _time(samples[0]), _time(samples[-1])
    span = end - start
    used = attribute(samples, start, end)
    per_process: dict[str, float] = defaultdict(float)
    for key, secs in used.items():
        per_process[key.split("/", 1)[0]] += secs / span
    out = dict(sorted(per_process.items(), key=lambda kv: -kv[1]))
    out["idle"] = len(os.sched_getaffinity(0)) - sum(per_process.values())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="sample until stopped (SIGINT or SIGTERM), into this file")
    what.add_argument("--summary", metavar="FILE",
                      help="print the cores each process held over a file's whole span")
    ap.add_argument("--interval", type=float, default=0.1)
    a = ap.parse_args()
    if a.summary:
        samples = load(a.summary)
        span = _time(samples[-1]) - _time(samples[0]) if samples else 0.0
        print(f"{span:.0f} s sampled; cores held on average:")
        for name, cores in summary(samples).items():
            print(f"  {name:24s} {cores:5.2f}")
        return 0
    if not 0.01 <= a.interval <= 60:
        ap.error(f"--interval {a.interval:g}: give 0.01 to 60 seconds")
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sampler = Sampler()
    sampler.sample()  # the baseline: every thread's ticks so far
    with open(a.out, "w") as f:
        next_at = time.monotonic()
        while not stop:
            next_at += a.interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            used = sampler.sample()
            f.write(json.dumps({"t": time.monotonic(), "cpu": used}) + "\n")
            f.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
