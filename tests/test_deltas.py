from hypothesis import given
from hypothesis import strategies as st

from protocol.deltas import AppendOnlyText


def test_words_go_out_once_two_partials_agree_and_the_final_sends_the_rest():
    t = AppendOnlyText()
    assert t.partial("ask not") == ""
    assert t.partial("ask not what") == "ask not"
    assert t.partial("ask not what your") == " what"
    assert t.partial("ask not what you're") == ""  # the tail is revised: held back
    assert t.final("ask not what your country can do") == (" your country can do",
                                                           "ask not what your country can do")


def test_a_final_that_contradicts_sent_words_keeps_them_and_goes_on_after_the_match():
    t = AppendOnlyText()
    t.partial("I would like the")
    t.partial("I would like the salad")
    delta, transcript = t.final("I'd like the Caesar salad")
    assert transcript == "I would like the Caesar salad"
    assert "I would like the" + delta == transcript and t.contradicted


words = st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=8).map(" ".join)


@given(st.lists(words, max_size=8), words)
def test_the_deltas_always_concatenate_to_the_transcript(partials, final):
    t = AppendOnlyText()
    out = "".join(t.partial(p) for p in partials)
    delta, transcript = t.final(final)
    assert out + delta == transcript
    if not t.contradicted:
        assert transcript == " ".join(final.split())
