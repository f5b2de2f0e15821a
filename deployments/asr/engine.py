"""Whisper decoding on CTranslate2 through faster-whisper's model object; no Ray here.

faster-whisper's `transcribe` pads every call to a 30 s encoder window. For
streaming we call the encoder and decoder directly with a window that fits the
audio (`window="trimmed"`), which cuts a base decode of a short utterance from
~650 ms to ~150 ms on a 2-core CPU; `window="padded"` keeps Whisper's usual 30 s.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens, merge_punctuations

from deployments.asr.config import AsrArgs
from voxray.paths import models_dir

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MAX_WINDOW_S = 30.0
# Text plus timestamp tokens per second of speech, generously; caps runaway decodes.
TOKENS_PER_SECOND = 8
# faster-whisper's defaults for attaching punctuation to words.
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
# A detected language this unlikely gives way to the one the stream spoke so far.
UNSURE_LANGUAGE_P = 0.5
# Models `voxray models prepare` makes from registry packages.
LOCAL_MODELS = ("base", "tiny.en")


@dataclass(frozen=True)
class DecodedWord:
    text: str
    start_s: float  # relative to the decoded audio's first sample
    end_s: float
    probability: float


@dataclass(frozen=True)
class Hypothesis:
    text: str
    words: list[DecodedWord] = field(default_factory=list)
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    decode_ms: float = 0.0
    language: str = ""  # ISO 639-1 code it was decoded in
    language_probability: float = 1.0  # Whisper's, when it detected the language


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]", " ", text.lower()).split()


def _tidy_words(alignment: list[dict]) -> list[DecodedWord]:
    """faster-whisper's own post-processing of DTW word times: punctuation joins its
    word, and a word at a sentence or utterance edge is capped at twice the median
    word length (DTW stretches it into the surrounding silence)."""
    merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
    alignment = [w for w in alignment if w["word"].strip()]
    durations = [w["end"] - w["start"] for w in alignment if w["end"] > w["start"]]
    longest = 2 * min(0.7, float(np.median(durations))) if durations else 0.0
    for i, w in enumerate(alignment):
        if longest and w["end"] - w["start"] > longest:
            if i == len(alignment) - 1 or w["word"].rstrip().endswith(tuple(".!?")):
                w["end"] = w["start"] + longest
            elif i == 0 or alignment[i - 1]["word"].rstrip().endswith(tuple(".!?")):
                w["start"] = w["end"] - longest
    return [DecodedWord(w["word"].strip(), float(w["start"]), float(w["end"]),
                        float(w["probability"])) for w in alignment]


def resolve_model(name: str, directory: Path) -> str:
    """Map a configured model to what faster-whisper loads, without touching a hub
    for the models voxray ships."""
    if Path(name).is_dir():
        return name
    local = directory / f"whisper-{name}"
    if (local / "model.bin").is_file():
        return str(local)
    if name in LOCAL_MODELS:
        raise FileNotFoundError(
            f"Whisper {name!r} is not prepared in {directory}: run `voxray models prepare`"
        )
    return name  # a faster-whisper model name or hub repo (production)


class WhisperEngine:
    """Loads one Whisper model and decodes short audio windows; thread-safe."""

    def __init__(self, args: AsrArgs) -> None:
        self.args = args
        self.model_path = resolve_model(args.model, models_dir(args.models_dir))
        t0 = time.perf_counter()
        self._model = WhisperModel(
            self.model_path,
            device=args.device,
            device_index=args.device_index,
            compute_type=args.compute_type,
            cpu_threads=args.cpu_threads,
            num_workers=args.decode_workers,
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        if not self.multilingual and args.language not in ("en", "auto"):
            raise ValueError(f"Whisper {args.model!r} knows English only, not language "
                             f"{args.language!r}: use a multilingual model or language en")
        self._tokenizers: dict[str, Tokenizer] = {}
        unknown = [c for c in args.languages if c not in _LANGUAGE_CODES]
        if unknown:
            raise ValueError(f"languages: {', '.join(unknown)} not among Whisper's")
        self._allowed = frozenset(args.languages)
        self._tokenizer = self._tokenizer_for(self.language(args.language) or "en")
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))
        self._max_length = self._model.max_length
        log.info("loaded Whisper %s in %.2f s", self.model_path, time.perf_counter() - t0)

    def language(self, asked: str) -> str:
        """The language to decode in for `asked` ("" for the configured one): a code, or
        "" to detect it from the audio. Raises ValueError for one it cannot decode."""
        asked = asked or self.args.language
        if not self.multilingual:
            if asked not in ("en", "auto"):
                raise ValueError(f"this model knows English only, not {asked!r}")
            return "en"
        if asked == "auto":
            return ""
        if asked not in _LANGUAGE_CODES:
            raise ValueError(f"language {asked!r} is not one Whisper knows (ISO 639-1 codes)")
        return asked

    def _detect(self, encoded: object, likely: str) -> tuple[str, float]:
        """The language Whisper hears, among the configured ones, and its probability
        among them; `likely` when the audio does not say clearly."""
        ranked = [(code.strip("<|>"), p) for code, p
                  in self._model.model.detect_language(encoded)[0]]
        if self._allowed:
            ranked = [(c, p) for c, p in ranked if c in self._allowed] or ranked
        total = sum(p for _, p in ranked) or 1.0
        probs = {c: p / total for c, p in ranked}
        lang = ranked[0][0]
        if likely and lang != likely and probs[lang] < UNSURE_LANGUAGE_P:
            lang = likely
        return lang, probs.get(lang, 0.0)

    def _tokenizer_for(self, language: str) -> Tokenizer:
        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self._model.hf_tokenizer, self.multilingual, task="transcribe",
                language=language if self.multilingual else "en")
        return self._tokenizers[language]

    def warmup(self) -> None:
        t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
        self.decode(0.05 * np.sin(2 * np.pi * 220 * t), beam_size=1, with_words=True)

    def _features(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        """Log-mel features of audio padded per the window policy; and the content frames."""
        hop = self._model.feature_extractor.hop_length
        content_frames = len(audio) // hop
        if self.args.window == "padded":
            total = int(MAX_WINDOW_S * SAMPLE_RATE)
        else:
            total = min(len(audio) + int(self.args.window_pad_s * SAMPLE_RATE),
                        int(MAX_WINDOW_S * SAMPLE_RATE))
        padded = np.zeros(total, dtype=np.float32)
        padded[: min(len(audio), total)] = audio[:total]
        feats = self._model.feature_extractor(padded, padding=0)
        frames = feats.shape[-1] - feats.shape[-1] % 2  # the encoder's conv halves the frames
        return np.ascontiguousarray(feats[:, :frames]), min(content_frames, frames)

    def decode(
        self, audio: np.ndarray, *, prompt: str = "", beam_size: int = 1, with_words: bool = True,
        language: str | None = None, likely: str = "",
    ) -> Hypothesis:
        """Transcribe `audio` (float32 mono 16 kHz, at most 30 s) in `language` (a code;
        "": detect it from this audio, keeping to `likely` when the audio does not say
        clearly, as a short "Sí." may not; None: the configured one)."""
        t0 = time.perf_counter()
        lang = self.language(self.args.language) if language is None else language
        if len(audio) < SAMPLE_RATE // 10:
            return Hypothesis(text="", decode_ms=0.0, language=lang)
        feats, content_frames = self._features(audio)
        encoded = self._model.encode(feats)
        lang_p = 1.0
        if not lang:  # one decoder step on the encoder output already made
            lang, lang_p = self._detect(encoded, likely)
        tokenizer = self._tokenizer_for(lang)
        prev = tokenizer.encode(" " + prompt.strip()) if prompt.strip() else []
        # Timestamp mode: on a trimmed window, no-timestamps decoding tends to
        # repeat the utterance into the padding; timestamps show where it does.
        tokens_prompt = self._model.get_prompt(tokenizer, prev, without_timestamps=False)
        duration = len(audio) / SAMPLE_RATE
        budget = int(TOKENS_PER_SECOND * duration) + 10  # bounds the worst-case decode time
        result = self._model.model.generate(
            encoded,
            [tokens_prompt],
            beam_size=beam_size,
            max_length=min(self._max_length, len(tokens_prompt) + budget),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        ids = self._speech_tokens(result.sequences_ids[0], duration)
        text = tokenizer.decode(ids).strip()
        words: list[DecodedWord] = []
        if with_words and ids:
            aligned = self._model.find_alignment(tokenizer, [ids], encoded, content_frames)
            words = _tidy_words(aligned[0])
        return Hypothesis(
            text=text,
            words=words,
            no_speech_prob=float(result.no_speech_prob),
            avg_logprob=float(result.scores[0]) if result.scores else 0.0,  # length-normalised
            decode_ms=(time.perf_counter() - t0) * 1000,
            language=lang,
            language_probability=float(lang_p),
        )

    def _speech_tokens(self, tokens: list[int], duration: float) -> list[int]:
        """Text tokens of the segments that lie inside the audio, minus repeats."""
        ts_begin = self._tokenizer.timestamp_begin
        segments: list[list[int]] = []
        current: list[int] = []
        for t in tokens:
            if t >= ts_begin:
                if current:
                    segments.append(current)
                    current = []
                if (t - ts_begin) * self._model.time_precision >= duration - 0.05:
                    break  # a segment starting in the padding is hallucinated
            elif t < self._tokenizer.eot:
                current.append(t)
        if current:
            segments.append(current)
        kept: list[list[int]] = []
        for seg in segments:
            # A segment that restates the start of the one before is Whisper looping.
            if kept and _words(self._tokenizer.decode(kept[-1]))[: len(_words(
                    self._tokenizer.decode(seg)))] == _words(self._tokenizer.decode(seg)):
                continue
            kept.append(seg)
        return [t for seg in kept for t in seg]

    def is_silence(self, hyp: Hypothesis) -> bool:
        """Whisper's own rule: likely no speech and a low-confidence text."""
        return not hyp.text or (
            hyp.no_speech_prob > self.args.no_speech_threshold and hyp.avg_logprob < -1.0
        )
