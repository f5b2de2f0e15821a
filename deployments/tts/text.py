"""Text a voice agent's LLM emits, made speakable: units with spans, then normalised words.

Units are cut from the raw text, so each unit's span refers to what the client
sent; normalisation (markdown, emoji, numbers, currency, abbreviations) happens
per unit, on the way to the phonemiser.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from num2words import num2words

ABBREVIATIONS = {
    "dr.": "doctor", "mr.": "mister", "mrs.": "missus", "ms.": "miz", "prof.": "professor",
    "st.": "saint", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example",
    "i.e.": "that is", "approx.": "approximately", "no.": "number", "jr.": "junior",
    "sr.": "senior", "min.": "minutes", "sec.": "seconds", "km": "kilometres",
    "kg": "kilograms", "cm": "centimetres", "mm": "millimetres", "ft": "feet", "lb": "pounds",
    "lbs": "pounds", "oz": "ounces", "mph": "miles per hour",
}
_NOT_SENTENCE_END = re.compile(r"(?:\b(?:" + "|".join(
    re.escape(a[:-1]) for a in ABBREVIATIONS if a.endswith(".")) + r")|\b[A-Za-z]|\d)\.$",
    re.IGNORECASE)
CLAUSE_MARKS = ",;:—–"
SENTENCE_MARKS = ".!?…"
CURRENCIES = {"$": ("dollar", "cent"), "€": ("euro", "cent"), "£": ("pound", "penny")}


@dataclass(frozen=True)
class Unit:
    start: int  # [start, end) in the text received so far
    end: int
    text: str  # raw text of the span


class UnitSplitter:
    """Cuts a growing text into speakable units as soon as each one is complete.

    Units grow: the first is cut at a clause mark or after `first_unit_max_words`
    words, and each next one may hold twice as many words, so every unit is
    synthesised while the one before it plays; from the fifth on, units are
    whole sentences (up to `max_unit_chars`), which sound best, unless a sentence
    runs past twice the words of the unit before it: then it is cut at a clause
    mark once it has as many words as that unit, or at twice as many. A long
    sentence after a short unit would otherwise leave seconds of silence. Words are
    counted as spoken: a number is the words it is read as.
    """

    GROWING_UNITS = 4

    def __init__(self, first_unit_max_words: int, max_unit_chars: int) -> None:
        self._first_words = first_unit_max_words
        self._max_chars = max_unit_chars
        self.text = ""
        self._start = 0  # where the next unit begins
        self._units = 0
        self._last_words = first_unit_max_words  # in the unit before the next one

    def feed(self, delta: str) -> list[Unit]:
        self.text += delta
        units = []
        while (end := self._next_boundary()) is not None:
            units.append(self._emit(end))
        return units

    def flush(self) -> list[Unit]:
        """Everything pending, as one unit (end of input, or an explicit flush)."""
        if self._start < len(self.text):
            return [self._emit(len(self.text))]
        return []

    def _emit(self, end: int) -> Unit:
        unit = Unit(self._start, end, self.text[self._start : end])
        self._start = end
        self._units += 1
        self._last_words = max(sum(spoken_words(w) for w in unit.text.split()), 1)
        return unit

    def _next_boundary(self) -> int | None:
        """End of the next complete unit in the pending text (a mark must be followed by
        whitespace, so "3.5" or "e.g" still growing is not cut)."""
        pending = self.text[self._start :]
        growing = self._units < self.GROWING_UNITS
        max_words = self._first_words * 2**self._units
        words = 0
        last_space = None
        word_start = 0
        for m in re.finditer(r"\s+", pending):
            i = m.start()
            before = pending[:i].rstrip()
            if not before:
                continue
            words += spoken_words(pending[word_start:i])
            word_start = m.end()
            last_space = m.end()
            mark = before[-1]
            if "\n" in m.group() and before:  # line ends: list items, paragraphs
                return self._start + m.end()
            if mark in SENTENCE_MARKS and not _NOT_SENTENCE_END.search(before):
                return self._start + m.end()
            if growing and (mark in CLAUSE_MARKS or words >= max_words):
                return self._start + m.end()
            if not growing and (words >= 2 * self._last_words or
                                (mark in CLAUSE_MARKS and words >= self._last_words)):
                return self._start + m.end()
            if i >= self._max_chars:
                return self._start + m.end()
        if len(pending) > 2 * self._max_chars and last_space is None:
            return self._start + self._max_chars  # no whitespace at all: cut anyway
        return None


_MARKDOWN = [
    (re.compile(r"```.*?```", re.S), " "),  # code blocks are not read out
    (re.compile(r"`([^`]*)`"), r"\1"),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links keep their text
    (re.compile(r"https?://\S+"), " link "),
    (re.compile(r"^\s{0,3}#{1,6}\s*", re.M), ""),  # headings
    (re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+", re.M), ""),  # list bullets
    (re.compile(r"(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # emphasis
    (re.compile(r"^\s*>\s?", re.M), ""),  # quotes
    (re.compile(r"^\s*[-*_]{3,}\s*$", re.M), " "),  # rules
    (re.compile(r"\|"), ", "),  # table cells
]


def _drop_symbols(text: str) -> str:
    """Emoji and other pictographs have no sound."""
    return "".join(
        " " if unicodedata.category(c) in ("So", "Sk", "Cs", "Co") or 0xFE00 <= ord(c) <= 0xFE0F
        or ord(c) == 0x200D else c
        for c in text
    )


def _money(m: re.Match[str]) -> str:
    unit, sub = CURRENCIES[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    cents = int((m.group(3) or "0").ljust(2, "0")[:2])
    words = f"{num2words(whole)} {unit}{'' if whole == 1 else 's'}"
    if unit == "pound" and whole != 1:
        words = f"{num2words(whole)} pounds"
    if cents:
        subs = "pence" if sub == "penny" and cents != 1 else sub + ("" if cents == 1 else "s")
        words += f" and {num2words(cents)} {subs}"
    return f" {words} "


def _number(m: re.Match[str]) -> str:
    raw = m.group(0).replace(",", "")
    if re.fullmatch(r"(1[1-9]|20)\d\d", raw) and m.group(0) == raw:
        return num2words(int(raw), to="year")  # type: ignore[no-any-return]
    if "." in raw:
        return num2words(float(raw))  # type: ignore[no-any-return]
    return num2words(int(raw))  # type: ignore[no-any-return]


def _clock(m: re.Match[str]) -> str:
    hour, minutes, half = int(m.group(1)), int(m.group(2)), m.group(3)
    if half:  # "9:00am", "9:30 p.m."
        said = num2words(hour) + ("" if minutes == 0 else f" {_minutes(minutes)}")
        return f"{said} {half.upper()}M"
    return f"{num2words(hour)} " + ("o'clock" if minutes == 0 else _minutes(minutes))


def _minutes(minutes: int) -> str:
    return f"oh {num2words(minutes)}" if minutes < 10 else num2words(minutes)


def normalize(text: str, english: bool = True) -> str:
    """Words for the phonemiser: markdown and emoji dropped, numbers and symbols spelt out
    (in English; other languages keep their digits, which espeak-ng reads in each)."""
    for pattern, repl in _MARKDOWN:
        text = pattern.sub(repl, text)
    text = _drop_symbols(text)
    if english:
        text = _spell_out(text)
    text = re.sub(r"[*_#~`<>\[\]{}^|\\]", " ", text)
    text = re.sub(r"(?<=[\w)])\s*\n+\s*(?=\S)", ", ", text)  # a line break is a pause
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\s+([,.!?;:])", r"\1", text).strip()


def _spell_out(text: str) -> str:
    text = re.sub(r"([$€£])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?\b", _money, text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s?%", lambda m: f"{m.group(1)} percent", text)
    # "p.m." keeps its last dot where it ends the sentence (a lower-case word goes on)
    text = re.sub(r"\b(\d{1,2}):(\d{2})(?:\s?([ap])\.?m\b(?:\.(?=\s+(?-i:[a-z])))?|\b)", _clock,
                  text, flags=re.IGNORECASE)
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: num2words(int(m.group(1)), to="ordinal"),
                  text)
    text = re.sub(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", _number, text)
    text = re.sub(r"\s&\s", " and ", text)
    for abbr, words in ABBREVIATIONS.items():
        escaped = re.escape(abbr) if abbr.endswith(".") else re.escape(abbr) + r"\b"
        text = re.sub(r"(?<![\w.])" + escaped, words, text, flags=re.IGNORECASE)
    return text


def spoken_words(word: str) -> int:
    """How many words a word of the text is spoken as: "8,938.88" is nine, "$12" two. Units
    are sized in these, since a run's time follows what is said."""
    if not any(c.isdigit() for c in word):
        return 1
    return max(len(normalize(word).split()), 1)


def pause_after(words: str, sentence: float, clause: float) -> float:
    """The pause a unit of these (normalised) words is followed by: `sentence` after a
    sentence mark, `clause` after a clause mark, else none. Closing quotes and brackets
    are looked through."""
    mark = words.rstrip(" \"')]\u201d\u2019\u300d")[-1:]
    if not mark:
        return 0.0
    if mark in SENTENCE_MARKS or mark in "\u3002\uff01\uff1f":
        return sentence
    if mark in CLAUSE_MARKS or mark in "\uff0c\u3001":
        return clause
    return 0.0


def speakable(text: str) -> bool:
    return any(c.isalnum() for c in text)
