"""The parts of the WebSocket transports that need no stages: G.711 and PCM on the wire,
client audio into session chunks, and the Realtime API's session settings."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config import TurnConfig
from gateway.message_audio import InboundAudio
from gateway.realtime.settings import BadSetting, Settings, described, updated
from gateway.vad import CHUNK
from voxray.codecs import AudioFormat, BadAudio, Decoder, Encoder


@pytest.mark.parametrize("codec,rate", [("pcmu", 8000), ("pcma", 8000), ("pcm16", 24000)])
def test_audio_survives_the_wire(codec: str, rate: int) -> None:
    fmt = AudioFormat(codec, rate)  # type: ignore[arg-type]
    t = np.arange(rate) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)  # 1 s at 440 Hz
    data = Encoder(fmt, rate)(tone)
    assert len(data) == rate * fmt.bytes_per_sample
    back = Decoder(fmt, rate)(data)
    # G.711 keeps about 8 bits: the tone comes back within a few percent
    assert np.abs(back.astype(int) - tone).max() < 400


def test_a_partial_sample_is_bad_audio() -> None:
    with pytest.raises(BadAudio, match="whole number"):
        Decoder(AudioFormat("pcm16", 24000), 16000)(b"\x00\x01\x02")


async def test_client_audio_becomes_chunks_on_one_timeline_and_commits_keep_order() -> None:
    inbound = InboundAudio(AudioFormat("pcm16", 24000))
    order: list[object] = []
    inbound.push(np.zeros(24000 // 10, np.int16).tobytes())  # 100 ms
    inbound.then(lambda: order.append("commit"))
    inbound.flush()  # (the commit came first: its audio is what was sent before it)
    inbound.end()
    async for chunk in inbound.chunks():
        order.append(chunk.start_sample)
    assert order[:3] == [0, CHUNK, 2 * CHUNK] and "commit" in order
    assert order.index("commit") == 3  # after the whole chunks sent before it


def test_session_update_in_the_ga_and_the_beta_shape() -> None:
    ga = updated(Settings(), {"type": "realtime", "instructions": "Hi.", "audio": {
        "input": {"format": {"type": "audio/pcmu"},
                  "turn_detection": {"type": "semantic_vad", "eagerness": "high"}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "ff_siwis"}}},
        beta=False)
    assert ga.input_format == AudioFormat("pcmu", 8000) and ga.voice == "ff_siwis"
    assert ga.turn_config(TurnConfig()).max_silence_ms == 1000
    beta = updated(Settings(), {"input_audio_format": "g711_alaw", "voice": "alloy",
                                "turn_detection": None, "max_response_output_tokens": "inf",
                                "temperature": 0.6}, beta=True)
    assert beta.input_format == AudioFormat("pcma", 8000)
    assert beta.voice == "" and beta.turn_detection is None and beta.temperature == 0.6
    shown = described(beta, "sess_1", "af_heart", beta=True)
    assert shown["input_audio_format"] == "g711_alaw" and shown["voice"] == "af_heart"
    shown = described(ga, "sess_1", "ff_siwis", beta=False)
    assert shown["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert shown["output_modalities"] == ["audio"]
    text = updated(ga, {"output_modalities": ["text"]}, beta=False)
    assert text.text_only and described(text, "s", "v", beta=False)["output_modalities"] == [
        "text"]
    assert not updated(text, {"output_modalities": ["audio"]}, beta=False).text_only
    beta_text = updated(beta, {"modalities": ["text"]}, beta=True)
    assert beta_text.text_only and described(beta_text, "s", "v", beta=True)["modalities"] == [
        "text"]
    assert not updated(beta_text, {"modalities": ["text", "audio"]}, beta=True).text_only


@pytest.mark.parametrize("session,param", [
    ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
     "session.audio.input.format"),
    ({"audio": {"output": {"format": "mp3"}}}, "session.audio.output.format"),
    ({"turn_detection": {"type": "push_to_talk"}}, "session.turn_detection"),
    ({"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "max"}}}},
     "session.audio.input.turn_detection.eagerness"),
    ({"temperature": 7}, "session.temperature"),
    ({"max_output_tokens": 0}, "session.max_output_tokens"),
    ({"instructions": 5}, "session.instructions"),
    ({"audio": "loud"}, "session.audio"),
    ({"audio": {"output": 3}}, "session.audio.output"),
    ({"output_modalities": ["audio", "text"]}, "session.output_modalities"),
    ({"modalities": ["video"]}, "session.modalities"),
    ({"modalities": "text"}, "session.modalities"),
])
def test_a_bad_setting_names_its_key(session: dict[str, object], param: str) -> None:
    with pytest.raises(BadSetting) as e:
        updated(Settings(), session, beta=False)
    assert e.value.param == param
