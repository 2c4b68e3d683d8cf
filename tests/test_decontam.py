from mmat.decontam import NgramIndex, ngrams

BENCH = "Please look at the receipt in the image and tell me how much I paid in total for the two coffees and the cake."


def test_shared_13gram_is_contaminated():
    index = NgramIndex([BENCH])
    edited = "Hi! look at the receipt in the image and tell me how much I paid in total for the two coffees, thanks"
    assert index.contaminated(edited)


def test_12_shared_words_are_not_enough():
    index = NgramIndex([BENCH])
    shared = "look at the receipt in the image and tell me how much"
    assert len(shared.split()) == 12
    query = f"Now {shared} it weighs"
    assert not index.contaminated(query)


def test_case_and_punctuation_do_not_hide_a_copy():
    index = NgramIndex([BENCH])
    assert index.contaminated(BENCH.upper().replace(" ", "  ,"))


def test_short_texts_have_no_ngrams():
    assert ngrams("too short to matter") == set()
    assert not NgramIndex(["too short"]).contaminated("too short")
