"""Word error rate, for tests and benchmarks of speech in and out."""

from __future__ import annotations

import re

_NUMBERS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six",
    "7": "seven", "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve",
    "20": "twenty", "30": "thirty",
}
_SPELLING = {"kilometers": "kilometres", "ok": "okay"}


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; small numbers spelt out."""
    text = re.sub(r"\$(\d+)", r"\1 dollars", text.lower())  # "$5" and "five dollars" agree
    words = re.sub(r"[^\w' ]", " ", text.replace("-", " ")).split()
    out: list[str] = []
    for w in words:
        w = _SPELLING.get(w, w)
        out.extend(_NUMBERS.get(w, w).split())
    return out


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diag, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            cost = diag + (ref[i - 1] != hyp[j - 1])
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, cost)
    return row[len(hyp)], len(ref)


def wer(reference: str, hypothesis: str) -> float:
    errors, n = word_errors(reference, hypothesis)
    return errors / max(n, 1)
