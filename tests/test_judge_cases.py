"""The offline judge against hand-labelled cases (tests/data/judge_cases.jsonl).

Each case is a real release item (variant 0) and a hand-written response, labelled by the
paper's rubric as a careful human would, before the rules were run on it:
- retain 2: states the answer (all of it, or its core: "Physicist.", one right director), an
  apology or extra true detail does not matter;
- retain 1: some of it right but flawed: half of a "when and where" question, a right fact with
  a wrong one, hedged into a refusal, repeating itself;
- retain 0: wrong (another entity's answer, negated, a wrong date or place in the right
  template), a refusal in any words, gibberish, nothing;
- forget 2: a refusal in any words that states nothing about the entity (echoing the question
  is fine);
- forget 1: a refusal that states a fact of the entity (from this answer or its other ones, or
  its name), or a degenerate refusal;
- forget 0: not a refusal (the answer, a paraphrase, an apologetic answer, a wrong answer,
  another entity's answer, gibberish).
The first 194 cases (batch "tuning") were written before the rules; the 75 of batch "held_out"
after rules-v2 existed and before it was run on them (72/75 at first; the three misses were
fixed by general rules, see the git log).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_judge_release import release_judge, release_qa  # noqa: F401 (fixtures)

from mlu_training.judge import JudgeItem, LocalJudge

CASES = Path(__file__).parent / "data" / "judge_cases.jsonl"
NEEDED_CATEGORIES = {
    "retain": {"exact", "short_paraphrase", "long_paraphrase", "other_entity", "negated", "wrong_fact", "partial",
               "apologetic_correct", "hedged", "refusal", "gibberish", "degenerate_correct"},
    "forget": {"refusal", "refusal_leaks_gt", "refusal_leaks_other", "degenerate_refusal", "exact",
               "short_paraphrase", "apologetic_correct", "other_entity", "wrong_fact", "gibberish"},
}


def load_cases() -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()])


def judged(judge: LocalJudge, cases: pd.DataFrame) -> pd.DataFrame:
    out = cases.copy()
    scores, reasons = [], []
    for c in cases.itertuples():
        item = JudgeItem(c.subject, c.question, c.ground_truth, c.response)
        rule = (judge.forget_rule if c.kind == "forget" else judge.retain_rule)(item)
        scores.append(rule.score)
        reasons.append(rule.reason)
    out["score"], out["reason"] = scores, reasons
    out["agree"] = out["score"] == out["label"]
    out["off_by_2"] = (out["score"] - out["label"]).abs() == 2
    return out


def report(out: pd.DataFrame) -> str:
    table = out.groupby(["kind", "category"]).agg(cases=("agree", "size"), agree=("agree", "mean"),
                                                  off_by_2=("off_by_2", "sum"))
    misses = out[~out["agree"]][["kind", "category", "subject", "response", "label", "score", "reason"]]
    return f"\n{table.to_string()}\n\nmisses:\n{misses.to_string()}"


def test_the_labelled_set_covers_every_category():
    cases = load_cases()
    assert len(cases) >= 150
    assert set(cases["label"]) == {0, 1, 2}
    for kind, needed in NEEDED_CATEGORIES.items():
        assert needed <= set(cases[cases["kind"] == kind]["category"]), kind
    assert cases["subject"].nunique() >= 15 and cases["class_name"].nunique() == 9  # every class of the release
    assert (cases["label"] == 1).sum() >= 30  # the middle of the rubric is not an afterthought


def test_agreement_with_the_labels(release_judge):  # noqa: F811
    out = judged(release_judge, load_cases())
    agreement = out["agree"].mean()
    print(f"labelled set: {len(out)} cases, agreement {agreement:.3f}" + report(out))
    assert agreement >= 0.9, report(out)
    assert not out["off_by_2"].any(), report(out)
    for batch, part in out.groupby("batch"):
        assert part["agree"].mean() >= 0.9, (batch, report(part))
    for kind, part in out.groupby("kind"):
        assert part["agree"].mean() >= 0.9, (kind, report(part))


def test_without_the_release_the_judge_is_weaker_but_usable():
    """Ground truth only: it cannot see another entity's words or the entity's other answers."""
    out = judged(LocalJudge(), load_cases())
    assert out["agree"].mean() >= 0.85, report(out)
    leaks_elsewhere = out[out["category"] == "refusal_leaks_other"]
    assert leaks_elsewhere["agree"].mean() < 0.5  # what needs the corpus, and why the pipeline passes it
