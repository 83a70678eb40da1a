"""The paper's findings beside ours: its appendix numbers (kept as data, with their source, in
data/paper_results.json) next to the same cells of mlu's runs, and a plain verdict per finding,
computed from the numbers, never written by hand:

(a) degradation: each ascent baseline's forget quality on task A falls below half of its A-UA value
    by the last request, and its utility on task A ends at 0.2 or less;
(b) unimodal: GA and NPO confined to the projector also end with utility on task A at 0.2 or less
    (the paper's claim is about the language model and the projector; runs confined to the vision
    tower are shown beside it, outside the verdict);
(c) LUMoE is flat: |FQ(A-UA) − FQ(A-UD)| ≤ 0.05, with utility on task A ≥ 0.9 at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

from .sequences import ci_high, ci_low, xuy_metric

ASCENT = ("ga", "kl", "gd", "npo")
UNIMODAL = ("projector", "vision_tower")  # the paper's ablation: unlearning confined to one part (mlu run --unimodal)
FLAT, COLLAPSED = 0.05, 0.2


@lru_cache(maxsize=1)
def paper_results() -> dict:
    return json.loads((Path(__file__).parent / "data" / "paper_results.json").read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Verdict:
    finding: str  # degradation | unimodal | lumoe
    claim: str  # the paper's, in words
    agrees: bool | None  # None: mlu has no run to say
    evidence: str  # mlu's numbers behind it


def _cell(metrics: dict, metric: str, cell: str) -> tuple:
    x, y = cell.split("-U")
    name = xuy_metric(metric, x, y)
    return metrics.get(name), metrics.get(ci_low(name)), metrics.get(ci_high(name))


def _fmt(value, low=None, high=None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if low is None else f"{value:.2f} [{low:.2f}, {high:.2f}]"


def side_by_side(runs: dict[str, dict]) -> pd.DataFrame:
    """Every cell the paper reports, with ours for the same method, metric and cell (runs: the
    report's, labelled by method; only runs whose order starts with the paper's first task)."""
    first = paper_results()["order"][0]
    by_method = {run["method"]: run for run in runs.values() if run["tasks"][0] == first}  # the same cells mean the same
    rows = []
    for entry in paper_results()["cells"]:
        run = by_method.get(entry["method"])
        for cell, paper in entry["values"].items():
            ours = _cell(run["metrics"], entry["metric"], cell) if run else (None, None, None)
            rows.append({"method": entry["method"], "metric": entry["metric"].replace("_", " "), "cell": cell,
                         "paper": f"{paper:.3f}", "mlu [95 % CI]": _fmt(*ours)})
    return pd.DataFrame(rows)


def verdicts(runs: dict[str, dict]) -> list[Verdict]:
    by_method = {run["method"]: run for run in runs.values()}
    claims = paper_results()["findings"]

    def task_a(method: str, metric: str, cell: str):
        run = by_method.get(method)
        return _cell(run["metrics"], metric, cell)[0] if run and run["tasks"][0] == "A" else None

    def last(method: str) -> str:
        return f"A-U{by_method[method]['tasks'][-1]}"

    out = []
    evidence, agree = [], []
    for m in ASCENT:
        if m not in by_method:
            continue
        fq0, fq1 = task_a(m, "forget_quality", "A-UA"), task_a(m, "forget_quality", last(m))
        ut1 = task_a(m, "utility", last(m))
        if None in (fq0, fq1, ut1):
            continue
        falls = fq1 < fq0 / 2 if fq0 > 0 else False
        agree.append(falls and ut1 <= COLLAPSED)
        why = "" if agree[-1] else _why_not_degrading(fq0, fq1, task_a(m, "forget_correctness", "A-UA"),
                                                      task_a(m, "utility", "A-UA"))
        evidence.append(f"{m} {'agrees' if agree[-1] else 'disagrees'}: FQ on A {fq0:.2f} → {fq1:.2f}"
                        f"{'' if falls else ' (does not fall by half)'}, utility on A at the end {ut1:.2f}{why}")
    out.append(Verdict("degradation", claims["degradation"], all(agree) if agree else None,
                       "; ".join(evidence) or "no ascent baseline ran"))
    evidence, agree = [], []
    for m in ("ga", "npo"):
        for part in UNIMODAL:
            label = f"{m} [{part}]"
            if label in by_method:
                ut1 = task_a(label, "utility", last(label))
                if ut1 is not None:
                    claimed = part == "projector"
                    if claimed:
                        agree.append(ut1 <= COLLAPSED)
                    evidence.append(f"{label}{'' if claimed else ' (beyond the claim)'}: utility on A at the end {ut1:.2f}")
    out.append(Verdict("unimodal", claims["unimodal"], all(agree) if agree else None,
                       "; ".join(evidence) or "no run confined to the projector or the vision tower"))
    if "lumoe" in by_method:
        fq0, fq1 = task_a("lumoe", "forget_quality", "A-UA"), task_a("lumoe", "forget_quality", last("lumoe"))
        ut1 = task_a("lumoe", "utility", last("lumoe"))
        ok = None if None in (fq0, fq1, ut1) else abs(fq0 - fq1) <= FLAT and ut1 >= 0.9
        out.append(Verdict("lumoe", claims["lumoe"], ok, "no task-A scores" if ok is None else
                           f"FQ on A {fq0:.2f} → {fq1:.2f}, utility on A at the end {ut1:.2f}"))
    else:
        out.append(Verdict("lumoe", claims["lumoe"], None, "LUMoE did not run"))
    return out


def _why_not_degrading(fq_first: float, fq_last: float, still_answered: float | None,
                       utility_first: float | None) -> str:
    """What the task-A cells say about a baseline whose forget quality does not fall from a first
    high: the first request broke the model, had not yet forgotten, or later requests made it refuse."""
    if still_answered is None or utility_first is None:
        return ""
    if still_answered <= COLLAPSED and utility_first <= COLLAPSED and fq_first <= COLLAPSED:
        return (f" (why: the first request already broke the model: at A-UA forget correctness {still_answered:.2f}, "
                f"utility {utility_first:.2f}, forget quality {fq_first:.2f}: there is no first high to fall from)")
    if still_answered >= 0.5:
        return f" (why: the first request left {still_answered:.2f} of task A's forgotten items answered: it had not forgotten yet)"
    if fq_last > fq_first:
        return " (why: forget quality rises as later requests pile up: the model ends up refusing or failing task A)"
    return ""


def paper_section_html(runs: dict[str, dict]) -> str:
    """The report's "Paper vs mlu" section."""
    import html

    results = paper_results()
    items = "".join(
        f"<li><b>{html.escape(v.finding)}</b>: {html.escape(v.claim)} — mlu "
        f"<b>{'agrees' if v.agrees else 'disagrees' if v.agrees is False else 'cannot say'}</b>: {html.escape(v.evidence)}</li>"
        for v in verdicts(runs))
    return (f"<h2>Paper vs mlu</h2><p>The paper: {html.escape(results['model'])}, order {results['order']}; "
            f"source: {html.escape(results['source'])} mlu: this report's runs (its judge, its model), with 95 % "
            f"intervals. The models differ by three orders of magnitude in size, so compare shapes, not values.</p>"
            f"<ul>{items}</ul>{side_by_side(runs).to_html(index=False)}")
