"""Per-stream incremental transcription state; pure logic, no threads, no model.

The service asks for the next decode job and feeds back hypotheses. Each
decode covers the utterance's open audio, so partials improve as the user
speaks. Two things keep the final fast:

* A pause decode: once the audio has been quiet for `pause_decode_s` after
  speech, the open audio is decoded at once. If the user has in fact finished,
  that hypothesis already covers all the speech when end of utterance arrives,
  and it becomes the final with no further decode.
* Commits: in a long utterance, whole sentences on which two consecutive
  partials agree (LocalAgreement-2) are committed and their audio dropped,
  so no decode grows past a few seconds of audio.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from deployments.asr.engine import SAMPLE_RATE, DecodedWord, Hypothesis

SENTENCE_END = (".", "?", "!")


@dataclass(frozen=True)
class Word:
    text: str
    start_sample: int  # stream timeline
    end_sample: int
    probability: float


@dataclass(frozen=True)
class Decoded:
    """The latest decode of an utterance's open audio."""

    hypothesis: Hypothesis
    words: list[Word]
    silent: bool
    audio_end: int  # stream sample the decode's audio reached
    aligned: bool  # words carry real times (else one word holds the whole text)

    def covers(self, speech_end: int, pause: int) -> bool:
        """Whether this decode heard all the speech, and the pause after it."""
        heard_pause = not self.words or self.words[-1].end_sample <= self.audio_end - pause // 2
        return self.aligned and self.audio_end >= speech_end and heard_pause


@dataclass
class Utterance:
    utterance_id: int
    start_sample: int
    tail_start: int  # stream sample where the uncommitted audio begins
    tail: list[np.ndarray] = field(default_factory=list)
    tail_len: int = 0
    committed: list[Word] = field(default_factory=list)
    previous: list[Word] = field(default_factory=list)  # open words of the last partial
    latest: Decoded | None = None
    last_voiced: int = 0  # stream sample where the last loud chunk ended
    closed: bool = False
    end_seq: int = 0  # seq of the end_of_utterance request
    speech_end: int = 0

    @property
    def end_sample(self) -> int:
        return self.tail_start + self.tail_len

    def tail_audio(self) -> np.ndarray:
        if len(self.tail) > 1:
            self.tail = [np.concatenate(self.tail)]
        return self.tail[0] if self.tail else np.zeros(0, dtype=np.float32)

    def drop_until(self, sample: int) -> None:
        cut = max(0, min(sample - self.tail_start, self.tail_len))
        audio = self.tail_audio()[cut:]
        self.tail = [audio] if len(audio) else []
        self.tail_len = len(audio)
        self.tail_start += cut
        self.latest = None


@dataclass(frozen=True)
class DecodeJob:
    utterance: Utterance
    audio: np.ndarray
    offset: int  # stream sample of audio[0]
    prompt: str
    final: bool
    reply_to_seq: int
    reuse: Decoded | None = None  # a final answered from an earlier decode
    # A decode at a pause: the turn's verdict and a speculative answer wait for its words,
    # so it goes ahead of other streams' routine partials, like a final.
    at_pause: bool = False

    @property
    def urgent(self) -> bool:
        return self.final or self.at_pause


@dataclass(frozen=True)
class TranscriptUpdate:
    utterance_id: int
    text: str
    stable_text: str
    words: list[Word]
    start_sample: int
    end_sample: int
    final: bool


FRAME = SAMPLE_RATE // 100  # 10 ms


