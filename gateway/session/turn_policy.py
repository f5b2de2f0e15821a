"""When a pause ends the user's turn: the turn policy.

At a pause (min_silence_ms of silence after speech) up to three kinds of
evidence say whether the user has finished:

* audio: Smart Turn's probability that the speaker is done (intonation,
  lengthening, the way a phrase ends). It hears prosody, not meaning: an opening
  phrase that plainly announces more can still score 0.97.
* words: the ASR's pause decode of the turn so far. A trailing conjunction,
  preposition, article or filler ("and", "to", "the", "um"), a trailing comma,
  dash or ellipsis (Whisper writes "..." where speech breaks off), or a lone
  "if ..." or "before we ..." clause say "not finished" (the last firmly: its
  period is Whisper's guess at a pause, and the clause still wants its main
  clause); a question mark says "finished".
* llm: the LLM app's probability that the user's message ends where the words
  stop (its next token would close the message). It reads the words in the
  conversation's context, so it knows "how to get" wants more. Tiny for an open
  phrase, small even for a finished one: mapped on a log scale, 1 % -> even odds.

Each gives a probability; they are summed in log-odds with the configured
weights (evidence that is missing or disabled counts 0). The silence the turn
then waits for shrinks as the evidence for "finished" grows:

    wait = min_silence_ms + (max_silence_ms - min_silence_ms) * (1 - p)

so a clear question ends after a few hundred ms and a trailing "and ..." waits
for max_silence_ms, then ends anyway. A speaker who resumes inside the wait
continues the same turn. With speculative replies the answer is prepared
during the wait, so waiting costs no TTFAT while the answer is not ready yet.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from gateway.config import TurnConfig

# p(finished) from the words alone.
P_WORDS_UNFINISHED = 0.05  # trailing continuation word or mark
P_WORDS_LONE_CLAUSE = 0.02  # "Before we start." with no main clause after it
P_WORDS_OPEN = 0.35  # no end mark: it may go on
P_WORDS_STATEMENT = 0.7  # ends with . or !
P_WORDS_QUESTION = 0.85  # ends with ?
LLM_EVEN_ODDS_P_END = 0.01
LLM_SLOPE = 1.5  # log-odds per decade of P(end)

# Words after which a speaker is not done: conjunctions, prepositions, articles and
# determiners, fillers. Only words that seldom end a finished sentence are here
# ("that", "some", "her", "though" often do, so they are not).
CONTINUATION_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("""
        and or but because cause if whether than unless
        to for from of in on at with without about by into onto through between as
        the a an my your his its our their every
        um uh er erm uhm ah hmm mm very
        """.split()),
    "es": frozenset("""
        y o pero porque si cuando mientras que cual quien donde como para por de del en con
        sin sobre entre hasta desde el la los las un una unos unas mi tu su nuestro
        este esta estos estas ese esa eh em pues muy
        """.split()),
    "fr": frozenset("""
        et ou mais parce si quand lorsque que qui dont pour par de du des en dans avec sans
        sur sous entre vers chez le la les un une mon ma mes ton ta tes son sa ses notre
        votre leur ce cette ces euh ben bah donc très
        """.split()),
    # German verb particles (an, auf, mit, zu ...) end finished sentences: not listed.
    "de": frozenset("""
        und oder aber weil wenn als ob dass der die das den dem des ein eine einen einem
        einer mein dein sein unser euer für von ohne über unter äh ähm also sehr
        """.split()),
    "it": frozenset("""
        e o ma perché se quando mentre che chi cui per da di del della in con senza su
        tra fra il lo la i gli le un uno una mio tuo suo nostro questo questa quel ehm
        cioè molto
        """.split()),
    "pt": frozenset("""
        e ou mas porque se quando enquanto que quem onde como para por de do da dos das em
        no na com sem sobre entre até desde o a os as um uma meu minha seu sua nosso
        este esta esse essa éh hum muito
        """.split()),
}
# English questions may end in a preposition ("Where are you from?"): with a question
# mark these only leave the turn open.
STRANDABLE = frozenset("""
    to for from of in on at with without about by into onto through between as
    """.split())
# A lone clause opened by these wants a main clause after it ("If it rains tomorrow.").
OPENERS: dict[str, tuple[str, ...]] = {
    "en": ("if", "although", "though", "unless", "even if", "whenever", "in case",
           "as soon as", "so that"),
    "es": ("si", "aunque", "cuando", "en caso de que", "antes de que", "después de que"),
    "fr": ("si", "quand", "lorsque", "bien que", "même si", "avant que", "après que"),
    "de": ("wenn", "falls", "obwohl", "sobald", "bevor", "nachdem"),
    "it": ("se", "quando", "sebbene", "anche se", "prima che", "dopo che"),
    "pt": ("se", "quando", "embora", "caso", "antes que", "depois que"),
}
# English words that open a clause only when a subject follows: "Before we start." wants
# more, "Before noon." or "After the meeting." answers a question.
CLAUSE_PREPOSITIONS = frozenset("before after until till since once while when".split())
SUBJECTS = re.compile(r"(i|we|you|he|she|it|they|there|someone|somebody|everyone|everybody)"
                      r"(['’](m|re|s|ve|ll|d))?$")
_TRAILING_MARK = re.compile(r"(\.\.\.|…|-|—|–|,|:|;)\s*$")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?", re.UNICODE)


def words_p_finished(text: str, language: str = "en") -> float | None:
    """p(finished) from the words of the turn so far; None when there are none."""
    text = text.strip()
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return None
    base = language.split("-")[0].lower()
    continuation = CONTINUATION_WORDS.get(base, CONTINUATION_WORDS["en"])
    if _TRAILING_MARK.search(text):
        return P_WORDS_UNFINISHED
    if words[-1] in continuation:
        stranded = base == "en" and text.endswith("?") and words[-1] in STRANDABLE
        return P_WORDS_OPEN if stranded else P_WORDS_UNFINISHED
    if text.endswith("?"):
        return P_WORDS_QUESTION
    if _lone_clause(re.split(r"[.!?]\s+", text)[-1].lower(), base):
        return P_WORDS_LONE_CLAUSE
    if text.endswith((".", "!", "。", "！")):
        return P_WORDS_STATEMENT
    return P_WORDS_OPEN


def _lone_clause(sentence: str, language: str) -> bool:
    """The last sentence is a subordinate clause with no main clause after it."""
    if re.search(r"[,;:]", sentence):
        return False
    if any(sentence.startswith(o + " ") for o in OPENERS.get(language, OPENERS["en"])):
        return True
    words = _WORD.findall(sentence)
    return (language == "en" and len(words) >= 3 and words[0] in CLAUSE_PREPOSITIONS
            and SUBJECTS.match(words[1]) is not None)


def llm_p_finished(p_end: float) -> float:
    """p(finished) from the LLM's P(the next token ends the user's message)."""
    # Below the model's top 20 next tokens counts as 1e-4: one ASR slip must not weigh
    # like certainty.
    x = LLM_SLOPE * (math.log10(max(p_end, 1e-4)) - math.log10(LLM_EVEN_ODDS_P_END))
    return 1 / (1 + math.exp(-x))


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class Evidence:
    audio: float | None = None  # Smart Turn p(finished)
    words: str | None = None  # the pause decode's text (None: not in yet)
    llm: float | None = None  # the LLM's P(end of the user's message)
    language: str = "en"


@dataclass(frozen=True)
class Verdict:
    p_finished: float
    wait_ms: int
    parts: dict[str, float]  # p per kind of evidence that counted


class TurnPolicy:
    def __init__(self, cfg: TurnConfig) -> None:
        self.cfg = cfg

    def judge(self, e: Evidence) -> Verdict:
        c = self.cfg
        parts: dict[str, float] = {}
        if "audio" in c.evidence and e.audio is not None:
            parts["audio"] = e.audio
        if "words" in c.evidence and e.words is not None:
            p = words_p_finished(e.words, e.language)
            if p is not None:
                parts["words"] = p
        if "llm" in c.evidence and e.llm is not None:
            parts["llm"] = llm_p_finished(e.llm)
        weights = {"audio": c.audio_weight, "words": c.words_weight, "llm": c.llm_weight}
        score = sum(weights[k] * _logit(p) for k, p in parts.items())
        p = 1 / (1 + math.exp(-score))
        wait = c.min_silence_ms + (c.max_silence_ms - c.min_silence_ms) * (1 - p)
        return Verdict(p, round(wait), parts)
