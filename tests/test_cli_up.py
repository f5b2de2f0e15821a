"""`voxray up` as a user runs it, then the client subcommands against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from voxray.runtime import free_port
from voxray.wer import wer

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster]


def test_up_serves_the_clients_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    grpc_port = free_port()
    cmd = [sys.executable, "-m", "voxray.cli", "up", "--grpc-port", str(grpc_port),
           "--http-port", str(free_port()), "--metrics-port", str(free_port())]
    up = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    # A thread drains the pipe: select() on its fd misses lines that readline()
    # already pulled into Python's buffer.
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("voxray is up") for line in list(lines)):
            assert up.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.5)
        assert any("asr: RUNNING" in line for line in lines)
        target = f"127.0.0.1:{grpc_port}"
        wav = tmp_path / "reply.wav"
        run = subprocess.run([sys.executable, "-m", "voxray.cli", "tts", "Please call me back "
                              "tomorrow morning.", "--out", str(wav), "--target", target],
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        run = subprocess.run([sys.executable, "-m", "voxray.cli", "asr", "--wav", str(wav),
                              "--target", target, "--fast"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        final = next(x for x in run.stdout.splitlines() if x.startswith("final: "))
        assert wer("please call me back tomorrow morning", final[7:]) <= 0.2, run.stdout
    finally:
        up.send_signal(signal.SIGINT)
        try:
            assert up.wait(timeout=90) == 0
        finally:
            if up.poll() is None:
                up.kill()
