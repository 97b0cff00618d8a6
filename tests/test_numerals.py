from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from text_to_num import alpha2digit

import session.numerals as numerals
from backends.base import Word
from session.numerals import Numerals, numerals_for
from session.options import RecognitionOptions
from session.text import UNCHANGED, Text, stage_for

EN = Numerals("en")


def final(text: str, language: str = "en") -> str:
    return Numerals(language)(Text(text), final=True).text


def timed(text: str, confidence: float | None = 0.9) -> tuple[Word, ...]:
    return tuple(Word(w, 100 * i, 100 * i + 80, confidence) for i, w in enumerate(text.split()))


@pytest.mark.parametrize(("language", "expected"), [
    ("en", "en"), ("en-US", "en"), ("EN_gb", "en"), ("auto", "en"), ("fr", "fr"),
    ("es-419", "es"), ("pt-BR", "pt"), ("de", "de"), ("nl", "nl"), ("it", "it"), ("da", "da"),
])
def test_numerals_for_supported_languages(language, expected):
    assert numerals_for(language).language == expected


@pytest.mark.parametrize("language", ["et", "ko", "ca", "ru", "zh-Hans"])
def test_numerals_for_other_languages_is_none(language):
    assert numerals_for(language) is None
    with pytest.raises(ValueError):
        Numerals(language)


def test_mask_is_no_number_anywhere():
    assert all(numerals._breaker(language, numerals._MASK) for language in numerals.LANGUAGES)


def test_stage_for_numerals():
    stage = stage_for(RecognitionOptions(language="en", numerals=True))
    assert stage(Text("seventy two"), final=True).text == "72"
    assert stage_for(RecognitionOptions(language="ko", numerals=True)) is UNCHANGED
    assert stage_for(RecognitionOptions(language="en")) is UNCHANGED


@pytest.mark.parametrize(("spoken", "written"), [
    # cardinals, money, percent, decimals
    ("I owe you seventy-two, dollars and twenty five cents.",
     "I owe you 72, dollars and 25 cents."),
    ("it costs five dollars", "it costs 5 dollars"),
    ("fifty percent of them", "50 percent of them"),
    ("three point five", "3.5"),
    ("zero point two five", "0.25"),
    ("one hundred and twenty three", "123"),
    ("two thousand and twenty four", "2024"),
    ("a million dollars", "a 1000000 dollars"),
    # ordinals: from third up, and any in a compound
    ("the twenty first of May", "the 21st of May"),
    ("twenty first century", "21st century"),
    ("he came third", "he came 3rd"),
    ("the first time, the second one", "the first time, the second one"),
    ("First, we do this.", "First, we do this."),
    ("wait a second", "wait a second"),
    # "one" as a pronoun or article stays a word
    ("this one is better", "this one is better"),
    ("one of them", "one of them"),
    ("no one knows", "no one knows"),
    ("one day I will", "one day I will"),
    # groups convert whole, small numbers included
    ("one two three", "1 2 3"),
    ("One, two, three.", "1, 2, 3."),
    ("call five five five, one two three four", "call 5 5 5, 1 2 3 4"),
    # known limits (module docstring): years in pairs, digit strings, "oh", linking words
    ("nineteen eighty four", "19 84"),
    ("one zero zero zero one", "1 0001"),
    ("nine oh two one oh", "9 oh 2 1 oh"),
    ("room o five", "room 05"),
    ("one is two", "1 is 2"),
    ("millions of people", "1000000 of people"),
    # a scale word after digits is the model's own number
    ("over 10 million people", "over 10 million people"),
    ("$64 billion, and twenty five", "$64 billion, and 25"),
    # nothing to do
    ("hello there", "hello there"),
    ("oh my god", "oh my god"),
])
def test_english(spoken, written):
    assert final(spoken) == written


