from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import Word
from session.overlap import Seam, drop_words, merge_text, merge_words, repeated_prefix, trim_text


def timed(text: str, start_ms: int, step_ms: int = 300) -> tuple[Word, ...]:
    return tuple(Word(w, start_ms + i * step_ms, start_ms + i * step_ms + step_ms - 50)
                 for i, w in enumerate(text.split()))


def texts(words) -> str:
    return " ".join(w.word for w in words)


# The previous segment ended at 20 s; the next one replays from 19 s.
PREVIOUS = timed("for although the Chinese took impressions", 18_200)  # last ends 19_450
SEAM = Seam(PREVIOUS, replay_ms=19_000, cut_ms=20_000)


def test_an_exact_repeat_is_dropped():
    following = timed("took impressions from wood blocks", 19_000)
    assert texts(merge_words(SEAM, following)) == "from wood blocks"


def test_case_and_punctuation_do_not_hide_a_repeat():
    following = timed("Took impressions, from wood blocks.", 19_000)
    assert texts(merge_words(SEAM, following)) == "from wood blocks."


def test_a_word_split_differently_at_the_cut_aligns_as_a_partial_match():
    previous = timed("for although the Chinese took impres", 18_200)
    seam = Seam(previous, replay_ms=19_000, cut_ms=19_500)
    following = timed("took impressions from wood", 19_000)
    assert texts(merge_words(seam, following)) == "from wood"
    # the next segment started inside a word: its broken first word goes with the repeat
    assert texts(merge_words(SEAM, timed("pressions from wood", 19_100))) == "from wood"


def test_a_cut_in_a_pause_keeps_everything():
    following = timed("from wood blocks", 20_100)
    assert merge_words(SEAM, following) == following
    no_tail = Seam(timed("a b c", 1_000), replay_ms=19_000, cut_ms=20_000)
    assert merge_words(no_tail, timed("took impressions", 19_000)) == timed(
        "took impressions", 19_000), "the previous final said nothing in the replayed audio"


def test_empty_sides():
    assert merge_words(SEAM, ()) == ()
    assert merge_words(Seam((), 19_000, 20_000), PREVIOUS) == PREVIOUS
    assert repeated_prefix([], ["a"]) == 0 and repeated_prefix(["a"], []) == 0


def test_words_said_again_later_are_not_a_repeat():
    following = timed("took impressions", 19_000) + timed("took impressions", 23_000)
    assert texts(merge_words(SEAM, following)) == "took impressions"


def test_with_nothing_in_common_only_a_word_on_the_previous_last_one_goes():
    # "impressions" is 19_700-19_950: a word heard again there, misheard, is dropped
    assert texts(merge_words(SEAM, timed("impetus from wood", 19_700))) == "from wood"
    # earlier words could be speech the previous final missed: kept (a repeat, not a loss)
    following = timed("tuck impetus from wood", 19_400)
    assert merge_words(SEAM, following) == following
    # a first word stamped from the segment's start is not inside the last word either
    early = (Word("for", 19_000, 20_200),) + timed("although the", 20_200)
    assert merge_words(SEAM, early) == early
    # a last word stretched over speech the decoder left out ends where no word would
    stretched = Seam(PREVIOUS[:-1] + (Word("impressions", 19_700, 22_000),), 21_000, 22_500)
    after = timed("from wood", 21_300)  # "impressions" could last till 21_100, not 22_000
    assert merge_words(stretched, after) == after


def test_words_the_previous_final_never_reached_are_kept():
    """Whisper may stop before a long segment's end: the replay supplies what it missed."""
    previous = timed("for although the Chinese", 18_200)  # stopped at 19_150, cut at 20_000
    seam = Seam(previous, replay_ms=19_000, cut_ms=20_000)
    following = timed("Chinese took impressions from", 19_000)
    assert texts(merge_words(seam, following)) == "took impressions from"


def test_merge_text_cuts_the_text_in_place_and_keeps_its_spacing():
    following = timed("took impressions from wood", 19_000)
    text, words = merge_text(SEAM, "took impressions from  wood", following)
    assert text == "from  wood" and texts(words) == "from wood"
    assert merge_text(SEAM, "took impressions from wood", ()) == ("from wood", ())


def test_trim_text_says_how_much_went():
    assert trim_text(SEAM, "impressions from wood") == ("from wood", len("impressions "))
    assert trim_text(SEAM, "from wood") == ("from wood", 0)
    assert trim_text(Seam((), 0, 0), "took impressions") == ("took impressions", 0)
    assert drop_words("a b", 5) == ("", 3)


SAID = st.lists(st.sampled_from("the a cat sat on mat and".split()), min_size=1, max_size=12)
NEW = st.lists(st.sampled_from("dog ran far away home".split()), max_size=12)


@settings(max_examples=300, deadline=None)
@given(SAID, NEW, st.integers(1, 6))
def test_the_replayed_words_are_dropped_and_the_new_ones_kept(before, after, overlap):
    """A speaker says ``before`` then ``after``; the next segment replays the last
    ``overlap`` words of ``before``: the merge gives back exactly ``after`` (however often
    words repeat inside ``before``)."""
    overlap = min(overlap, len(before))
    said = timed(" ".join(before + after), 0)
    cut = len(before)
    previous = said[:cut]
    seam = Seam(previous, replay_ms=said[cut - overlap].start_ms,
                cut_ms=previous[-1].end_ms + 50)
    assert merge_words(seam, said[cut - overlap:]) == said[cut:]