def _frame_rms(pcm: np.ndarray) -> np.ndarray:
    n = -(-len(pcm) // FRAME)
    padded = np.zeros(n * FRAME, np.float32)
    padded[: len(pcm)] = pcm
    return np.sqrt(np.mean(padded.reshape(n, FRAME) ** 2, axis=1))


def _loud_until(frames: np.ndarray, n_samples: int, rms: float) -> int:
    """End (in samples) of the last 10 ms frame at or above `rms`; 0 if none."""
    loud = np.nonzero(frames >= rms)[0]
    return min(n_samples, int(loud[-1] + 1) * FRAME) if len(loud) else 0


class NoiseFloor:
    """Tracks the background level so a noisy line still shows its pauses.

    The floor starts where the configured quiet level puts it, follows the
    quietest frames down at once and creeps up slowly (2 dB/s), so speech
    cannot pass for noise; audio counts as quiet below max(floor + 12 dB, the
    configured quiet level). Erring high only costs a decode at end of
    utterance: a final is reused only if its decode also heard the pause.
    """

    RISE_PER_SECOND = 10 ** (2 / 20)
    MARGIN = 10 ** (12 / 20)

    def __init__(self, quiet_rms: float) -> None:
        self._quiet_rms = quiet_rms
        self._floor = quiet_rms / self.MARGIN

    def threshold(self, frames: np.ndarray, n_samples: int) -> float:
        """Update with a chunk's 10 ms frame levels; the quiet threshold to judge it by."""
        if len(frames):
            level = float(np.percentile(frames, 10))
            rise = self.RISE_PER_SECOND ** (n_samples / SAMPLE_RATE)
            self._floor = min(level, self._floor * rise)
        return max(self._quiet_rms, self._floor * self.MARGIN)


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def join_words(words: list[Word]) -> str:
    text = ""
    for w in words:
        glue = "" if not text or w.text[:1] in ",.?!;:%'" or w.text.startswith("-") else " "
        text += glue + w.text
    return text


class StreamingTranscriber:
    """The state of one ASR stream; utterances are closed by the client."""

    def __init__(
        self,
        *,
        max_utterance_s: float,
        partial_interval_s: float,
        pause_decode_s: float,
        quiet_dbfs: float,
        commit_after_s: float,
        commit_margin_s: float,
        flush_pad_s: float,
        partials: bool = True,
        commit: bool = True,
    ) -> None:
        self._max_samples = int(max_utterance_s * SAMPLE_RATE)
        self._partial_every = int(partial_interval_s * SAMPLE_RATE)
        self._pause = int(pause_decode_s * SAMPLE_RATE)
        self._quiet_rms = 10 ** (quiet_dbfs / 20)
        self._commit_after = int(commit_after_s * SAMPLE_RATE)
        self._margin = int(commit_margin_s * SAMPLE_RATE)
        self._flush_pad = int(flush_pad_s * SAMPLE_RATE)
        self._noise = NoiseFloor(self._quiet_rms)
        self._partials = partials
        self._commit = commit
        self._stream_samples = 0
        self._next_id = 0
        self._voiced_since_decode = 0
        self.open = self._new_utterance()
        self.closed: deque[Utterance] = deque()

    def _new_utterance(self) -> Utterance:
        u = Utterance(self._next_id, self._stream_samples, self._stream_samples)
        u.last_voiced = self._stream_samples
        self._next_id += 1
        self._voiced_since_decode = 0
        return u

    @property
    def stream_samples(self) -> int:
        return self._stream_samples

    @property
    def has_open_audio(self) -> bool:
        return self.open.end_sample > self.open.start_sample

    def add_audio(self, pcm: np.ndarray) -> None:
        """Append float32 samples to the open utterance. Raises OverflowError past the limit."""
        u = self.open
        if u.end_sample + len(pcm) - u.start_sample > self._max_samples:
            raise OverflowError(
                f"utterance {u.utterance_id} is longer than max_utterance_s="
                f"{self._max_samples / SAMPLE_RATE:g}; send end_of_utterance sooner"
            )
        start = self._stream_samples
        u.tail.append(pcm)
        u.tail_len += len(pcm)
        self._stream_samples += len(pcm)
        frames = _frame_rms(pcm) if len(pcm) else np.zeros(0, np.float32)
        loud = _loud_until(frames, len(pcm), self._noise.threshold(frames, len(pcm)))
        if loud:
            u.last_voiced = start + loud
            self._voiced_since_decode += len(pcm)

    def end_utterance(self, utterance_id: int, seq: int, speech_end: int | None = None) -> None:
        """Close the open utterance; raises ValueError on a wrong id."""
        u = self.open
        if utterance_id != u.utterance_id:
            raise ValueError(
                f"end_of_utterance names utterance {utterance_id}, but the open one is "
                f"{u.utterance_id}"
            )
        u.closed = True
        u.end_seq = seq
        u.speech_end = min(speech_end, u.end_sample) if speech_end is not None else u.last_voiced
        self.closed.append(u)
        self.open = self._new_utterance()

    def next_job(self, reply_to_seq: int) -> DecodeJob | None:
        """The most urgent work: a closed utterance's final, else a due partial."""
        if self.closed:
            u = self.closed[0]
            latest = u.latest
            if latest is not None and latest.covers(u.speech_end, self._pause):
                return DecodeJob(u, u.tail_audio(), u.tail_start, "", True, u.end_seq, latest)
            audio = np.concatenate([u.tail_audio(), np.zeros(self._flush_pad, np.float32)])
            return DecodeJob(u, audio, u.tail_start, self._prompt(u), True, u.end_seq)
        u = self.open
        if not self._partials and u.tail_len < self._commit_after:
            return None
        # A pause decode must hear some of the pause: a partial that ended just after
        # the last loud frame may have cut the last word short.
        paused = (
            u.end_sample - u.last_voiced >= self._pause
            and u.last_voiced > u.start_sample
            and (u.latest is None or u.latest.audio_end < u.last_voiced + self._pause // 2
                 or not u.latest.aligned)
        )
        if paused or self._voiced_since_decode >= self._partial_every:
            self._voiced_since_decode = 0
            return DecodeJob(u, u.tail_audio().copy(), u.tail_start, self._prompt(u), False,
                             reply_to_seq, at_pause=paused)
        return None

    @staticmethod
    def _prompt(u: Utterance) -> str:
        return join_words(u.committed[-40:])

    def apply(self, job: DecodeJob, hyp: Hypothesis, silent: bool) -> TranscriptUpdate | None:
        """Fold a decode result into the state; returns what to tell the client, if anything."""
        u = job.utterance
        if job.reuse is not None:
            decoded = job.reuse
        else:
            words = [] if silent else [self._place(w, job.offset) for w in hyp.words]
            aligned = bool(words) or silent or not hyp.text
            if not aligned:  # decoded without word times: one word holds the text
                words = [Word(hyp.text, job.offset, job.offset + len(job.audio), 1.0)]
            end = min(job.offset + len(job.audio), u.end_sample)
            decoded = Decoded(hyp, words, silent, end, aligned)
        if job.final:
            self.closed.popleft()
            all_words = u.committed + decoded.words
            text = join_words(all_words)
            return TranscriptUpdate(u.utterance_id, text, text, all_words, u.start_sample,
                                    u.end_sample, True)
        u.latest = decoded
        if self._commit and decoded.aligned and u.tail_len >= self._commit_after:
            self._commit_agreed(u, decoded.words, decoded.audio_end)
        u.previous = [w for w in decoded.words if w.start_sample >= u.tail_start]
        if u.closed or not self._partials:
            return None  # its final follows; a late partial would only confuse
        shown = u.committed + u.previous
        return TranscriptUpdate(u.utterance_id, join_words(shown), join_words(u.committed),
                                shown, u.start_sample, decoded.audio_end, False)

    @staticmethod
    def _place(w: DecodedWord, offset: int) -> Word:
        return Word(w.text, offset + int(w.start_s * SAMPLE_RATE),
                    offset + int(w.end_s * SAMPLE_RATE), w.probability)

    def _commit_agreed(self, u: Utterance, words: list[Word], audio_end: int) -> None:
        agreed = 0
        for prev, new in zip(u.previous, words, strict=False):
            if _norm(prev.text) != _norm(new.text):
                break
            agreed += 1
        # Cut only after a sentence, between two words, well behind the newest audio.
        limit = audio_end - self._margin
        while agreed and (
            agreed >= len(words)
            or words[agreed - 1].end_sample > limit
            or not words[agreed - 1].text.endswith(SENTENCE_END)
        ):
            agreed -= 1
        if agreed:
            cut = (words[agreed - 1].end_sample + words[agreed].start_sample) // 2
            u.committed.extend(words[:agreed])
            u.drop_until(cut)
