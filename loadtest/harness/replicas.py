"""Replica counts per deployment over time, from Serve's own status (`serve.status()`).

Runs on its own thread (the Ray calls block). In-process when Ray is already
initialised (the tests); otherwise it connects to the cluster at `address`
("auto": the local one `voxray up` started) as a driver in namespace "serve".
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


def serve_replicas() -> dict[str, dict[str, int]]:
    """{"app/Deployment": {"RUNNING": n, "STARTING": m, ...}} from serve.status()."""
    from ray import serve

    out: dict[str, dict[str, int]] = {}
    for app_name, app in serve.status().applications.items():
        for dep_name, dep in app.deployments.items():
            out[f"{app_name}/{dep_name}"] = {str(k.value if hasattr(k, "value") else k): int(v)
                                             for k, v in dep.replica_states.items()}
    return out


def connect(address: str) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # as voxray's local cluster runs
    # (off the main thread Ray warns that it cannot set a SIGTERM handler: not needed here)
    logging.getLogger("ray").setLevel(logging.ERROR)
    ray.init(address=address, namespace="serve", log_to_driver=False,
             logging_level=logging.WARNING)


class ReplicaPoller:
    def __init__(self, address: str | None, interval_s: float = 1.0) -> None:
        self.address = address
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []  # {"t_s", "running", "states"}
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._connected_here = False
        self.connected = threading.Event()  # the driver is connected (or cannot be)

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread = threading.Thread(target=self._run, name="replica-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import ray

        try:
            if self.address is None:
                self.error = "not asked for (--ray-address none)"
                return
            if not ray.is_initialized():
                connect(self.address)
                self._connected_here = True
        except Exception as e:  # noqa: BLE001 - the run goes on without replica counts
            self.error = f"could not reach the Ray cluster at {self.address}: {e}"
            return
        finally:
            self.connected.set()
        while not self._stop.is_set():
            try:
                states = serve_replicas()
            except Exception as e:  # noqa: BLE001
                self.error = f"serve.status() failed: {e}"
            else:
                self.samples.append({
                    "t_s": round(time.monotonic() - self._t0, 2),
                    "running": {d: s.get("RUNNING", 0) for d, s in states.items()},
                    "states": states})
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._connected_here:
            import ray

            ray.shutdown()  # only our driver connection; the cluster keeps running

    def summary(self) -> dict[str, Any]:
        """Per deployment: replicas at the start, the most RUNNING, at the end, and when
        it first went above its starting count (scale-up) and back (scale-down)."""
        out: dict[str, Any] = {}
        if not self.samples:
            return out
        names = sorted({d for s in self.samples for d in s["running"]})
        for d in names:
            series = [(s["t_s"], s["running"].get(d, 0)) for s in self.samples]
            start = series[0][1]
            up = next((t for t, n in series if n > start), None)
            down = next((t for t, n in series if up is not None and t > up and n <= start), None)
            out[d] = {"start": start, "max": max(n for _, n in series), "end": series[-1][1],
                      "first_scale_up_s": up, "back_down_s": down}
        return out
