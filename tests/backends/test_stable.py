"""Settled words (backends.stable): agreement, monotony and the final's promise."""

from hypothesis import given
from hypothesis import strategies as st

from backends.base import Alternative, Hypothesis, Word
from backends.stable import Settler, keep_promise, normalise, rejoin


def settled_after(decodes: list[str], **kw) -> list[str]:
    settler = Settler(**kw)
    for text in decodes:
        settler.update(text.split())
    return settler.settled


def test_two_agreeing_decodes_settle_their_shared_words():
    assert settled_after(["the cat", "the cat sat"]) == ["the", "cat"]
    assert settled_after(["the cat"]) == []  # one decode proves nothing


def test_agreement_is_case_and_punctuation_blind_and_keeps_the_settled_spelling():
    assert settled_after(["hello world", "Hello, world. again"]) == ["Hello,", "world."]


def test_three_decodes_must_agree_when_asked():
    assert settled_after(["a b", "a c"], agree=3) == []
    assert settled_after(["a b", "a b", "a b c"], agree=3) == ["a", "b"]


def test_the_last_word_is_held_back():
    assert settled_after(["a b", "a b"], hold_back=1) == ["a"]


def test_a_settled_word_is_never_taken_back_and_a_disagreeing_decode_rejoins_after_it():
    settler = Settler()
    settler.update("we met at noon".split())
    settler.update("we met at noon".split())
    shown = settler.update("he met at noon today".split())
    assert settler.settled == ["we", "met", "at", "noon"]
    assert shown.text == "we met at noon today"
    assert shown.text[: shown.stable_chars] == "we met at noon"


def test_finished_pieces_settle_at_once():
    settler = Settler()
    settler.commit("first piece".split())
    assert settler.settled == ["first", "piece"]
    shown = settler.update("first piece and more".split())
    assert shown.text[: shown.stable_chars] == "first piece"


def test_a_final_that_keeps_the_promise_is_untouched():
    final = Hypothesis("The cat sat.", words=(Word("The", 0, 100), Word("cat", 100, 200),
                                              Word("sat.", 200, 300)))
    kept = keep_promise(final, ["the", "cat"])  # case and punctuation aside
    assert kept.hypothesis is final and kept.revised == 0


def test_where_it_splices_a_word_both_said_stays_as_the_final_has_it():
    final = Hypothesis("The hat, sat.", words=(Word("The", 0, 100), Word("hat,", 100, 200),
                                               Word("sat.", 200, 300, 0.9)))
    kept = keep_promise(final, ["the", "cat", "sat"])
    assert kept.hypothesis.text == "The cat sat." and kept.revised == 1
    assert kept.hypothesis.words == (final.words[0], Word("cat", 100, 200), final.words[2])


def test_a_final_that_breaks_the_promise_begins_with_the_settled_words_all_the_same():
    final = Hypothesis("a hat sat down", words=(
        Word("a", 0, 100), Word("hat", 100, 300), Word("sat", 300, 400), Word("down", 400, 500)),
        alternatives=(Alternative("a hat sat down", 1.0),))
    kept = keep_promise(final, ["the", "cat", "sat"])
    assert kept.hypothesis.text == "the cat sat down"
    assert kept.revised == 2
    assert [w.word for w in kept.hypothesis.words] == ["the", "cat", "sat", "down"]
    assert kept.hypothesis.words[0].start_ms == 0 and kept.hypothesis.words[2].end_ms == 400
    assert kept.hypothesis.words[0].confidence is None  # the model did not say it
    assert kept.hypothesis.alternatives[0].text == "the cat sat down"


def test_an_empty_final_still_carries_the_settled_words():
    kept = keep_promise(Hypothesis(""), ["hello", "there"])
    assert kept.hypothesis.text == "hello there" and kept.revised == 2


def test_rejoin_finds_where_the_settled_words_end():
    assert rejoin(["a", "b"], ["a", "b", "c"]) == 2
    assert rejoin(["x", "b"], ["a", "b", "c"]) == 2
    assert rejoin(["x", "y"], ["a", "b", "c"]) == 2  # two words said otherwise
    assert rejoin(["a", "b", "c"], ["a", "x", "b", "c", "d"]) == 4  # the final said more


_words = st.lists(st.sampled_from(["a", "b", "c", "a,", "B."]), max_size=8)


@given(st.lists(_words, min_size=1, max_size=8), _words, st.integers(2, 3), st.integers(0, 2))
def test_settled_words_only_grow_and_every_final_begins_with_them(decodes, final, agree, hold):
    settler = Settler(agree=agree, hold_back=hold)
    before: list[str] = []
    for words in decodes:
        shown = settler.update(words)
        assert settler.settled[: len(before)] == before
        before = list(settler.settled)
        if shown is not None:
            assert shown.text[: shown.stable_chars].split() == settler.settled
    kept = keep_promise(Hypothesis(" ".join(final)), settler.settled)
    said = kept.hypothesis.text.split()
    assert [normalise(w) for w in said[: len(settler.settled)]] == [
        normalise(w) for w in settler.settled]


@given(st.lists(st.lists(st.sampled_from("a b c d e".split()), max_size=6), min_size=1,
                max_size=6), st.integers(1, 3), st.integers(0, 2))
def test_candidates_says_how_many_words_the_next_update_settles(decodes, agree, hold_back):
    """A caller skips the word alignment when ``candidates`` is 0: then ``update`` must settle
    nothing, and otherwise exactly that many words (with no ``settleable`` limit)."""
    settler = Settler(agree=agree, hold_back=hold_back)
    for words in decodes:
        before = len(settler.settled)
        expected = settler.candidates(words)
        settler.update(words)
        assert len(settler.settled) - before == expected


def test_candidates_before_enough_decodes_agree():
    settler = Settler(agree=2)
    assert settler.candidates(["hello", "world"]) == 0  # the first decode settles nothing
    settler.update(["hello", "world"])
    assert settler.candidates(["hello", "there"]) == 1
    assert settler.candidates(["goodbye"]) == 0
