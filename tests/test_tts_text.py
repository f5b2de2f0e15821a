import pytest

from deployments.tts.text import UnitSplitter, normalize, pause_after, speakable, spoken_words


@pytest.mark.parametrize(("raw", "spoken"), [
    ("It costs $5.50.", "It costs five dollars and fifty cents."),
    ("Only $1 or £3!", "Only one dollar or three pounds!"),
    ("About 1,250 km", "About one thousand, two hundred and fifty kilometres"),
    ("$1,200.05", "one thousand, two hundred dollars and five cents"),
    ("Save 20% now", "Save twenty percent now"),
    ("Meet at 10:30 on the 3rd", "Meet at ten thirty on the third"),
    ("Open 9:00am to 12:15PM, or 7:05 p.m. daily", "Open nine AM to twelve fifteen PM, or "
     "seven oh five PM daily"),
    ("At 6:00 and 6:07", "At six o'clock and six oh seven"),
    ("It opens at 8:30 a.m. Be early.", "It opens at eight thirty AM. Be early."),
    ("Born in 1984, aged 41", "Born in nineteen eighty-four, aged forty-one"),
    ("Pi is 3.14", "Pi is three point one four"),
    ("**Sure!** Here is *one* `idea`", "Sure! Here is one idea"),
    ("# Title\n- first\n- second", "Title, first, second"),
    ("See [the docs](https://example.org/x) 😀👍", "See the docs"),
    ("Dr. Smith & Mr. Jones, e.g. today", "doctor Smith and mister Jones, for example today"),
    ("```python\nprint(1)\n``` Done.", "Done."),
    ("About 29,031 ft (5 lbs) at 60 mph", "About twenty-nine thousand and thirty-one feet "
     "(five pounds) at sixty miles per hour"),
])
def test_normalize(raw: str, spoken: str) -> None:
    assert normalize(raw) == spoken


def test_symbols_only_is_not_speakable() -> None:
    assert not speakable(normalize("🙂 ** -- ✨"))


@pytest.mark.parametrize(("words", "pause"), [
    ("It is Paris.", 0.25), ("Really?", 0.25), ("Wait!", 0.25), ("So…", 0.25),
    ('He said "go."', 0.25), ("(as planned.)", 0.25), ("です。", 0.25),
    ("Sure,", 0.1), ("first;", 0.1), ("as follows:", 0.1),
    ("the capital", 0.0), ("", 0.0), ("  ", 0.0), ("3.5", 0.0),
])
def test_a_unit_is_followed_by_the_pause_of_the_mark_it_ends_with(words: str,
                                                                  pause: float) -> None:
    assert pause_after(words, 0.25, 0.1) == pause


def units_of(deltas: list[str], first_words: int = 2) -> list[tuple[int, int, str]]:
    s = UnitSplitter(first_words, 300)
    out = [u for d in deltas for u in s.feed(d)] + s.flush()
    return [(u.start, u.end, u.text) for u in out]


TEXT = ("Sure! The price is $3.50 today, e.g. for Dr. Smith. Is that OK?\n"
        "- yes\n- no")


def test_units_grow_from_a_short_first_one_to_sentences() -> None:
    units = units_of([TEXT])
    assert [u[2] for u in units] == [
        "Sure! ", "The price is $3.50 ", "today, ", "e.g. for Dr. Smith. ", "Is that OK?\n",
        "- yes\n", "- no"]
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen " \
        "fifteen sixteen seventeen eighteen nineteen twenty twenty-one twenty-two twenty-three " \
        "twenty-four twenty-five twenty-six twenty-seven twenty-eight twenty-nine thirty, " \
        "thirty-one thirty-two. End."
    sizes = [len(u[2].split()) for u in units_of([text])]
    assert sizes[:4] == [2, 4, 8, 16] and sizes[4:] == [2, 1]


def test_a_long_sentence_after_a_short_unit_is_cut_at_its_clauses() -> None:
    """Units after the fourth are sentences, but one may not outgrow the unit before it by
    more than twice: it would take longer to make than that unit takes to play."""
    text = ("The highest mountain is Everest. It stands at eight thousand, eight hundred and "
            "forty-nine metres, which is about twenty-nine thousand feet, on the border of "
            "Nepal and China. It was first climbed in 1953.")
    units = [u[2] for u in units_of([text], first_words=1)]
    assert "".join(units) == text
    sizes = [len(u.split()) for u in units]
    assert sizes[:4] == [1, 2, 2, 5]  # growing: "The", "highest mountain", "is Everest." ...
    assert all(b <= 2 * a for a, b in zip(sizes[3:], sizes[4:], strict=False)), units
    # the long sentence in three units, each cut at a clause mark; then a whole sentence
    assert units[4:] == ["eight hundred and forty-nine metres, ",
                         "which is about twenty-nine thousand feet, ",
                         "on the border of Nepal and China. ", "It was first climbed in 1953."]


def test_a_number_counts_as_the_words_it_is_read_as() -> None:
    assert [spoken_words(w) for w in ("8,938.88", "$12", "1993", "meters", "3rd")] == \
        [9, 2, 2, 1, 1]
    # "8,938.88" takes as long to say (and to make) as nine words: the unit ends after it,
    # not a sentence later
    units = [u[2] for u in units_of(["Sure, it is 8,938.88 meters high, or 29,031 feet."], 1)]
    assert units == ["Sure, ", "it is ", "8,938.88 ", "meters high, ", "or 29,031 ", "feet."]


def test_first_unit_cut_by_word_count_without_punctuation() -> None:
    assert units_of(["The capital of France is Paris."])[0][2] == "The capital "


def test_streamed_deltas_give_the_same_units_as_whole_text() -> None:
    deltas = [TEXT[i : i + 3] for i in range(0, len(TEXT), 3)]
    assert units_of(deltas) == units_of([TEXT])


def test_spans_are_contiguous_and_cover_the_text() -> None:
    units = units_of([TEXT])
    assert units[0][0] == 0 and units[-1][1] == len(TEXT)
    assert all(a[1] == b[0] for a, b in zip(units, units[1:], strict=False))
    assert "".join(u[2] for u in units) == TEXT


def test_a_unit_is_not_cut_before_its_mark_is_followed_by_space() -> None:
    s = UnitSplitter(8, 300)
    assert s.feed("It is 3.") == []  # could be 3.5
    assert [u.text for u in s.feed("5 now. ")] == ["It is 3.5 now. "]
    assert s.flush() == []


def test_long_text_without_sentence_marks_is_cut() -> None:
    units = units_of(["word " * 200], first_words=2)
    assert len(units) > 3 and all(len(u[2]) <= 310 for u in units)
