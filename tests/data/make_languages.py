"""Regenerates the non-English test utterances: tests/data/languages/*.wav and
tests/data/languages.json. Kokoro's own Spanish, French, Italian and Portuguese
voices ask one question each (male voices where the agent's is female; Kokoro has
one French voice only, so French callers sound like the agent); the
files are finished like the turn-taking set (16 kHz mono PCM16, lead and tail
silence, a faint noise floor).

Run from the repository root after `voxray models prepare`:
.venv/bin/python tests/data/make_languages.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from make_turns import KokoroVoice, finish, write_wav  # noqa: E402

HERE = Path(__file__).parent
# (id, language, Kokoro voice, espeak-ng language, text)
UTTERANCES = [
    ("es1", "es", "em_alex", "es", "¿Qué tiempo va a hacer mañana en Madrid?"),
    ("fr1", "fr", "ff_siwis", "fr-fr",
     "Pouvez-vous me dire où se trouve la gare, s'il vous plaît?"),
    ("it1", "it", "im_nicola", "it", "Dove posso comprare un biglietto per il treno?"),
    ("pt1", "pt", "pm_alex", "pt-br", "Qual é o melhor restaurante da cidade para jantar?"),
    # Kokoro has no German voice: an English one reading German phonemes, as a caller
    # in a language the agent has no voice for
    ("de1", "de", "am_eric", "de", "Wie komme ich am schnellsten zum Hauptbahnhof?"),
]


def main() -> int:
    out = HERE / "languages"
    out.mkdir(exist_ok=True)
    kv = KokoroVoice()
    manifest = []
    for i, (uid, language, voice, espeak, text) in enumerate(UTTERANCES):
        write_wav(out / f"{uid}.wav", finish(kv.say(text, voice, espeak), seed=100 + i))
        manifest.append({"id": uid, "language": language, "voice": f"kokoro:{voice}",
                         "text": text})
    (HERE / "languages.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False)
                                         + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
