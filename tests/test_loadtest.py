"""The load-test harness (`python -m loadtest`): its parts alone, then real WebRTC callers
against an in-process gateway and the CPU-profile stages. Every packet stays on 127.0.0.1."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from gateway.server import Gateway
from loadtest.__main__ import main, parse_duration
from loadtest.harness.report import Cost, Thresholds, build, cost_section
from loadtest.harness.scenario import ScenarioError, load_scenario
from loadtest.harness.stats import RunStats, TurnRecord, percentiles
from loadtest.harness.user import arrival_gaps, underruns
from tests.test_gateway_e2e import start_gateway
from tests.waiting import until
from voxray.clients.caller import RATE, Heard


def write_scenario(tmp_path: Path, **fields: object) -> str:
    base = {"name": "test", "utterances": ["tests/data/speech/s11.wav",
                                           "tests/data/speech/s16.wav"],
            "order": "sequential", "turns_per_session": 2,
            "think_time_s": {"min": 0.2, "max": 0.4}, "session_pause_s": {"min": 0.2, "max": 0.4},
            "turn_timeout_s": 40}
    path = tmp_path / f"scenario-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(base | fields))
    return str(path)


def read_outputs(prefix: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON report, and every other file written with this prefix."""
    report = json.loads(Path(f"{prefix}.json").read_text())
    files = {name: Path(f"{prefix}_{name}.csv").read_text()
             for name in ("stats", "turns", "history", "failures")
             if Path(f"{prefix}_{name}.csv").exists()}
    if Path(f"{prefix}.html").exists():
        files["html"] = Path(f"{prefix}.html").read_text()
    return report, files


# -- parts, no cluster ---------------------------------------------------------------------

def test_run_time_syntax_is_locusts() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("45s") == 45
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2m10s") == 130
    with pytest.raises(Exception, match="not a duration"):
        parse_duration("10 minutes")


