"""Soak: the resident memory of the gateway and of every Serve replica through a run,
and how fast each grows once warm.

Processes are found on this machine (the harness loads loopback targets only): the
gateway as the process listening on the target's port, the replicas by the titles Ray
gives them (`ray::ServeReplica:app:Deployment`). A replica's figure includes its child
processes (vLLM's engine core runs in one). A replica killed and replaced is a new
series: growth is measured per process, never across a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import psutil

log = logging.getLogger(__name__)

MB = 1024 * 1024
REPLICA_TITLE = "ray::ServeReplica:"


def listening_pid(port: int) -> int | None:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port \
                and conn.pid:
            return int(conn.pid)
    return None


def _rss_with_children(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return int(total)


def replica_processes() -> dict[int, str]:
    """pid -> "app/Deployment" of every Serve replica process on this machine."""
    out: dict[int, str] = {}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if cmd.startswith(REPLICA_TITLE):
            # while a method runs the title ends in `.method`
            app, _, dep = cmd[len(REPLICA_TITLE):].split()[0].partition(":")
            out[proc.pid] = f"{app}/{dep.split('.')[0]}"
    return out


def growth_mb_per_10min(series: list[tuple[float, float]], warmup_s: float) -> float | None:
    """Least-squares slope of RSS (MB) over time after the warm-up, per 10 minutes;
    None when under a minute of samples is left."""
    warm = [(t, mb) for t, mb in series if t >= warmup_s]
    if len(warm) < 3 or warm[-1][0] - warm[0][0] < 60:
        return None
    t, mb = np.array(warm).T
    return round(float(np.polyfit(t, mb, 1)[0]) * 600, 2)


class RssSampler:
    def __init__(self, gateway_port: int, interval_s: float, warmup_s: float) -> None:
        self.gateway_port = gateway_port
        self.interval_s = interval_s
        self.warmup_s = warmup_s
        # "gateway" or "app/Deployment pid N" -> [(t_s, rss MB)]
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self, gateway: psutil.Process | None) -> None:
        t_s = round(time.monotonic() - self._t0, 1)
        procs: dict[str, int] = {}
        if gateway is not None:
            procs["gateway"] = gateway.pid
        procs |= {f"{name} pid {pid}": pid for pid, name in replica_processes().items()}
        for label, pid in procs.items():
            try:
                rss = _rss_with_children(psutil.Process(pid))
            except psutil.Error:
                continue  # it ended between the scan and the read
            self.series.setdefault(label, []).append((t_s, round(rss / MB, 1)))

    def _run(self) -> None:
        try:
            pid = listening_pid(self.gateway_port)
            gateway = psutil.Process(pid) if pid else None
        except psutil.Error as e:  # another user's gateway: its sockets are not ours to see
            pid, gateway = None, None
            self.error = f"cannot see which process listens on port {self.gateway_port}: {e}"
        if gateway is None and self.error is None:
            self.error = f"no process on this machine listens on port {self.gateway_port}"
        while not self._stop.is_set():
            try:
                self._sample(gateway)
            except Exception as e:  # noqa: BLE001 - the run goes on without this sample
                self.error = f"sampling failed: {type(e).__name__}: {e}"
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for label, series in sorted(self.series.items()):
            warm = [mb for t, mb in series if t >= self.warmup_s]
            out[label] = {"samples": len(series), "first_mb": series[0][1],
                          "warm_mb": warm[0] if warm else None, "last_mb": series[-1][1],
                          "max_mb": max(mb for _, mb in series),
                          "growth_mb_per_10min": growth_mb_per_10min(series, self.warmup_s)}
        return out
