"""Duplex mode as a user meets it: a WebRTC call to the gateway, talking with Moshi
(the tiny random model on the local cluster). Every packet stays on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from ray import serve

from gateway.server import Gateway
from tests.test_gateway_e2e import launch_chromium, start_gateway, write_wav
from voxray.clients.caller import RATE, Caller, load_48k
from voxray.stage_auth import stage_channel
from voxray.stage_clients.moshi import MoshiStream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def gateway(serve_grpc: str) -> AsyncIterator[tuple[Gateway, str]]:
    runner, gw, url = await start_gateway(serve_grpc, duplex_connect_s=2.0)
    yield gw, url
    await runner.cleanup()


async def slots_in_use() -> int:
    handle = serve.get_deployment_handle("MoshiDeployment", app_name="moshi")
    return int(await handle.slots_in_use.remote())


async def until(check: object, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_duplex_call_through_the_gateway(gateway: tuple[Gateway, str]) -> None:
    gw, url = gateway
    caller = Caller(url, mode="duplex")
    await caller.connect()
    try:
        ready = await caller.wait_event("duplex_ready", within_s=30)
        assert ready["detail"]["slot"] in range(4)
        assert await slots_in_use() == 1
        (call,) = gw.calls.values()
        assert call.mode == "duplex"
        started = time.monotonic()
        caller.mic.say(load_48k("tests/data/speech/s11.wav"))
        # Moshi talks while the user talks: its audio arrives paced, with no turn-taking
        # (how soon is the bench's to say; a busy CI box may be slow to start it).
        # Counted as voiced samples, not as a share of what arrived: until its first
        # frames the gateway plays silence, and a slow box is slow to start it.
        deadline = time.monotonic() + 60
        while (voiced := int((np.abs(caller.heard.pcm(since=started).astype(np.int32))
                              > 300).sum())) < RATE:
            assert time.monotonic() < deadline, f"{voiced / RATE:.2f} s voiced within 60 s"
            await asyncio.sleep(0.1)
        assert caller.heard.first_audible_after(started) is not None
        texts = [e for e in caller.events if e["type"] == "agent_text"]
        # text pieces as Moshi says them: never empty, never its control pieces
        assert texts and all(e["text"] and not any(c in e["text"] for c in ("<s>", "</s>", "<unk>"))
                             for e in texts), texts
        assert not [e for e in caller.events if e["type"] in ("partial", "final", "turn_metrics")]
        # The jitter buffer rides out late chunks: on a busy CPU a few underrun, but far
        # fewer than without one (an underrun at nearly every 80 ms chunk).
        played_frames = (time.monotonic() - started) / 0.02
        assert call.session.track.underruns < played_frames / 8  # type: ignore[attr-defined]
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as res:
            assert 'voxray_sessions{mode="duplex"} 1.0' in await res.text()
    finally:
        await caller.hang_up()
    await until(lambda: _no_calls(gw))
    await until(lambda: _slots(0))


async def test_duplex_refused_when_every_slot_is_taken(gateway: tuple[Gateway, str],
                                                       serve_grpc: str) -> None:
    gw, url = gateway
    async with stage_channel(serve_grpc) as ch:
        holders = [await MoshiStream(ch, f"hold-{i}").__aenter__() for i in range(4)]
        queued = [asyncio.create_task(MoshiStream(ch, f"queued-{i}", ready_within_s=60)
                                      .__aenter__()) for i in range(4)]
        try:
            await asyncio.sleep(0.5)
            for _ in range(2):  # Serve's queue is full: refused at once; waiting in it: timed out
                started = time.monotonic()
                with pytest.raises(ConnectionError, match="503: every duplex slot is busy"):
                    await Caller(url, mode="duplex").connect()
                assert time.monotonic() - started < 5
                queued.pop().cancel()
                await asyncio.sleep(0.3)
            assert not gw.calls
        finally:
            for q in queued:
                q.cancel()
            for h in holders:
                h.cancel()
    await until(lambda: _slots(0))


async def _no_calls(gw: Gateway) -> bool:
    return not gw.calls


async def _slots(n: int) -> bool:
    return await slots_in_use() == n


async def test_a_browser_talks_with_moshi(gateway: tuple[Gateway, str], tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    gw, url = gateway
    wav = str(tmp_path / "mic.wav")
    write_wav(wav, np.concatenate([load_48k("tests/data/speech/s11.wav"),
                                   np.zeros(RATE * 10, np.int16)]), RATE)
    async with async_playwright() as p:
        browser = await launch_chromium(p, wav)
        page = await browser.new_page()
        try:
            await page.goto(f"{url}/?raw=1&mode=duplex")
            assert await page.input_value("#mode") == "duplex"
            await page.click("#start")
            await page.wait_for_function(
                "document.getElementById('log').innerText.includes('Moshi is listening')",
                timeout=20_000)
            await page.wait_for_function(
                "document.getElementById('log').innerText.includes('agent:')", timeout=20_000)
            await asyncio.sleep(2.0)
            # The browser really received and decoded Moshi's audio.
            energy = await page.evaluate("""async () => {
                let energy = 0;
                (await pc.getStats()).forEach((r) => {
                    if (r.type === "inbound-rtp" && r.kind === "audio") energy = r.totalAudioEnergy;
                });
                return energy; }""")
            assert energy > 0.01, energy
            assert [c.mode for c in gw.calls.values()] == ["duplex"]
            await page.click("#stop")
        finally:
            await browser.close()
    await until(lambda: _no_calls(gw))
    await until(lambda: _slots(0))
