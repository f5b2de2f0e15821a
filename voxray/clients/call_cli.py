"""`voxray call`: speak WAV files to the agent over WebRTC, save its reply and a transcript."""

from __future__ import annotations

import asyncio
import sys
import time
import wave
from pathlib import Path

import numpy as np

from voxray.clients.caller import RATE, Caller, load_48k, speak_turn
from voxray.ice import offer_only


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
                  f"(end of turn {g['end_of_turn_ms']:.0f}, ASR {g['asr_final_ms']:.0f}; "
                  f"reply started at {g['reply_started_at_ms']:.0f}, "
                  f"LLM {g['llm_first_token_ms']:.0f}, TTS {g['tts_first_audio_ms']:.0f}, "
                  f"held {g['held_ms']:.0f}, playout {g['playout_ms']:.0f}; "
                  f"speculation {g['speculation']})")
    finally:
        await caller.hang_up()
    await asyncio.to_thread(save, out, np.concatenate(replies), transcript, lines)
    print(f"reply audio: {out}; transcript: {transcript}")
    return 0


async def duplex_call(wavs: list[str], url: str, out: str, transcript: str, token: str | None,
                      loopback: bool, listen_s: float) -> int:
    """Duplex: say the WAVs back to back while Moshi listens and talks; record all it says."""
    try:
        speech = np.concatenate([load_48k(wav) for wav in wavs])
    except Exception as e:  # av raises its own errors for unreadable files
        print(f"voxray call: cannot read a WAV: {e}", file=sys.stderr)
        return 2
    if loopback:
        offer_only(["127.0.0.1"])
    caller = Caller(url, mode="duplex", token=token)
    try:
        await caller.connect()
        ready = await caller.wait_event("duplex_ready", within_s=10)
    except (ConnectionError, OSError, TimeoutError) as e:
        print(f"voxray call: {e}", file=sys.stderr)
        return 1
    print(f"duplex: Moshi replica {ready['detail']['replica']}, slot {ready['detail']['slot']}")
    started = time.monotonic()
    caller.mic.say(speech)
    try:
        await asyncio.sleep(len(speech) / RATE + listen_s)
    finally:
        await caller.hang_up()
    heard = caller.heard.pcm()
    words = "".join(e["text"] for e in caller.events if e["type"] == "agent_text")
    errors = [e.get("message") for e in caller.events if e["type"] == "error"]
    first = caller.heard.first_audible_after(started)
    print(f"agent said: {words.strip()!r}")
    print(f"first audible agent audio {((first or started) - started) * 1000:.0f} ms after the "
          f"call started; {len(heard) / RATE:.1f} s of audio received")
    await asyncio.to_thread(save, out, heard, transcript, [f"agent: {words.strip()}"])
    print(f"agent audio: {out}; transcript: {transcript}")
    if errors:
        print(f"errors: {'; '.join(map(str, errors))}", file=sys.stderr)
        return 1
    return 0