@pytest.mark.parametrize(("language", "spoken", "written"), [
    ("fr", "J'ai vingt-cinq ans et trois chats, un chien.", "J'ai 25 ans et 3 chats, un chien."),
    ("fr", "le vingt et unième siècle", "le 21ème siècle"),
    ("fr", "trois virgule cinq", "3,5"),
    ("es", "Compramos veinticinco vacas y tres coma cinco kilos, uno de ellos.",
     "Compramos 25 vacas y 3,5 kilos, uno de ellos."),
    ("es", "treinta y dos euros", "32 euros"),
    ("de", "Ich habe fünfundzwanzig Kühe", "Ich habe 25 Kühe"),
    ("pt", "vinte e cinco vacas", "25 vacas"),
    ("it", "venticinque mucche", "25 mucche"),
    ("nl", "vijfentwintig koeien", "25 koeien"),
    ("da", "femogtyve køer", "25 køer"),
])
def test_other_languages(language, spoken, written):
    assert final(spoken, language) == written


SENTENCES = [
    "I owe you seventy-two, dollars and twenty five cents.",
    "the twenty first of May, nineteen eighty four",
    "one zero zero zero one nine oh two one oh zero one eight zero three",
    "call me at five five five, one two three four. Thanks!",
    "this one is better than two of them",
    "it was three point five percent in twenty twenty",
    "(twenty five) items and a hundred and five more",
    "first, second and third place",
    "Twenty-five. Thirty six? forty-two!",
    "one thousand nine hundred and eighty four, one",
    "I paid 5 dollars and twenty cents",
    "seventy two seventy two twenty twenty",
]


@pytest.mark.parametrize("text", [*SENTENCES, " ".join(SENTENCES * 40)])
def test_rewrite_is_alpha2digit(text):
    """The gap-coded call returns exactly what the library says of the plain text."""
    runs = EN.rewrite(text.split())
    assert " ".join(out for _, out in runs) == " ".join(alpha2digit(text, "en").split())
    assert sum(n for n, _ in runs) == len(text.split())


def test_final_words_merge_times_and_confidence():
    words = (Word("I", 0, 90, 0.9), Word("owe", 100, 190, 0.8), Word("twenty", 200, 390, 0.7),
             Word("five,", 400, 590, 0.6), Word("dollars", 600, 890, 0.95))
    out = EN(Text("I owe twenty five, dollars", words), final=True)
    assert out.text == "I owe 25, dollars"
    assert out.words == (words[0], words[1], Word("25,", 200, 590, 0.6), words[4])


def test_final_words_keep_leading_space_and_punctuation():
    words = (Word(" I", 0, 90, 0.9), Word(" said", 100, 190, 0.9),
             Word(" seventy-two,", 200, 590, 0.5), Word(" twenty", 600, 790, 0.8),
             Word(" one.", 800, 990, 0.7))
    out = EN(Text("I said seventy-two, twenty one.", words), final=True)
    assert out.text == "I said 72, 21."
    assert [w.word for w in out.words] == [" I", " said", " 72,", " 21."]
    assert (out.words[3].start_ms, out.words[3].end_ms, out.words[3].confidence) == (600, 990, 0.7)


def test_final_merged_confidence_unknown_if_any_word_unknown():
    words = (Word("twenty", 0, 100, 0.9), Word("five", 100, 200, None))
    assert EN(Text("twenty five", words), final=True).words == (Word("25", 0, 200, None),)


@pytest.mark.parametrize("text", SENTENCES)
def test_final_words_spell_the_text(text):
    out = EN(Text(text, timed(text)), final=True)
    assert [w.word for w in out.words] == out.text.split()
    assert [w.start_ms for w in out.words] == sorted(w.start_ms for w in out.words)
    assert out.words[0].start_ms == 0 and out.words[-1].end_ms == timed(text)[-1].end_ms


def test_final_keeps_words_the_backend_split():
    words = (Word("cold", 0, 90, 0.9), Word("-hearted", 90, 190, 0.8), Word("105", 200, 290, 0.9),
             Word("%", 290, 300, 0.9), Word("and", 300, 390, 0.9), Word("seventy", 400, 490, 0.7),
             Word("-two", 490, 590, 0.6))
    out = EN(Text("cold-hearted 105% and seventy-two", words), final=True)
    assert out.text == "cold-hearted 105% and 72"
    assert out.words == (*words[:5], Word("72", 400, 590, 0.6))


def test_final_without_numbers_is_untouched():
    text = Text("no  numbers   here", timed("no numbers here"))
    assert EN(text, final=True) is text


def test_final_words_that_do_not_spell_the_text_fall_back():
    text = Text("twenty five dollars", timed("twenty-five dollars"))
    assert EN(text, final=True) is text


