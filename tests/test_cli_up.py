"""`voxray up` as a user runs it, then the client subcommands against it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from voxray.runtime import free_port
from voxray.wer import wer

pytestmark = [pytest.mark.slow, pytest.mark.own_cluster]


@dataclass
class Up:
    lines: list[str]  # what `voxray up` printed so far
    target: str  # Serve's gRPC address
    gateway: str


@contextlib.contextmanager
def voxray_up(*extra: str) -> Iterator[Up]:
    """`voxray up` (with `extra` arguments) until it says it is up; Ctrl-C at the end, which
    must stop it cleanly."""
    grpc_port, http_port, gateway_port = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", "voxray.cli", "up", "--grpc-port", str(grpc_port),
           "--http-port", str(http_port), "--metrics-port", str(free_port()),
           "--gateway-port", str(gateway_port), *extra]
    up = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    # A thread drains the pipe: select() on its fd misses lines that readline()
    # already pulled into Python's buffer.
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 400
        while not any(line.startswith("voxray is up") for line in list(lines)):
            assert up.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.5)
        yield Up(lines, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{gateway_port}")
    finally:
        up.send_signal(signal.SIGINT)
        try:
            assert up.wait(timeout=90) == 0, "".join(lines[-20:])
        finally:
            if up.poll() is None:
                up.kill()


def call(gateway: str, tmp_path: Path) -> None:
    """`voxray call` with one utterance: it is heard, and answered in speech."""
    run = subprocess.run([sys.executable, "-m", "voxray.cli", "call", "--wav",
                          "tests/data/speech/s11.wav", "--url", gateway, "--out",
                          str(tmp_path / "call.wav"), "--transcript", str(tmp_path / "call.txt")],
                         capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "TTFAT heard here" in run.stdout
    transcript = (tmp_path / "call.txt").read_text()
    user, agent = transcript.splitlines()[:2]
    assert user.startswith("user: ") and wer("hello can you hear me", user[6:]) <= 0.25
    assert agent.startswith("agent: ") and len(agent) > 10, transcript
    assert (tmp_path / "call.wav").stat().st_size > 48_000


def test_up_serves_the_clients_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    with voxray_up() as up:
        lines, target, gateway = up.lines, up.target, up.gateway
        assert any("asr: RUNNING" in line for line in lines)
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
        run = subprocess.run([sys.executable, "-m", "voxray.cli", "llm", "What is the capital "
                              "of France?", "--target", target],
                             capture_output=True, text=True, timeout=120, check=False)
        answer, _, status = run.stdout.rpartition("\n[")
        assert run.returncode == 0 and answer.strip(), (run.stdout, run.stderr)
        assert status.startswith(("stop;", "length;")) and "first token" in status, run.stdout
        # The page and a WebRTC call, as the banner says.
        assert any(gateway in line for line in lines), lines
        with urllib.request.urlopen(gateway + "/", timeout=10) as page:
            assert b"<button id=\"start\"" in page.read()
        call(gateway, tmp_path)
        # Duplex mode with Moshi (the tiny random model here).
        run = subprocess.run([sys.executable, "-m", "voxray.cli", "call", "--mode", "duplex",
                              "--wav", "tests/data/speech/s03.wav", "--listen-s", "1", "--url",
                              gateway, "--out", str(tmp_path / "duplex.wav"), "--transcript",
                              str(tmp_path / "duplex.txt")],
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, (run.stdout, run.stderr)
        assert "duplex: Moshi replica" in run.stdout and "agent said:" in run.stdout
        assert (tmp_path / "duplex.wav").stat().st_size > 48_000 * 2 * 3


def test_up_with_direct_ingress_answers_a_call(tmp_path: Path) -> None:
    """Serve's direct ingress (HAProxy in front of the replicas, no Python proxy) with the
    profile that makes it possible: the stages answer through it and a call goes through."""
    with voxray_up("--direct-ingress", "--profile", "direct-ingress") as up:
        assert any("direct ingress" in line.lower() for line in up.lines), up.lines
        wav = tmp_path / "reply.wav"
        run = subprocess.run([sys.executable, "-m", "voxray.cli", "tts", "Good morning.",
                              "--out", str(wav), "--target", up.target],
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0 and wav.stat().st_size > 24_000, run.stderr
        call(up.gateway, tmp_path)
