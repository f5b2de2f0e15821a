"""`voxray call`: speak WAV files to the agent over WebRTC, save its reply and a transcript."""

from __future__ import annotations

import asyncio
import sys
import wave
from pathlib import Path

import numpy as np

from gateway.caller import RATE, Caller, load_48k, speak_turn
from gateway.ice import offer_only


def save(out: str, pcm: np.ndarray, transcript: str, lines: list[str]) -> None:
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.astype("<i2").tobytes())
    Path(transcript).write_text("\n".join(lines) + "\n")


async def call(wavs: list[str], url: str, out: str, transcript: str, token: str | None,
               loopback: bool) -> int:
    utterances = []
    for wav in wavs:
        try:
            utterances.append(load_48k(wav))
        except Exception as e:  # av raises its own errors for unreadable files
            print(f"voxray call: cannot read {wav}: {e}", file=sys.stderr)
            return 2
    if loopback:
        offer_only(["127.0.0.1"])
    caller = Caller(url, token=token)
    try:
        await caller.connect()
    except (ConnectionError, OSError) as e:
        print(f"voxray call: {e}", file=sys.stderr)
        return 1
    lines: list[str] = []
    replies: list[np.ndarray] = []
    try:
        for i, pcm in enumerate(utterances, 1):
            turn = await speak_turn(caller, pcm)
            if not turn.gateway:
                errors = [e.get("message") for e in caller.events if e["type"] == "error"]
                print(f"turn {i}: no reply ({'; '.join(map(str, errors)) or 'timed out'})")
                return 1
            replies.append(turn.reply_pcm)
            lines += [f"user: {turn.user_text}", f"agent: {turn.agent_text}"]
            g = turn.gateway
            print(f"turn {i}: you said {turn.user_text!r}\n        agent: {turn.agent_text!r}")
            client = f"{turn.client_ttfat_ms:.0f} ms" if turn.client_ttfat_ms else "n/a"
            print(f"        TTFAT heard here {client}, gateway {g['ttfat_ms']:.0f} ms "
                  f"(end of turn {g['end_of_turn_ms']:.0f}, ASR {g['asr_final_ms']:.0f}, "
                  f"LLM {g['llm_first_token_ms']:.0f}, TTS {g['tts_first_audio_ms']:.0f}, "
                  f"playout {g['playout_ms']:.0f})")
    finally:
        await caller.hang_up()
    await asyncio.to_thread(save, out, np.concatenate(replies), transcript, lines)
    print(f"reply audio: {out}; transcript: {transcript}")
    return 0