def test_untraceable_library_output_falls_back(monkeypatch):
    monkeypatch.setattr(numerals, "alpha2digit", lambda text, lang, threshold: "25 dollars")
    text = Text("I owe twenty five dollars", timed("I owe twenty five dollars"))
    assert EN(text, final=True) is text
    partial = EN(Text("I owe twenty five dollars", stable_chars=5), final=False)
    assert (partial.text, partial.stable_chars) == ("I owe twenty five dollars", 0)


@pytest.mark.parametrize(("text", "stable", "expected"), [
    ("I owe you twenty", "I owe you twenty", ("I owe you 20", "I owe you")),
    ("I owe you twenty five dollars", "I owe you twenty five dollars",
     ("I owe you 25 dollars", "I owe you 25 dollars")),
    ("I have one, two", "I have one,", ("I have 1, 2", "I have")),
    ("it is three point", "it is three point", ("it is 3 point", "it")),  # "is" links
    ("I paid five dollars so", "I paid five dollars so", ("I paid 5 dollars so",
                                                          "I paid 5 dollars")),
    ("one two three and", "one two three and", ("1 2 3 and", "")),
    ("hello world", "", ("hello world", "")),
])
def test_partial_settles_only_finished_numbers(text, stable, expected):
    out = EN(Text(text, stable_chars=len(stable)), final=False)
    assert (out.text, out.stable_text) == expected


PREFIXES = [
    "I owe you twenty", "I owe you twenty five", "I owe you twenty five dollars",
    "it was nineteen", "it was one", "I have one,", "call five five five,",
    "three point", "a hundred and", "the twenty", "the twenty first", "one thousand",
    "he is first", "I paid 5 dollars and", "so it is two", "this one is", "seventy-two.",
    "room o", "hello there friend",
]
CONTINUATIONS = [
    "", "dollars", "five dollars", "and twenty", "point five", "hundred", "thousand and one",
    "first of May", ", two, three", "one two three", "is better", "oh two", "o five",
    "- six", "percent", "eighty four", ". Two", "and then", "-five",
]


def assert_settled_prefix_holds(rewriter, settled: str, partial_tail: str, continuation: str):
    partial = rewriter(Text(f"{settled} {partial_tail}".strip(), stable_chars=len(settled)),
                       final=False)
    final_text = rewriter(Text(f"{settled} {continuation}".strip()), final=True).text
    promised = partial.stable_text.split()
    assert final_text.split()[: len(promised)] == promised, (settled, continuation)


@pytest.mark.parametrize("settled", PREFIXES)
def test_partial_stable_prefix_survives_any_continuation(settled):
    for tail, continuation in itertools.product(CONTINUATIONS, CONTINUATIONS):
        assert_settled_prefix_holds(EN, settled, tail, continuation)


VOCAB = {
    "en": ["one", "two", "three", "five", "twenty", "forty-two", "hundred", "thousand", "and",
           "point", "oh", "o", "first", "second", "twenty-first", "dollars", "I", "is", "so",
           "the", "five,", "twenty.", "percent", "zero", "nineteen", "eighty", "a", "-", "5",
           "dollars,", "So,", "Two.", "(three", "uh", "10", "$5", "million", "billion,"],
    "fr": ["un", "deux", "vingt", "vingt-et-un", "cent", "mille", "et", "virgule", "neuf",
           "premier", "unième", "chats", "le", "un,", "livre", "plus"],
    "es": ["uno", "un", "dos", "veinte", "treinta", "y", "cien", "mil", "coma", "punto",
           "vacas", "primer", "que", "dos,", "el"],
}


@pytest.mark.parametrize("language", sorted(VOCAB))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_partial_stable_prefix_property(language, data):
    words = st.lists(st.sampled_from(VOCAB[language]), max_size=8)
    settled, tail, continuation = (" ".join(data.draw(words)) for _ in range(3))
    assert_settled_prefix_holds(Numerals(language), settled, tail, continuation)


def test_bench_normaliser_is_number_neutral():
    pytest.importorskip("jiwer")
    from bench.numerals import neutral

    assert neutral("1,0001 One, two. 3.5% that's 21st") == "10001 one two 3.5 that's 21st"
    assert neutral("Twenty-five") == "twenty five"
