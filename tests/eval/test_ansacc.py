"""AnsAcc scorers on hand-made answers: aliases, blacklists, word boundaries, numbers, lists, strings."""

import pytest

from mmat.eval.ansacc import ans_acc_gaia, ans_acc_gaia_lenient, ans_acc_gta, ans_acc_mat, parse_number, score_answer
from mmat.eval.items import EvalItem

# ---- MAT: case-insensitive substring, every group, blacklist ignored -----------------------------------


def test_mat_any_alias_of_each_group_must_appear():
    whitelist = [["Tokyo", "東京"], ["3", "three"]]
    assert ans_acc_mat("You need THREE tickets to tokyo.", whitelist)
    assert ans_acc_mat("東京: 3", whitelist)
    assert not ans_acc_mat("Three tickets to Osaka", whitelist)  # second group matched, first not


def test_mat_is_a_substring_rule_without_word_boundaries():
    assert ans_acc_mat("The total is 1234 dollars", [["23"]])  # substring inside a longer number counts
    assert ans_acc_mat("cathedral", [["cat"]])


def test_mat_empty_whitelist_is_never_right():
    assert not ans_acc_mat("anything", [])


# ---- GTA official: word boundaries + blacklist -----------------------------------------------------------


def test_gta_requires_word_boundaries():
    assert ans_acc_gta("There are 5 apples.", [["5"]])
    assert not ans_acc_gta("There are 15 apples.", [["5"]])
    assert not ans_acc_gta("cathedral", [["cat"]])
    assert ans_acc_gta("The CAT sat", [["cat"]])  # case-insensitive


def test_gta_alias_with_regex_characters_is_literal():
    assert ans_acc_gta("Use C++ here", [["C++", "cpp"]]) is False  # '\b' after '+' needs a word char: GTA's quirk
    assert ans_acc_gta("the value is 3.5 m", [["3.5"]])
    assert not ans_acc_gta("the value is 3x5 m", [["3.5"]])  # '.' is escaped, not a wildcard


def test_gta_blacklist_rejects_even_when_whitelist_matches():
    whitelist, blacklist = [["yes"]], [["no"], ["not sure"]]
    assert ans_acc_gta("yes, it is", whitelist, blacklist)
    assert not ans_acc_gta("yes or no", whitelist, blacklist)
    assert not ans_acc_gta("yes, but I am not sure", whitelist, blacklist)
    assert ans_acc_gta("yes, nothing else", whitelist, blacklist)  # 'no' inside 'nothing' is not a word match


def test_gta_every_group_must_match():
    whitelist = [["red"], ["blue", "navy"]]
    assert ans_acc_gta("red and navy", whitelist)
    assert not ans_acc_gta("red only", whitelist)


def test_mat_and_gta_disagree_where_they_should():
    # substring-right, word-boundary-wrong
    assert ans_acc_mat("It costs 150", [["50"]]) and not ans_acc_gta("It costs 150", [["50"]])
    # blacklist ignored by MAT, honoured by GTA
    assert ans_acc_mat("yes and no", [["yes"]]) and not ans_acc_gta("yes and no", [["yes"]], [["no"]])


# ---- GAIA normalised --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("17", 17.0), ("17 km", 17.0), ("$1,234.50", 1234.5), ("42%", 42.0), ("€ 12", 12.0), ("-3.5", -3.5),
        ("3 m/s", 3.0), ("20°C", 20.0), ("5 kg.", 5.0), ("1e3", 1000.0), ("about 17", None), ("17 and 18", None),
        ("seventeen", None), ("", None),
    ],
)
def test_lenient_parse_number_strips_units_currency_and_commas(text, value):
    assert parse_number(text) == value


def test_gaia_numbers_compare_as_floats():
    assert ans_acc_gaia("1,000", "1000")
    assert ans_acc_gaia("$1000.0", "1000")
    assert not ans_acc_gaia("17 km", "17")  # the leaderboard strips no units (gaia_lenient does)
    assert ans_acc_gaia("0.50", "0.5")
    assert not ans_acc_gaia("17.1", "17")
    assert not ans_acc_gaia("The answer is 17", "17")  # GAIA wants the bare answer