def test_refuses_other_hosts_and_unbounded_runs(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    sc = write_scenario(tmp_path)
    assert main(["--url", "http://192.0.2.10:8080", "--scenario", sc]) == 2
    assert "loopback" in capsys.readouterr().err
    assert main(["--url", "http://example.com", "--scenario", sc]) == 2
    assert main(["--users", "65", "--scenario", sc]) == 2
    assert main(["--run-time", "2h", "--scenario", sc]) == 2
    assert main(["--ray-address", "10.1.2.3:6379", "--scenario", sc]) == 2


def test_scenario_is_validated_strictly(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="turn_per_session: unknown key"):
        load_scenario(write_scenario(tmp_path, turn_per_session=3))
    with pytest.raises(ScenarioError, match="no such utterance"):
        load_scenario(write_scenario(tmp_path, utterances=["tests/data/speech/nope.wav"]))
    sc = load_scenario("loadtest/scenarios/pipeline.yaml")
    assert len(sc.utterances) == 23 and not any("s18" in u for u in sc.utterances)
    assert load_scenario("loadtest/scenarios/duplex.yaml").mode == "duplex"


def test_underruns_are_silent_stretches_or_late_frames_inside_a_reply() -> None:
    loud = np.full(RATE // 50, 3000, np.int16)
    quiet = np.zeros(RATE // 50, np.int16)
    heard = Heard()
    t = 100.0
    pattern = [quiet] * 10 + [loud] * 20 + [quiet] * 10 + [loud] * 10 + [quiet] * 40 + [loud] * 5
    for pcm in pattern + [quiet] * 50:  # silence before and after the reply does not count
        heard.frames.append((t, pcm))
        t += 0.02
    gaps, reply_s = underruns(heard, 100.0, t, gap_ms=600)
    assert gaps == 1  # the 800 ms hole; the 200 ms pause is speech
    assert reply_s == pytest.approx(0.02 * (len(pattern) - 11), abs=1e-6)
    heard.frames.insert(35, (heard.frames[34][0] + 0.7, loud))  # a frame 700 ms late
    assert underruns(heard, 100.0, t, gap_ms=600)[0] == 2


def test_duplex_underruns_are_gaps_in_arrival_and_its_turns_count() -> None:
    heard = Heard()
    times = [100.0 + 0.08 * i for i in range(20)] + [102.0 + 0.08 * i for i in range(5)]
    heard.frames = [(t, np.zeros(1920, np.int16)) for t in times]  # silent frames still arrive
    assert arrival_gaps(heard, 100.0, 103.0, gap_ms=300) == 1  # the 480 ms hole
    assert arrival_gaps(heard, 100.0, 101.0, gap_ms=300) == 0
    stats = RunStats()
    stats.turns = [TurnRecord(1.0, 0, 1, "duplex", True, client_ttfat_ms=120.0)]
    assert stats.values("client_ttfat_ms") == [120.0] and stats.counters()["turns_ok"] == 1


def test_percentiles_thresholds_and_cost() -> None:
    p = percentiles([float(v) for v in range(1, 101)])
    assert (p["count"], p["p50"], p["p95"], p["max"]) == (100, 50.5, 95.0, 100.0)
    assert percentiles([])["p95"] is None
    stats = RunStats()
    stats.turns = [TurnRecord(1.0, 0, 1, "turn", True, client_ttfat_ms=float(v),
                              gateway={"ttfat_ms": v - 100.0}) for v in (800, 900, 1000, 3000)]
    stats.turns.append(TurnRecord(2.0, 0, 1, "turn", False, error="no reply"))
    stats.session_seconds = 600.0  # 10 conversation-minutes
    stats.load = [(0.0, 0, 0), (10.0, 2, 2), (20.0, 2, 2)]
    report = build(stats, scenario={"name": "x", "mode": "pipeline"},
                   run={"url": "u", "users": 2, "spawn_rate": 1, "ramp_s": 10.0},
                   thresholds=Thresholds(ttfat_p95_ms=2000, error_rate=0.5),
                   cost=Cost(gpu_price_per_hour=2.4, gpus=1, api_price_per_minute=0.08),
                   replicas={"samples": [], "summary": {}, "error": None})
    checks = {c["name"]: c for c in report["thresholds"]["checks"]}
    assert not checks["caller TTFAT p95 ms"]["passed"]  # p95 of 800..3000 is ~2700
    assert checks["turn error rate"]["passed"] and checks["turn error rate"]["value"] == 0.2
    assert not report["thresholds"]["passed"]
    assert report["run"]["sustained_sessions"] == 2.0
    assert checks["turns answered"]["passed"] and checks["turns answered"]["value"] == 4
    # a run no caller got through passes no threshold, not even "0 dropped"
    nobody = RunStats()
    nobody.sessions_failed = 34
    empty = build(nobody, scenario={"name": "x", "mode": "pipeline"},
                  run={"url": "u", "users": 2, "spawn_rate": 1, "ramp_s": 10.0},
                  thresholds=Thresholds(max_dropped=0, max_unexplained=0), cost=None,
                  replicas={"samples": [], "summary": {}, "error": None})
    checks_empty = {c["name"]: c for c in empty["thresholds"]["checks"]}
    assert checks_empty["dropped sessions"]["passed"]
    assert not checks_empty["turns answered"]["passed"] and not empty["thresholds"]["passed"]
    cost = report["cost"]
    assert cost["per_conversation_minute_at_capacity"] == pytest.approx(2.4 / 60 / 2)
    assert cost["self_hosted_vs_api"] == pytest.approx(0.02 / 0.08, abs=1e-3)
    assert cost["capacity_met_slo"] is False
    assert "FAIL" in report["text"] and "$0.0200 at capacity" in report["text"]
    given = cost_section(Cost(3.0, 2, capacity_sessions=50), stats, 2.0, True)
    assert given["per_conversation_minute_at_capacity"] == pytest.approx(6.0 / 60 / 50)


def test_a_barge_in_spoken_as_the_answer_ended_is_neither_ok_nor_failed() -> None:
    stats = RunStats()
    stats.turns = [TurnRecord(1.0, 0, 1, "barge_in", True),
                   TurnRecord(2.0, 0, 1, "barge_in", False, missed=True),
                   TurnRecord(3.0, 0, 1, "barge_in", False, error="no interruption")]
    c = stats.counters()
    assert (c["barge_ins_ok"], c["barge_ins_failed"], c["barge_ins_after_the_answer"]) \
        == (1, 1, 1)
    assert c["turns_unexplained"] == 1  # the agent that did not stop, not the late caller


# -- against the real stages -------------------------------------------------------------

@pytest.fixture(scope="module")
async def gateway(serve_grpc: str) -> AsyncIterator[tuple[Gateway, str]]:
    runner, gw, url = await start_gateway(serve_grpc, max_sessions=4)
    yield gw, url
    await runner.cleanup()


@pytest.mark.slow
async def test_two_callers_report_csv_json_and_plot(gateway: tuple[Gateway, str],
                                                    tmp_path: Path) -> None:
    gw, url = gateway
    sc = write_scenario(tmp_path)
    out = tmp_path / "run"
    # main() runs its own event loop: give it a thread, the gateway keeps this one.
    rc = await asyncio.to_thread(main, [
        "--url", url, "--scenario", sc, "--users", "2", "--spawn-rate", "2", "--run-time", "25s",
        "--headless", "--csv", str(out), "--json", f"{out}.json", "--html", f"{out}.html",
        "--fail-ttfat-p95-ms", "30000", "--fail-dropped", "0", "--gpu-price-per-hour", "2.5",
        "--api-price-per-minute", "0.05"])
    report, files = read_outputs(str(out))
    c = report["counters"]
    assert rc == 0, report["text"]
    assert c["sessions_started"] >= 2 and c["peak_open_sessions"] == 2
    # a CPU reply plays for ~15-20 s, so each caller has a turn or two in the run
    assert c["turns_ok"] >= 2 and c["turns_failed"] == 0, report["errors"]
    assert c["sessions_dropped"] == 0 and c["sessions_refused"] == 0
    m = report["metrics"]
    assert m["client_ttfat_ms"]["count"] == c["turns_ok"]
    # how fast is the bench's to say; here, that each turn's figure is a real interval
    assert m["client_ttfat_ms"]["p50"] > 100
    # the caller hears the reply after the gateway sends it
    assert m["client_ttfat_ms"]["p50"] > m["gateway.ttfat_ms"]["p50"]
    for stage in ("asr_final_ms", "llm_first_token_ms", "tts_first_audio_ms"):
        assert m[f"gateway.{stage}"]["count"] == c["turns_ok"]
    # replica counts from serve.status(), sampled through the run
    summary = report["replicas"]["summary"]
    assert {"asr/AsrDeployment", "llm/LlmDeployment", "tts/TtsDeployment"} <= set(summary)
    assert all(s["start"] >= 1 for s in summary.values())
    assert len(report["replicas"]["samples"]) >= 10
    assert report["cost"]["per_conversation_minute_at_capacity"] > 0
    assert "TTFAT, caller-side" in report["text"] and "PASS" in report["text"]
    rows = {r[0]: r for r in csv.reader(files["stats"].splitlines())}
    assert rows["client_ttfat_ms"][1] == str(c["turns_ok"])
    turns = list(csv.DictReader(files["turns"].splitlines()))
    assert len(turns) == c["turns_ok"] and all(float(t["client_ttfat_ms"]) > 0 for t in turns)
    assert {t["user"] for t in turns} == {"0", "1"}  # both callers were answered
    assert all(float(t["reply_s"]) > 1 for t in turns)
    # each turn's underruns add up to the report's counters
    assert sum(int(t["underruns"]) for t in turns) == c["underruns"]
    assert sum(int(t["underruns"]) > 0 for t in turns) == c["turns_with_underruns"]
    history = list(csv.DictReader(files["history"].splitlines()))
    assert "replicas:tts/TtsDeployment" in history[0]
    assert max(int(h["open_sessions"]) for h in history) == 2
    page = files["html"]
    assert page.count("<svg") == 2 and "<circle" in page and "TtsDeployment" in page
    await until(lambda: not gw.calls, what="every caller hung up")


@pytest.mark.slow
async def test_full_gateway_refusals_barge_in_and_a_failed_threshold(
        gateway: tuple[Gateway, str], tmp_path: Path) -> None:
    gw, url = gateway
    gw.cfg.max_sessions = 1  # a second caller finds the gateway full
    try:
        sc = write_scenario(tmp_path, turns_per_session=1,
                            barge_in={"probability": 1.0, "talk_s": {"min": 1.0, "max": 1.0}})
        rc = await asyncio.to_thread(main, [
            "--url", url, "--scenario", sc, "--users", "2", "--spawn-rate", "5",
            "--run-time", "12s", "--only-summary", "--json", str(tmp_path / "out" / "r.json"),
            "--fail-ttfat-p95-ms", "60000", "--fail-dropped", "0", "--ray-address", "none"])
    finally:
        gw.cfg.max_sessions = 4
    report, _ = read_outputs(str(tmp_path / "out" / "r"))  # out/ made by the run
    c = report["counters"]
    assert c["sessions_refused"] >= 1, report["text"]
    assert c["barge_ins_ok"] >= 1, report["text"]
    assert report["metrics"]["barge_in_stop_ms"]["p50"] < 1000
    assert report["metrics"]["barge_in_heard_ms"]["count"] >= 1
    # refused is not dropped; but no plain turn means no TTFAT p95, and a threshold on a
    # metric that was never measured fails the run instead of passing it
    checks = {ch["name"]: ch for ch in report["thresholds"]["checks"]}
    assert checks["dropped sessions"]["passed"] and checks["dropped sessions"]["value"] == 0
    assert checks["caller TTFAT p95 ms"]["value"] is None
    assert not checks["caller TTFAT p95 ms"]["passed"]
    assert rc == 1 and not report["thresholds"]["passed"]
    assert "--ray-address none" in report["replicas"]["error"]
    assert "replicas: not recorded" in report["text"]


@pytest.mark.slow
async def test_chaos_kills_a_replica_mid_run_and_soak_samples_memory(
        gateway: tuple[Gateway, str], tmp_path: Path) -> None:
    """`--kill tts`: the harness kills the TTS replica while callers talk; the report
    counts the kill and the turns under way at it, no session is dropped and no turn
    fails without an event saying why. `--soak` samples every process's memory."""
    from ray import serve

    from tests.test_failover_e2e import recovered, replicas

    gw, url = gateway
    (victim,) = replicas("tts#TtsDeployment")
    # a turn under way at the kill waits out the new replica's start (on a slow box tens of
    # seconds), and the run's end waits for it
    sc = write_scenario(tmp_path, turns_per_session=3, turn_timeout_s=120)
    rc = await asyncio.to_thread(main, [
        "--url", url, "--scenario", sc, "--users", "2", "--spawn-rate", "2", "--run-time", "30s",
        "--stop-timeout", "150s", "--only-summary", "--json", str(tmp_path / "r.json"),
        "--kill", "tts",
        "--kill-every", "15s", "--soak", "--soak-interval", "2s", "--soak-warmup", "4s",
        "--fail-dropped", "0", "--fail-unexplained", "0"])
    report, _ = read_outputs(str(tmp_path / "r"))
    c, f = report["counters"], report["faults"]
    assert f["error"] is None, f
    # one kill: at 15 s (the next would be at the run's end, when no more come)
    assert len(f["kills"]) == 1 and f["kills"][0]["replica"] == victim, f
    assert 14 <= f["kills"][0]["t_s"] <= 20
    assert c["sessions_dropped"] == 0 and c["turns_unexplained"] == 0, report["text"]
    assert c["turns_ok"] >= 1, report["text"]
    assert f["turns_across_a_kill"] >= 1, report["text"]
    assert "replicas killed (tts at" in report["text"]
    assert rc == 0, report["text"]
    procs = report["memory"]["processes"]
    assert procs["gateway"]["samples"] >= 10 and procs["gateway"]["last_mb"] > 50
    tts = [p for label, p in procs.items() if label.startswith("tts/TtsDeployment pid")]
    assert len(tts) >= 2, procs  # the killed replica and the one Serve started instead
    assert {"asr/AsrDeployment", "llm/LlmDeployment"} <= {
        label.split(" pid")[0] for label in procs}
    assert "growth" in report["text"]
    await until(lambda: not gw.calls, what="every caller hung up")
    await recovered("tts", victim, "tts#TtsDeployment")
    assert serve.status().applications["tts"].status.value == "RUNNING"


def test_chaos_and_soak_flags_are_checked(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    sc = write_scenario(tmp_path)
    assert main(["--scenario", sc, "--kill", "tts", "--ray-address", "none"]) == 2
    assert "--kill needs the Ray cluster" in capsys.readouterr().err
    assert main(["--scenario", sc, "--kill", " , "]) == 2
    assert "--kill needs one or more" in capsys.readouterr().err
    assert main(["--scenario", sc, "--soak", "--run-time", "60s", "--soak-warmup", "5m"]) == 2
    assert "--soak-warmup" in capsys.readouterr().err
