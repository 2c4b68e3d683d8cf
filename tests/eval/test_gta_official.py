"""GTA's own scoring: subjective answers by embedding similarity (a tiny embedder here), the 172-style
denominator, image-generation credit, and P/O/L/C F1 on hand-built calls."""

import numpy as np
import pytest

from mmat.eval.gta_tools import category_counts, category_f1, gta_names_of
from mmat.eval.items import BenchCall, EvalItem
from mmat.eval.metrics import aggregate
from mmat.eval.outcome import AgentOutcome, OutcomeCall, OutcomeStep
from mmat.eval.results import Scoring, score_outcome
from mmat.eval.similarity import SimilarityModel
from mmat.eval.tables import paper_tables

VOCAB = ["cat", "dog", "red", "blue", "poem", "sea", "sunset", "quiet"]


def bag_of_words(texts):
    """A tiny deterministic sentence embedder: word counts over VOCAB (cosine = word overlap)."""
    return np.array([[t.lower().split().count(w) for w in VOCAB] for t in texts], dtype=float)


TINY = SimilarityModel("bag-of-words", bag_of_words, official=False)


def test_similarity_is_the_best_cosine_over_references_clipped_at_zero():
    assert TINY("red cat", ["red cat", "blue dog"]) == pytest.approx(1.0)
    assert TINY("red cat", ["red dog"]) == pytest.approx(0.5)
    assert TINY("sea", ["cat", "dog"]) == 0.0  # orthogonal
    negative = SimilarityModel("neg", lambda texts: np.array([[1.0, 0.0]] + [[-1.0, 0.0]] * (len(texts) - 1)), official=True)
    assert negative("x", ["y"]) == 0.0  # a negative cosine is clipped at 0
    assert TINY.label.startswith("bag-of-words (GTA uses all-mpnet-base-v2")


def _wl(key, alias, calls=("OCR",)):
    return EvalItem(key=key, question="q", gt={"whitelist": [[alias]], "blacklist": None}, answer_kind="whitelist",
                    gold_tool_calls=["ocr"], bench_calls=[BenchCall(name=c) for c in calls])


def _subj(key, refs):
    return EvalItem(key=key, question="q", gt=refs, answer_kind="subjective", gold_tool_calls=["visualizer"],
                    bench_calls=[BenchCall(name="ImageDescription")])


def _imggen(key, keywords):
    calls = [BenchCall(name="TextToImage", arguments={"keywords": keywords})] if keywords else [BenchCall(name="OCR")]
    return EvalItem(key=key, question="draw", gt=None, answer_kind="none", gold_tool_calls=["image_generator"], bench_calls=calls)


def _outcome(answer, calls=()):
    steps = [OutcomeStep(idx=0, tool_calls=[OutcomeCall(name=n, arguments=a) for n, a in calls])]
    return AgentOutcome(answer=answer, tools_called=[n for n, _ in calls], n_steps=1, steps=steps)


def test_gta_official_counts_objective_plus_subjective_and_imggen_separately():
    items = [_wl("0", "5"), _wl("1", "7"), _subj("2", ["red cat", "quiet sea"]), _imggen("3", "a red cat"), _imggen("4", None)]
    outcomes = {
        "0": _outcome("5", [("ocr", {})]), "1": _outcome("8", [("ocr", {})]), "2": _outcome("red dog", [("visualizer", {})]),
        "3": _outcome("done", [("image_generator", {"prompt": "red cat"})]), "4": _outcome("done"),
    }
    scoring = Scoring(similarity=TINY)
    results = [score_outcome("r", i, 0, outcomes[i.key], scoring=scoring) for i in items]
    assert results[2].ans_acc == {"gta_official": pytest.approx(0.5)} and results[2].counted
    assert results[3].details["imggen"] == pytest.approx(1.0) and results[4].details["imggen"] is None
    m = aggregate("gta", items, results, best_of_n=1, embedding_model=TINY.label)
    official, mat = m.greedy.ans_acc["gta_official"], m.greedy.ans_acc["mat"]
    assert (official.correct, official.counted) == (pytest.approx(1.5), 3)  # 1 + 0 + 0.5 over objective + subjective
    assert (mat.correct, mat.counted) == (1.0, 2)  # MAT's rule: whitelist items only
    assert m.gta.ans_acc_with_imggen.counted == 4 and m.gta.ans_acc_with_imggen.correct == pytest.approx(2.5)
    assert "1 of 2 image-generation items left out" in m.gta.imggen_reason
    table = next(t for t in paper_tables(m) if t.name == "gta_official")
    assert table.values[4] == pytest.approx(0.5) and table.values[5] == pytest.approx(2.5 / 4)
    assert any("bag-of-words" in n for n in table.notes)


def test_without_any_scorable_image_generation_item_imggen_is_null_with_a_reason():
    items = [_wl("0", "5"), _imggen("1", None)]
    results = [score_outcome("r", i, 0, _outcome("5"), scoring=Scoring(similarity=TINY)) for i in items]
    m = aggregate("gta", items, results, best_of_n=1)
    assert m.gta.ans_acc_with_imggen is None
    assert "none of the 1 image-generation items can be scored" in m.gta.imggen_reason


def test_mmat_calls_are_named_back_in_gta_terms_against_the_gold():
    assert gta_names_of(["visualizer", "ocr", "image_edit", "final_answer"], ["CountGivenObject", "MathOCR"]) == [
        "CountGivenObject", "MathOCR", "DrawBox"]
    assert gta_names_of(["visualizer", "ask_search_agent", "image_generator", "facedetection"], []) == [
        "ImageDescription", "GoogleSearch", "TextToImage"]


def test_category_counts_follow_gta_hits_per_gold_call():
    # gold: OCR twice, DrawBox, Calculator (left out: code-only), CountGivenObject; predicted: ocr once, visualizer
    counts, dropped = category_counts(["ocr", "visualizer"], ["OCR", "OCR", "DrawBox", "Calculator", "CountGivenObject"])
    assert dropped == 1
    assert counts["perception"].model_dump() == {"predicted": 1, "gold": 2, "hits": 2}  # each gold OCR call is a hit
    assert counts["operation"].model_dump() == {"predicted": 0, "gold": 1, "hits": 0}
    assert counts["logic"].model_dump() == {"predicted": 1, "gold": 1, "hits": 1}
    assert counts["creativity"].model_dump() == {"predicted": 0, "gold": 0, "hits": 0}


def test_category_f1_is_micro_averaged_with_gtas_guards():
    first, _ = category_counts(["ocr"], ["OCR"])
    second, _ = category_counts(["ocr", "ocr"], ["TextToBbox"])
    scores = category_f1([first, second])
    p = scores["perception"]
    assert (p.predicted, p.gold, p.hits) == (3, 2, 1)
    assert p.precision == pytest.approx(1 / 3, rel=1e-4) and p.recall == 0.5
    assert p.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5), rel=1e-4)
    assert scores["creativity"].f1 is None  # no gold creativity call in the run
    none_predicted, _ = category_counts([], ["DrawBox"])
    assert category_f1([none_predicted])["operation"].f1 == 0.0