def test_gaia_lists_compare_element_wise():
    assert ans_acc_gaia("apple, Banana; cherry", "apple, banana, cherry")
    assert ans_acc_gaia("1,000; 2", "1000; 2") is False  # '1,000' splits into two elements: GAIA's rule
    assert ans_acc_gaia("3, 4.0", "3, 4")
    assert not ans_acc_gaia("apple, cherry, banana", "apple, banana, cherry")  # order matters
    assert not ans_acc_gaia("apple, banana", "apple, banana, cherry")  # length matters


def test_gaia_strings_ignore_case_whitespace_and_punctuation():
    assert ans_acc_gaia("  Saint-Petersburg! ", "saint petersburg")
    assert ans_acc_gaia("St. Louis", "st louis")
    assert not ans_acc_gaia("Saint Petersburg, Russia", "Saint Petersburg")


# ---- per item: which items count -------------------------------------------------------------------------


def _item(kind, gt):
    return EvalItem(key="k", question="q", gt=gt, answer_kind=kind)


def test_whitelist_items_count_under_mat_gta_and_gta_official():
    item = _item("whitelist", {"whitelist": [["5"]], "blacklist": [["6"]]})
    score = score_answer(item, "5 or 6")
    assert score.counted and score.scores == {"mat": 1.0, "gta": 0.0, "gta_official": 0.0}


def test_subjective_items_count_only_under_gta_official_and_only_with_a_similarity():
    item = _item("subjective", ["a nice poem", "a short verse"])
    assert score_answer(item, "a nice poem").counted is False  # no embedding model given
    scored = score_answer(item, "a poem", similarity=lambda answer, refs: 0.8 if "a nice poem" in refs else 0.0)
    assert scored.counted and scored.scores == {"gta_official": 0.8}
    clipped = score_answer(item, "x", similarity=lambda answer, refs: -0.3)
    assert clipped.scores == {"gta_official": 0.0}  # cosine clipped at 0
    assert score_answer(item, None, similarity=lambda a, r: 1.0).scores == {"gta_official": 0.0}
    assert score_answer(_item("none", None), "anything").scores == {}


def test_gaia_items_count_under_gaia_its_lenient_twin_and_mat_and_none_prediction_scores_zero():
    item = _item("gaia", "Paris")
    assert score_answer(item, "paris").scores == {"gaia": 1.0, "gaia_lenient": 1.0, "mat": 1.0}
    assert score_answer(item, "It is Paris.").scores == {"gaia": 0.0, "gaia_lenient": 0.0, "mat": 1.0}
    assert score_answer(item, None).scores == {"gaia": 0.0, "gaia_lenient": 0.0, "mat": 0.0}


# ---- properties ---------------------------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ascii = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_alias = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=8)


@given(pred=_ascii, whitelist=st.lists(st.lists(_alias, min_size=1, max_size=3), min_size=1, max_size=3))
def test_gta_right_implies_mat_right(pred, whitelist):
    # a word-boundary match is a substring match, so the official rule is never more lenient than MAT's
    if ans_acc_gta(pred, whitelist):
        assert ans_acc_mat(pred, whitelist)


@given(whitelist=st.lists(st.lists(_alias, min_size=1, max_size=3), min_size=1, max_size=3))
def test_answer_listing_first_aliases_is_right_under_mat(whitelist):
    assert ans_acc_mat(" | ".join(group[0] for group in whitelist), whitelist)


@given(value=st.integers(min_value=-10**9, max_value=10**9))
def test_gaia_accepts_thousands_separators_but_not_units_for_integers(value):
    assert ans_acc_gaia(f"{value:,}", str(value))
    assert not ans_acc_gaia(f"{value:,} units", str(value))
    assert ans_acc_gaia_lenient(f"{value:,} units", str(value))
