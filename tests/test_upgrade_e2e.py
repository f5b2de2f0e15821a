"""An upgrade while a call runs: the config is re-deployed with a new TTS voice and new
ASR args (a rolling update, as `voxray deploy` does) in the middle of a reply. The reply
plays to its end from the old TTS replica, which drains; the next turns are answered,
by the new replicas once the old are gone; the call never ends. Then the original
config is deployed again, so the shared cluster is as the other tests expect it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.test_failover_e2e import replicas
from tests.test_gateway_e2e import start_gateway
from tests.waiting import until
from voxray import runtime
from voxray.clients.caller import Caller, let_agent_talk, load_48k, speak_turn
from voxray.config import load_config

pytestmark = pytest.mark.slow
SPEECH = "tests/data/speech"
ASR, TTS = "asr#AsrDeployment", "tts#TtsDeployment"


def redeploy(endpoints: runtime.Endpoints, apps: dict[str, Any]) -> None:
    """The test cluster's config (see conftest) with `apps` merged in, deployed again."""
    ports = {"grpc_options": {"port": int(endpoints.grpc.rsplit(":", 1)[1])},
             "http_options": {"port": int(endpoints.http.rsplit(":", 1)[1])}}
    base = {"applications": {"asr": {"args": {"max_utterance_s": 20}}}}
    config = load_config(profiles=["cpu"], overrides=[ports, base, {"applications": apps}])
    runtime.start(config, timeout_s=300, progress=lambda _: None)


async def test_a_redeploy_mid_reply_keeps_the_call_and_new_turns_reach_new_replicas(
        serve_app: runtime.Endpoints) -> None:
    runner, gw, url = await start_gateway(serve_app.grpc, reply_max_tokens=60)
    old_asr, old_tts = set(replicas(ASR)), set(replicas(TTS))
    caller = Caller(url)
    await caller.connect()
    try:
        n = len(caller.events)
        await let_agent_talk(caller, load_48k(f"{SPEECH}/s18.wav"), 0.5)
        deploying = asyncio.ensure_future(asyncio.to_thread(redeploy, serve_app, {
            "tts": {"args": {"voice": "af_bella"}},
            "asr": {"args": {"final_beam_size": 2}}}))
        # the reply under way plays out from the draining replica
        done = await caller.wait_event(("agent_done", "interrupted", "session_ended"), 120,
                                       since=n)
        assert done["type"] == "agent_done", caller.events[n:]
        # a turn during the rollout is answered (by old or new replicas)
        during = await speak_turn(caller, load_48k(f"{SPEECH}/s11.wav"), 120)
        assert during.gateway and during.client_ttfat_ms, caller.events[n:]
        await asyncio.wait_for(deploying, 300)
        # the old replicas drained away: the call's ASR stream moved to the new one
        await until(lambda: not old_asr & set(replicas(ASR)) and not old_tts & set(replicas(TTS)),
                    within_s=120, what="the old replicas to drain and stop")
        assert replicas(ASR) and replicas(TTS)
        after = await speak_turn(caller, load_48k(f"{SPEECH}/s03.wav"), 120)
        assert after.gateway and after.client_ttfat_ms, caller.events[n:]
        assert "weather" in after.user_text.lower(), after.user_text
        assert not [e for e in caller.events[n:] if e["type"] in ("error", "session_ended")], \
            caller.events[n:]
        assert len(gw.calls) == 1
    finally:
        await caller.hang_up()
        await runner.cleanup()
        await asyncio.to_thread(redeploy, serve_app, {})
