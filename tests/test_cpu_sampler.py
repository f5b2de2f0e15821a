"""The load harness's per-thread CPU sampler: /proc read as it is, and time split by window."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from loadtest.cpu_sampler import Sampler, attribute, process_label, summary


def test_a_busy_process_is_seen_with_its_thread() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\n"
                             "while time.time() - t < 3: pass"])
    try:
        proc = psutil.Process(busy.pid)
        sampler = Sampler()
        time.sleep(0.3)  # python has started and is spinning
        sampler.sample()
        before = sum(proc.cpu_times()[:2])
        time.sleep(1.0)
        used = sampler.sample()
        after = sum(proc.cpu_times()[:2])
    finally:
        busy.kill()
        busy.wait()
    mine = {k: v for k, v in used.items() if k.endswith(f" {busy.pid}")}
    assert len(mine) == 1, used  # its main thread, named after the process
    # what the process itself was charged, to a few clock ticks (however busy the box is)
    assert after - before > 0.05 and abs(sum(mine.values()) - (after - before)) <= 0.05, mine


def test_seconds_are_split_by_the_share_of_each_interval_in_the_window() -> None:
    samples = [{"t": 0.0, "cpu": {}}, {"t": 1.0, "cpu": {"tts/a 1": 0.8}},
               {"t": 2.0, "cpu": {"tts/a 1": 0.4, "llm Worker/b 2": 1.0}}]
    got = attribute(samples, 0.5, 1.5)
    assert got == {"tts/a 1": 0.4 + 0.2, "llm Worker/b 2": 0.5}
    assert attribute(samples, 3.0, 4.0) == {}


def test_a_run_is_summed_as_cores_per_process_and_idle() -> None:
    samples = [{"t": 0.0, "cpu": {}}, {"t": 1.0, "cpu": {"tts/a 1": 0.8, "tts/b 2": 0.4}},
               {"t": 2.0, "cpu": {"tts/a 1": 0.4, "llm Worker/c 3": 1.0}}]
    got = summary(samples)
    assert list(got) == ["tts", "llm Worker", "idle"]  # busiest first
    assert got["tts"] == pytest.approx(0.8) and got["llm Worker"] == pytest.approx(0.5)
    assert got["idle"] == pytest.approx(len(os.sched_getaffinity(0)) - 1.3)
    assert summary(samples[:1]) == {}


def test_processes_are_named_by_what_they_serve() -> None:
    assert process_label(1, ["ray::ServeReplica:tts:TtsDeployment.handle_request"], "x") == "tts"
    assert process_label(1, ["ray::ProxyActor.receive_grpc_messages"], "x") == "ProxyActor"
    assert process_label(1, ["VLLM::EngineCore"], "x") == "llm EngineCore"
    assert process_label(1, ["python", "-m", "voxray.cli", "gateway", "--stages", "a"],
                         "python") == "gateway"
    assert process_label(7, [], "kworker/0:1") == "kworker/0:1"
