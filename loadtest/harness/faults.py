"""Chaos: kill a replica of a named deployment on a schedule while the run goes on.

A kill is `ray.kill(actor, no_restart=True)`, as in a lost node: the replica's process
ends at once, its streams fail, and Serve's controller starts a new one. Runs on its
own thread (the Ray calls block), beside the replica poller, which has connected the
driver (see replicas.py).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KillPlan:
    targets: tuple[str, ...]  # Serve application names (asr, llm, tts, moshi), in turn
    every_s: float
    first_after_s: float
    until_s: float = float("inf")  # none at or after this (the run's end)


def parse_targets(value: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise ValueError("--kill needs one or more application names, e.g. asr,llm,tts")
    return names


def replica_actors(app: str | None = None) -> list[str]:
    """Named actors of the application's replicas (`SERVE_REPLICA::app#Deployment#id`);
    of every application's when `app` is None. (The actor list, not serve.status(): that
    one is the replica poller's, and two threads must not read it at once.)"""
    import ray

    prefix = "SERVE_REPLICA::" + (f"{app}#" if app is not None else "")
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(prefix))


def check_targets(targets: tuple[str, ...]) -> None:
    """Each target must be a Serve application with replicas: a misspelt one is an error
    at the start, not a run with no faults in it."""
    apps = {name.split("::", 1)[1].split("#", 1)[0] for name in replica_actors()}
    unknown = [t for t in targets if t not in apps]
    if unknown:
        raise ValueError(f"--kill {','.join(unknown)}: no such Serve application "
                         f"(running: {', '.join(sorted(apps)) or 'none'})")


class ReplicaKiller:
    """Kills one replica of the next target every `every_s`; `kills` records each as
    {"t_s", "app", "replica"} (or "error" when there was none to kill)."""

    def __init__(self, plan: KillPlan, ready: threading.Event) -> None:
        self.plan = plan
        self.kills: list[dict[str, Any]] = []
        self.error: str | None = None
        self._ready = ready  # set once the driver is connected
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._thread = threading.Thread(target=self._run, name="replica-killer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import ray

        if not self._ready.wait(60) or not ray.is_initialized():
            self.error = "no Ray connection: no replica was killed"
            return
        try:
            check_targets(self.plan.targets)
        except Exception as e:  # noqa: BLE001 - said in the report; the run goes on
            self.error = str(e)
            return
        n = 0
        next_at = self._t0 + self.plan.first_after_s
        while next_at - self._t0 < self.plan.until_s and not self._stop.wait(
                max(0.0, next_at - time.monotonic())):
            app = self.plan.targets[n % len(self.plan.targets)]
            n += 1
            next_at += self.plan.every_s
            t_s = round(time.monotonic() - self._t0, 2)
            try:
                victims = replica_actors(app)
                if not victims:
                    self.kills.append({"t_s": t_s, "app": app, "error": "no replica running"})
                    continue
                ray.kill(ray.get_actor(victims[0], namespace="serve"), no_restart=True)
            except Exception as e:  # noqa: BLE001
                self.kills.append({"t_s": t_s, "app": app, "error": f"{type(e).__name__}: {e}"})
                continue
            log.info("killed %s at %.1f s", victims[0], t_s)
            self.kills.append({"t_s": t_s, "app": app, "replica": victims[0]})

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
