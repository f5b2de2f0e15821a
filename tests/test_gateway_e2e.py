"""The product as a user meets it: WebRTC calls to the gateway with the CPU-default models
(Whisper base, SmolLM2 on vLLM, Kokoro) on a local Ray cluster. Every packet stays on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from gateway.config import local_gateway_config
from gateway.server import Gateway
from tests.test_tts_serve import transcribe
from tests.waiting import until
from voxray import runtime
from voxray.audio import resample
from voxray.clients.caller import RATE, Caller, let_agent_talk, load_48k, speak_turn
from voxray.stage_auth import stage_channel
from voxray.v1 import common_pb2, tts_pb2, tts_pb2_grpc
from voxray.wer import wer

pytestmark = pytest.mark.slow
SPEECH = "tests/data/speech"


@pytest.fixture(scope="module")
async def gateway(serve_grpc: str) -> AsyncIterator[tuple[Gateway, str]]:
    config = local_gateway_config(max_sessions=3)
    gw = Gateway(config, serve_grpc)
    runner = web.AppRunner(gw.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.port).start()
    yield gw, f"http://127.0.0.1:{config.port}"
    await runner.cleanup()


async def test_two_turn_conversation_over_webrtc(gateway: tuple[Gateway, str],
                                                 serve_grpc: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    gw, url = gateway
    caplog.set_level(logging.INFO, logger="voxray.calls")
    before = await metric_values(url)
    caller = Caller(url)
    await caller.connect()
    try:
        turns = []
        for name, said in [("s11", "hello can you hear me"),
                           ("s03", "what is the weather going to be like tomorrow morning")]:
            turn = await speak_turn(caller, load_48k(f"{SPEECH}/{name}.wav"))
            assert turn.gateway, caller.events
            assert wer(said, turn.user_text) <= 0.25, turn.user_text
            assert turn.agent_text.strip()
            assert turn.client_ttfat_ms is not None and turn.client_ttfat_ms > 0
            assert turn.gateway["ttfat_ms"] > 0  # (how soon: the benches)
            turns.append(turn)
        # The reply audio is the agent's text, spoken: read it back with the ASR app.
        longer = max(turns, key=lambda t: len(t.agent_text))
        assert len(longer.reply_pcm) > RATE  # a second or more of it
        first_8s = longer.reply_pcm[: 8 * RATE]  # the ASR app takes 20 s per utterance
        heard = await transcribe(serve_grpc, resample(first_8s, RATE, 24000))
        said_words = longer.agent_text.split()
        assert len(heard.split()) >= 2, heard
        # (the readback's final may cover only the reply's first sentences)
        assert wer(" ".join(said_words[:len(heard.split())]), heard) <= 0.4, (said_words, heard)
        (session,) = [c.session for c in gw.calls.values()]
        assert [r for r, _ in session.context.messages] == ["user", "assistant"] * 2
        # observed into Prometheus from the session's events (this call's two turns,
        # whatever other tests on this gateway did before)
        after = await metric_values(url)
        for name in ("voxray_ttfat_ms_count", 'voxray_turns_total{outcome="completed"}'):
            assert after.get(name, 0) - before.get(name, 0) == 2, (name, before, after)
    finally:
        await caller.hang_up()
    await until(lambda: not gw.calls, what="the session ends on hang-up")
    # the call log: its start, each turn with its figures, its end
    sid = session.id
    lines = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records
             if r.name == "voxray.calls" and getattr(r, "fields", {}).get("session") == sid]
    assert [m for m, _ in lines] == ["session_start", "turn", "turn", "session_end"], lines
    assert lines[0][1]["remote"] == "127.0.0.1" and lines[0][1]["mode"] == "pipeline"
    assert [f["ttfat_ms"] for m, f in lines if m == "turn"] == [
        round(t.gateway["ttfat_ms"]) for t in turns]
    assert lines[-1][1]["reason"] == "ended by the client"
    # the mic's packet counts reach the end line (0 or a few on loopback: not asserted)
    assert all(isinstance(lines[-1][1].get(k), int) and lines[-1][1][k] >= 0
               for k in ("mic_lost", "mic_late")), lines[-1]


async def metric_values(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as res:
        text = await res.text()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


async def tts_pcm48(target: str, text: str) -> np.ndarray:
    async with stage_channel(target) as ch:
        events = tts_pb2_grpc.TtsStub(ch).Synthesize(
            tts_pb2.TtsRequest(meta=common_pb2.Meta(session_id="bc"), text=text),
            metadata=(("application", "tts"),))
        pcm = b"".join([e.audio.audio.pcm16 async for e in events
                        if e.WhichOneof("kind") == "audio"])
    return resample(np.frombuffer(pcm, "<i2"), 24000, RATE)


async def test_barge_in_stops_the_agent_and_keeps_only_what_was_heard(
        gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    caller = Caller(url)
    await caller.connect()
    try:
        await let_agent_talk(caller, load_48k(f"{SPEECH}/s18.wav"), 2.0)
        n = len(caller.events)
        first_voiced, _ = caller.mic.say(load_48k(f"{SPEECH}/s25.wav"))
        spoke_at = await first_voiced
        interrupted = await caller.wait_event("interrupted", 10, since=n)
        paused = next(e for e in caller.events if e["type"] == "agent_paused")
        assert paused["detail"]["stop_ms"] <= 120, paused
        # As the caller hears it: no agent audio long after they began to speak
        # (two jitter buffers and the VAD's decision are in this figure).
        late = caller.heard.audible_between(spoke_at + 0.4, spoke_at + 2.0)
        assert not late, f"agent audible {late[0] - spoke_at:.2f} s after the user spoke"
        said = "".join(e["text"] for e in caller.events if e["type"] == "agent_text"
                       and e["turn"] == interrupted["turn"])
        heard = interrupted["heard"]
        assert heard and said.startswith(heard) and len(heard) < len(said), (heard, said)
        (session,) = [c.session for c in gw.calls.values()]
        assert ("assistant", heard) in session.context.messages
        assert ("assistant", said) not in session.context.messages
    finally:
        await caller.hang_up()


async def test_a_backchannel_pauses_then_resumes_the_agent(gateway: tuple[Gateway, str],
                                                           serve_grpc: str) -> None:
    _, url = gateway
    okay = await tts_pcm48(serve_grpc, "Okay.")
    caller = Caller(url)
    await caller.connect()
    try:
        await let_agent_talk(caller, load_48k(f"{SPEECH}/s18.wav"), 1.5)
        caller.mic.say(okay)
        try:
            resumed = await caller.wait_event("agent_resumed", 10)
        except TimeoutError:
            raise AssertionError([e for e in caller.events if e["type"] != "agent_text"]) from None
        # Whisper writes the same word "Okay." or "OK." depending on the CPU
        assert resumed["detail"]["heard"].lower().strip(" .!") in ("okay", "ok")
        assert not any(e["type"] == "interrupted" for e in caller.events)
        # talking again (the reply's next unit may still be in the making on a busy box)
        await until(lambda: (caller.heard.last_audible() or 0) > resumed["received_at"],
                    within_s=15, what="the agent talks again after the backchannel")
    finally:
        await caller.hang_up()


async def test_bad_signalling_is_refused_clearly(gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    sdp = {"Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http:
        for body, headers, status, needle in [
            ("v=0\r\nm=audio garbage\r\n", sdp, 400, "SDP"),
            ("hello", sdp, 400, "no audio"),
            ("v=0", {"Content-Type": "text/plain"}, 415, "application/sdp"),
            ("x" * 100_000, sdp, 413, ""),
        ]:
            async with http.post(f"{url}/whip", data=body, headers=headers) as res:
                assert res.status == status, await res.text()
                assert needle in await res.text()
        async with http.post(f"{url}/whip?mode=karaoke", data="m=audio", headers=sdp) as res:
            assert res.status == 400
        async with http.delete(f"{url}/whip/nope") as res:
            assert res.status == 404
    assert not gw.calls


async def test_a_vanished_client_ends_its_session_and_leaves_others(
        gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    stays, vanishes = Caller(url), Caller(url)
    await stays.connect()
    await vanishes.connect()
    await until(lambda: len(gw.calls) == 2, what="both sessions are up")
    gone = next(c for c in gw.calls.values() if c.session.id == vanishes.location.split("/")[-1])  # type: ignore[union-attr]
    await vanishes.pc.close()  # no DELETE: the client just goes away
    await until(lambda: bool(gone.task and gone.task.done()), within_s=40,
                what="the vanished client's session ends")
    assert len(gw.calls) == 1
    # nothing of it is left running: tasks, streams, peer connection
    assert gone.session.closed.is_set() and not gone.session._tasks
    assert gone.peer.connectionState == "closed" and gone.task is not None and gone.task.done()
    turn = await speak_turn(stays, load_48k(f"{SPEECH}/s11.wav"))
    assert turn.gateway and turn.agent_text
    await stays.hang_up()
    await until(lambda: not gw.calls, what="the session ends on hang-up")


CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def write_wav(path: str, pcm: np.ndarray, rate: int) -> None:
    import wave

    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


async def launch_chromium(playwright: Any, mic_wav: str) -> Any:
    """Headless Chromium whose microphone plays `mic_wav` once."""
    return await playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={mic_wav}%noloop"])


# The page's microphone as a WebAudio stream the test speaks into when it wants to: a turn
# is said once the agent is listening again, however long the last answer took (a WAV
# capture file plays on a fixed clock, which a slow box's answers overrun).
SCRIPTED_MIC = """(() => {
  navigator.mediaDevices.getUserMedia = async () => {
    const ctx = new AudioContext({sampleRate: 48000});
    const out = ctx.createMediaStreamDestination();
    window.voxraySay = (samples) => new Promise((done) => {
      const buf = ctx.createBuffer(1, samples.length, 48000);
      buf.getChannelData(0).set(Float32Array.from(samples, (x) => x / 32768));
      const src = ctx.createBufferSource();
      src.buffer = buf; src.connect(out); src.onended = () => done(); src.start();
    });
    return out.stream;
  };
})();"""
LISTENING = "document.getElementById('state').dataset.state === 'listening'"


async def test_a_browser_holds_a_two_turn_conversation(serve_grpc: str,
                                                       tmp_path: object) -> None:
    from pathlib import Path

    from playwright.async_api import async_playwright

    # Its own gateway, with a token: the page must send it on POST and on Stop's DELETE.
    runner, gw, url = await start_gateway(serve_grpc, auth_token="br0wser")
    silence = np.zeros(RATE // 2, np.int16)
    turns = [np.concatenate([silence, load_48k(f"{SPEECH}/{name}.wav"), silence]).tolist()
             for name in ("s11", "s02")]
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium",
                                          args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1000, "height": 900})
        await page.add_init_script(script=SCRIPTED_MIC)
        try:
            await page.goto(f"{url}/?raw=1&token=br0wser")
            await page.click("#start")
            for n, samples in enumerate(turns, 1):
                await page.wait_for_function(LISTENING, timeout=120_000)
                await page.evaluate("(s) => window.voxraySay(s)", samples)
                await page.wait_for_selector(f"#turns tr:nth-child({n})", timeout=120_000)
            log = await page.inner_text("#log")
            # the user's two turns as the ASR heard them (words, not the exact words:
            # one busy run heard "Hello, can you dare me?")
            said = [line[len("you: "):] for line in log.splitlines() if line.startswith("you: ")]
            assert len(said) >= 2 and wer("hello can you hear me", said[0]) <= 0.4, log
            assert wer("please book a table for two at seven tonight", said[1]) <= 0.4, log
            assert "agent:" in log, log
            ttfat = await page.inner_text("#turns tr:nth-child(1) td:nth-child(2)")
            assert int(ttfat) > 0
            # What the agent is doing: it thought, spoke, and went back to listening.
            await page.wait_for_function(LISTENING, timeout=120_000)
            states = await page.evaluate("window.__states")
            assert states[:2] == ["idle", "connecting"], states
            after = states[states.index("thinking"):] if "thinking" in states else []
            assert "speaking" in after and "listening" in after[after.index("speaking"):], states
            # One stacked bar per answered turn, a segment per stage, sized by its ms.
            bars = await page.evaluate("""[...document.querySelectorAll('#turns tr')].map(r =>
                [...r.querySelectorAll('.bar .seg')].map(s =>
                    [+s.dataset.ms, s.getBoundingClientRect().width]))""")
            assert len(bars) == 2, bars
            for segments in bars:
                assert len(segments) == 5, bars
                assert all(w > 0 for ms, w in segments if ms > 0), bars
                assert sum(w > 0 for _, w in segments) >= 3, bars
            shot = Path(str(tmp_path)) / "two-turns.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            # Stop ends the session on the gateway with an authorized DELETE.
            assert len(gw.calls) == 1
            async with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
                await page.click("#stop")
            assert (await deleted.value).status == 200
            await page.wait_for_function(
                "document.getElementById('state').dataset.state === 'idle'", timeout=10_000)
            assert not gw.calls
            async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as res:
                text = await res.text()
            assert 'voxray_sessions_ended_total{reason="ended by the client"} 1.0' in text, text
        finally:
            await browser.close()
            await runner.cleanup()


async def start_gateway(stages: str, **settings: object) -> tuple[web.AppRunner, Gateway, str]:
    config = local_gateway_config(**settings)
    gw = Gateway(config, stages)
    runner = web.AppRunner(gw.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.port).start()
    return runner, gw, f"http://127.0.0.1:{config.port}"


async def test_unreachable_stages_are_reported_and_the_next_words_try_again() -> None:
    runner, gw, url = await start_gateway(f"127.0.0.1:{runtime.free_port()}",
                                          stage_retry={"attempts": 2, "backoff_ms": 50})
    try:
        caller = Caller(url)
        await caller.connect()
        error = await caller.wait_event("error", 20)
        assert error["detail"]["stage"] == "asr" and "UNAVAILABLE" in error["message"]
        # new streams were tried first, as many as configured
        retries = [e["detail"]["attempt"] for e in caller.events if e["type"] == "stage_retry"]
        assert retries == [1, 2], caller.events
        # the call stays up; speaking tries the stage again (and is told again)
        n = len(caller.events)
        assert gw.calls
        caller.mic.say(load_48k("tests/data/speech/s11.wav"))
        await caller.wait_event("error", 30, since=n)
        assert gw.calls
        await caller.hang_up()
        await until(lambda: not gw.calls, within_s=20, what="the session ends on hang-up")
    finally:
        await runner.cleanup()


async def test_token_session_cap_and_idle_timeout(serve_grpc: str) -> None:
    runner, gw, url = await start_gateway(serve_grpc, max_sessions=1, auth_token="s3cret",
                                          idle_timeout_s=3, connect_timeout_s=3)
    try:
        # an offer whose client never connects its media does not keep its slot
        from tests.test_fuzz_signalling import real_offer

        async with aiohttp.ClientSession() as http, http.post(
                f"{url}/whip", data=await real_offer(), headers={
                    "Content-Type": "application/sdp", "Authorization": "Bearer s3cret"}) as res:
            assert res.status == 201
        (ghost,) = gw.calls.values()
        await until(lambda: not gw.calls, within_s=20, what="the unconnected session ends")
        assert ghost.reason == "no media connection within 3 s"
        with pytest.raises(ConnectionError, match="401"):
            await Caller(url).connect()
        with pytest.raises(ConnectionError, match="401"):
            await Caller(url, token="wrong").connect()
        first = Caller(url, token="s3cret")
        await first.connect()
        with pytest.raises(ConnectionError, match="503"):
            await Caller(url, token="s3cret").connect()
        (call,) = gw.calls.values()
        ended = await first.wait_event("session_ended", 15)  # nobody spoke
        assert ended["message"] == "idle timeout"
        await until(lambda: not gw.calls and call.session.closed.is_set()
                    and not call.session._tasks and call.peer.connectionState == "closed",
                    what="the idle session is gone, nothing of it left running")
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as res:
            text = await res.text()
        assert 'voxray_sessions_refused_total{reason="full"} 1.0' in text
        assert 'voxray_sessions_refused_total{reason="unauthorized"} 2.0' in text
        await first.hang_up()
    finally:
        await runner.cleanup()
