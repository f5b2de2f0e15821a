"""Regenerates the turn-taking test set: tests/data/turns/*.wav and tests/data/turns.json.

Two sets, each in several voices (espeak-ng's and Kokoro's; never the agent's own voice):

* paused: one sentence with pauses of 0.4-1.2 s between its phrases, as people
  pause while thinking; the agent must not answer before the last phrase.
* complete: short, complete questions; the agent should answer at once.

espeak-ng inserts the pauses itself (SSML <break>), so each phrase keeps the
sentence's intonation. Kokoro speaks the whole sentence once and the pause is
cut into it at the quietest point near where the phrase ends (found from the
length of the phrase spoken alone), for the same reason. Every file is 16 kHz
mono PCM16 with 0.3 s of lead, 1.0 s of trailing silence, and a faint noise
floor (-64 dBFS) like a real microphone's. The manifest records each phrase's
end as measured on the written file.

Run from the repository root after `voxray models prepare` (needs espeak-ng and
sox, Debian): .venv/bin/python tests/data/make_turns.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
RATE = 16_000
LOUD = 32768 * 10 ** (-50 / 20)  # a 10 ms frame above -50 dBFS is voiced
LEAD_S, TAIL_S = 0.3, 1.0

# (id, voice, text with "|" where the speaker pauses, pauses in seconds)
# espeak voices are espeak-ng names; kokoro voices are "kokoro:<name>".
PAUSED = [
    ("p01", "en-us", "I'd like to book a table for | four people on Friday evening.", [0.8]),
    ("p02", "kokoro:am_adam", "Can you tell me how to get | to the train station from here?",
     [1.0]),
    ("p03", "en+m3", "My flight was cancelled and | I need to find another one for tomorrow.",
     [1.2]),
    ("p04", "kokoro:bf_emma", "I was wondering if | you could help me with my homework.", [0.6]),
    ("p05", "en-us+f3", "Add milk, | eggs, | and a loaf of bread to my shopping list.",
     [0.5, 0.7]),
    ("p06", "kokoro:am_michael",
     "So, um, | what I really want to know is | whether the museum is open on Monday.",
     [0.9, 0.6]),
    ("p07", "en", "The thing is, | my internet keeps dropping every evening around eight.",
     [1.1]),
    ("p08", "kokoro:af_bella", "Could you remind me to | water the plants when I get home?",
     [0.7]),
    ("p09", "en-us+m2", "I need to send a message to | my brother about the party on Saturday.",
     [1.0]),
    ("p10", "kokoro:bm_george", "What's the best way to | cook rice without a rice cooker?",
     [1.2]),
    ("p11", "en+f2", "Tell me a little bit about | the history of the Eiffel Tower.", [0.8]),
    ("p12", "kokoro:af_nicole", "If it rains tomorrow, | should I still go to the beach?",
     [0.9]),
    ("p13", "en-us", "I'm looking for a restaurant that | serves vegetarian food near the hotel.",
     [0.4]),
    ("p14", "kokoro:am_eric",
     "Before we start, | could you check whether | my order has been shipped?", [0.8, 1.1]),
    ("p15", "en+m4", "How long does it take to drive from | Boston to New York?", [1.1]),
    ("p16", "kokoro:bf_lily",
     "I want to learn how to play | the guitar, but I don't have much time.", [0.5]),
]

COMPLETE = [
    ("q01", "kokoro:am_adam", "What time does the pharmacy close today?"),
    ("q02", "en-us", "How far is the airport from the city centre?"),
    ("q03", "kokoro:bf_emma", "Can you recommend a good book?"),
    ("q04", "en+m3", "Is it going to rain this weekend?"),
    ("q05", "kokoro:am_michael", "What is the capital of Canada?"),
    ("q06", "en-us+f3", "How do I make a cup of tea?"),
    ("q07", "kokoro:af_bella", "Where can I buy a train ticket?"),
    ("q08", "en", "Who wrote Romeo and Juliet?"),
    ("q09", "kokoro:bm_george", "Can you set a timer for ten minutes?"),
    ("q10", "en-us+m2", "What is the tallest mountain in the world?"),
    ("q11", "kokoro:af_sarah", "How many days are there in a leap year?"),
    ("q12", "en+f2", "Why is the sky blue?"),
    ("q13", "kokoro:am_eric", "What should I cook for dinner tonight?"),
    ("q14", "en-us", "Do you know any good jokes?"),
    ("q15", "kokoro:bf_lily", "When does the next bus leave?"),
    ("q16", "en+m4", "How old is the universe?"),
]


def espeak(text: str, voice: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = f"{tmp}/raw.wav", f"{tmp}/out.wav"
        subprocess.run(["espeak-ng", "-m", "-v", voice, "-s", "160", "-w", raw, text],
                       check=True)
        subprocess.run(["sox", raw, "-r", str(RATE), "-c", "1", "-b", "16", out], check=True)
        with wave.open(out) as w:
            return np.frombuffer(w.readframes(w.getnframes()), np.int16).copy()


def frame_rms(pcm: np.ndarray, frame: int = RATE // 100) -> np.ndarray:
    n = len(pcm) // frame
    x = pcm[: n * frame].astype(np.float32).reshape(n, frame)
    return np.sqrt(np.mean(x * x, axis=1))


def trim(pcm: np.ndarray, level: float = 200) -> np.ndarray:
    loud = np.nonzero(frame_rms(pcm) > level)[0]
    frame = RATE // 100
    return pcm[loud[0] * frame:(loud[-1] + 1) * frame] if len(loud) else pcm[:0]


class KokoroVoice:
    def __init__(self) -> None:
        from faster_whisper import WhisperModel

        from deployments.tts.config import TtsArgs
        from deployments.tts.engine import KokoroEngine
        from voxray.paths import models_dir

        self.engine = KokoroEngine(TtsArgs(intra_op_threads=2))
        self.whisper = WhisperModel(str(models_dir() / "whisper-base"), device="cpu",
                                    compute_type="int8", cpu_threads=2)

    def say(self, text: str, voice: str, lang: str = "") -> np.ndarray:
        from voxray.audio import resample

        lang = lang or ("en-gb" if voice.startswith("b") else "en-us")
        audio = self.engine.synthesize(text, voice, 1.0, lang)
        return resample((np.clip(audio, -1, 1) * 32767).astype(np.int16), 24_000, RATE)


def _norm(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())


def kokoro_paused(kv: KokoroVoice, phrases: list[str], pauses: list[float],
                  voice: str) -> np.ndarray:
    """Cut the pauses into the whole sentence between a phrase's last word and the next
    word (their times from Whisper's word timestamps), at the quietest 10 ms there."""
    whole = trim(kv.say(" ".join(phrases), voice))
    segments, _ = kv.whisper.transcribe(whole.astype(np.float32) / 32768, language="en",
                                        word_timestamps=True, beam_size=5)
    words = [w for s in segments for w in (s.words or [])]
    rms = frame_rms(whole)
    pieces, last = [], 0
    for k, pause in enumerate(pauses):
        n = len(" ".join(phrases[: k + 1]).split())
        said = [_norm(w) for w in " ".join(phrases).split()]
        if len(words) <= n or _norm(words[n - 1].word) != said[n - 1]:
            raise SystemExit(f"Whisper's words do not line up with {phrases}: "
                             f"{[w.word for w in words]}")
        lo = int(words[n - 1].end * 100) - 3
        hi = max(lo + 2, int(words[n].start * 100) + 3)
        c = lo + int(np.argmin(rms[lo:hi]))
        loud = np.nonzero(rms > LOUD)[0]
        before, after = loud[loud < c].max(), loud[loud >= c].min()
        natural = (after - before - 1) / 100  # Kokoro's own pause there (after a comma)
        cut = c * (RATE // 100)
        pieces += [whole[last:cut], np.zeros(int(max(0.0, pause - natural) * RATE), np.int16)]
        last = cut
    pieces.append(whole[last:])
    return np.concatenate(pieces)


def pauses_in(pcm: np.ndarray, min_gap_s: float = 0.3) -> tuple[list[tuple[float, float]], float]:
    """(end of the voiced run, length of the pause after it) for each pause of at least
    min_gap_s, and the last voiced instant, in seconds (10 ms frames above -50 dBFS)."""
    idx = np.nonzero(frame_rms(pcm) > LOUD)[0]
    gaps = [((a + 1) / 100, (b - a - 1) / 100) for a, b in zip(idx, idx[1:], strict=False)
            if (b - a - 1) / 100 >= min_gap_s]
    return gaps, round(float(idx[-1] + 1) / 100, 2)


def set_pauses(pcm: np.ndarray, targets: list[float]) -> np.ndarray:
    """Make the inserted pauses (the longest gaps) exactly as long as asked, adding or
    taking silence in their middles (espeak-ng's breaks come out a little short)."""
    found, _ = pauses_in(pcm, min_gap_s=0.25)
    if len(found) < len(targets):
        raise SystemExit(f"found pauses {found}, expected {len(targets)}")
    gaps = sorted(sorted(found, key=lambda g: -g[1])[:len(targets)])  # the inserted ones
    out, last = [], 0
    for (end, length), target in zip(gaps, targets, strict=False):
        mid = int((end + length / 2) * RATE)
        out.append(pcm[last:mid])
        change = int(round((target - length) * RATE))
        if change >= 0:
            out.append(np.zeros(change, np.int16))
            last = mid
        else:
            last = mid - change
    out.append(pcm[last:])
    return np.concatenate(out)


def finish(speech: np.ndarray, seed: int) -> np.ndarray:
    pcm = np.concatenate([np.zeros(int(LEAD_S * RATE), np.int16), trim(speech),
                          np.zeros(int(TAIL_S * RATE), np.int16)]).astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 20, len(pcm))  # about -64 dBFS
    return np.clip(pcm + noise, -32768, 32767).astype(np.int16)


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def main() -> int:
    out_dir = HERE / "turns"
    out_dir.mkdir(exist_ok=True)
    kv = KokoroVoice()
    manifest = []
    items = [(i, v, t, p, "paused") for i, v, t, p in PAUSED]
    items += [(i, v, t, [], "complete") for i, v, t in COMPLETE]
    for n, (key, voice, marked, pauses, kind) in enumerate(items):
        phrases = [p.strip() for p in marked.split("|")]
        assert len(phrases) == len(pauses) + 1, key
        if voice.startswith("kokoro:"):
            speech = kokoro_paused(kv, phrases, pauses, voice[7:]) if pauses else \
                kv.say(phrases[0], voice[7:])
        else:
            ssml = "".join(f'{p} <break time="{int(s * 1000)}ms"/> '
                           for p, s in zip(phrases, pauses, strict=False)) + phrases[-1]
            speech = espeak(f"<speak>{ssml}</speak>", voice)
        pcm = finish(set_pauses(trim(speech), pauses), seed=n)
        gaps, last = pauses_in(pcm)
        measured = [round(g, 2) for _, g in gaps]
        if len(gaps) != len(pauses) or any(abs(g - p) > 0.05 for g, p in
                                           zip(measured, pauses, strict=False)):
            print(f"{key}: pauses {measured}, expected {pauses}", file=sys.stderr)
            return 1
        ends = [round(e, 2) for e, _ in gaps]
        write_wav(out_dir / f"{key}.wav", pcm)
        manifest.append({"id": key, "set": kind, "voice": voice, "text": " ".join(phrases),
                         "phrases": phrases, "pauses_s": measured, "phrase_ends_s": ends,
                         "last_voiced_s": last})
        print(key, voice, ends, measured, last)
    (HERE / "turns.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
