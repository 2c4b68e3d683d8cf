"""The demo's summary says how many tasks and trajectories the rule checks rejected, and which checks."""

from mmat.demo import DemoSummary, rule_counts
from mmat.store.rows import rules_row
from mmat.programs.rules import RuleFailure, RuleVerdict
from mmat.store import open_store


def verdict(*failures):
    return RuleVerdict(passed=not failures, failures=[RuleFailure(check=c, reason=r) for c, r in failures])


def test_rule_counts_and_the_summary_line(mmat_settings):
    fallback = ("final_answer_called", "final_answer was never called (the steps ran out; status fallback)")
    junk = ("answer_not_degenerate", "the answer repeats 'your task is incomplete' over and over")
    with open_store(mmat_settings) as store:
        store.writer.put("verdicts", [
            rules_row("trajectory", "t1", verdict(fallback, junk)),
            rules_row("trajectory", "t1", verdict(fallback, junk), salt="verify-run"),  # mmat verify again: counted once
            rules_row("trajectory", "t2", verdict(fallback)),
            rules_row("trajectory", "t3", verdict()),
            rules_row("task", "k1", verdict(("files_attached", "the query refers to 1 image(s) but 0 are attached"))),
            rules_row("task", "k2", verdict()),
        ])
        store.writer.flush()
        counts = rule_counts(store)
    assert counts["trajectory"].model_dump() == {"checked": 3, "rejected": 2, "why": {"final_answer_called": 2,
                                                                                      "answer_not_degenerate": 1}}
    assert counts["task"].model_dump() == {"checked": 2, "rejected": 1, "why": {"files_attached": 1}}
    summary = DemoSummary(synth_line="synth x", tasks={"failed": 2}, trajectories=3, correct=1, rules=counts, lm_calls=[],
                          adapter=None, train_line="finetune: skipped", seconds=1.0)
    lines = summary.render().splitlines()
    assert lines[2] == ("rule checks rejected 2 of 3 trajectories (final_answer_called 2, answer_not_degenerate 1) and "
                        "1 of 2 tasks (files_attached 1), before any verifier model was asked: "
                        "mmat sql \"select subject_kind, reasons from verdicts where verifier = 'rules' and not passed\"")


def test_an_empty_store_says_zero(mmat_settings):
    with open_store(mmat_settings) as store:
        counts = rule_counts(store)
    summary = DemoSummary(synth_line="s", tasks={}, trajectories=0, correct=0, rules=counts, lm_calls=[], adapter=None,
                          train_line="t", seconds=0.0)
    assert summary.rules_line().startswith("rule checks rejected 0 of 0 trajectories and 0 of 0 tasks,")
