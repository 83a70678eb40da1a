"""The report people look at: the leaderboard, the X-UY heatmaps and degradation curves of every
method (figures.py draws them) and one HTML page, built from the sequences' MLflow runs, whose
metric names and tags sequences.py defines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .figures import degradation_png, heatmap_png
from .paper import paper_section_html
from .sequences import (KINDS, method_label, NOTHING_TAG, SEQUENCE_RUN_KINDS, PooledSeeds, SequenceResult, ci_high, ci_low,
                        describe_nothing, final_values, matrix_from_metrics, parse_order, stability_metric,
                        summary_metric, xuy_metric)


@dataclass(frozen=True)
class Report:
    """The value of the `report` asset."""

    html: str  # the self-contained page
    leaderboard: list[dict]  # one row per method (and base model)
    mlflow_run_id: str
    provenance: dict = field(default_factory=dict)  # profile, judges, release digest, code version


def _config_key(run) -> str:
    return run.data.tags.get("mlu.config_key") or run.data.tags.get("mlu.sequence_key", run.info.run_id)


def collect_runs(store, profile: str) -> dict[str, dict]:
    """The newest finished sequence run of each method (baselines and LUMoE) on each base model
    for the profile, labelled by method (and base model, when there are several). When the newest
    run's configuration also ran with other seeds (tag mlu.config_key), the newest run of each seed
    is pooled: the metrics are recomputed over every seed's answers, so the scores are the means
    over seeds and every interval resamples the seeds too. Seeds of the base model (tag
    mlu.base_seed: the partition's base model taught again with another seed) pool the same way,
    a level above the sequence's own seeds."""
    groups: dict[tuple[str, str], list] = {}
    for run in store.search_runs({"mlu.profile": profile}):  # newest first
        tags = run.data.tags
        if tags.get("mlu.kind") in SEQUENCE_RUN_KINDS:
            groups.setdefault((tags.get("mlu.model", ""), method_label(tags)), []).append(run)
    newest: dict[tuple[str, str], dict] = {}
    for key, runs in groups.items():
        head = runs[0]
        order = head.data.tags["mlu.order"]
        by_seed: dict[tuple[str, str], object] = {}  # (base model's seed, sequence's seed) -> newest run
        for run in runs:
            if _config_key(run) == _config_key(head) and run.data.tags["mlu.order"] == order:
                by_seed.setdefault((run.data.tags.get("mlu.base_seed", ""), run.data.tags.get("mlu.seed", "0")), run)
        entry = {"run_id": head.info.run_id, "model": key[0], "method": key[1], "order": order,
                 "judge": head.data.tags.get("mlu.judge", ""),
                 "tasks": parse_order(order), "metrics": head.data.metrics,
                 "seeds": sorted({seed for _, seed in by_seed}, key=str),
                 "base_seeds": sorted({base for base, _ in by_seed if base}, key=str),
                 "nothing_to_unlearn": json.loads(head.data.tags.get(NOTHING_TAG) or "{}")}
        if len(by_seed) > 1:
            entry["metrics"] = pooled_metrics(store, by_seed, key[1], entry["tasks"])
        newest[key] = entry
    several = len({model for model, _ in newest}) > 1
    return {(f"{method} on {model}" if several else method): run for (model, method), run in sorted(newest.items())}


def pooled_metrics(store, runs_by_seed: dict, method: str, tasks: list[str]) -> dict[str, float]:
    """A sequence's metrics over several seeds: every seed's answers (its run's answers.jsonl)
    pooled with a `seed` column, and a `base_seed` column when its base model's seed varies too
    (stats.py draws those first); LUMoE's router measures are the mean over the runs that have
    them (each seed's router sees the same items; a base model taught again routes differently)."""
    frames = []
    base_seeds = {base for base, _ in runs_by_seed}
    for (base, seed), run in sorted(runs_by_seed.items()):
        path = store.download(f"runs:/{run.info.run_id}/answers/answers.jsonl")
        frame = pd.read_json(path, lines=True, dtype={"task": str, "unlearned": str}).assign(seed=seed)
        frames.append(frame.assign(base_seed=base) if len(base_seeds) > 1 else frame)
    pooled = pd.concat(frames, ignore_index=True)
    pooled["score"] = pooled["score"].astype("Int64")
    seeds = tuple(f"{seed} on base seed {base}" if len(base_seeds) > 1 else seed for base, seed in sorted(runs_by_seed))
    result = SequenceResult(PooledSeeds(method, tuple(tasks), seeds), pooled)
    router = pd.DataFrame([{k: v for k, v in run.data.metrics.items() if k.startswith("router/")}
                           for run in runs_by_seed.values()])
    return {**router.mean().to_dict(), **result.metrics()}


def seeds_label(run: dict) -> str:
    """The leaderboard's `seeds`: the sequence's seeds, and its base model's when they vary."""
    seeds = ",".join(run.get("seeds", [])) or "–"
    bases = run.get("base_seeds", [])
    return f"{seeds} × base {','.join(bases)}" if len(bases) > 1 else seeds


SHORT = {"forget_quality": "FQ", "utility": "utility"}
SUMMARY_LABEL = {"last": "last", "bwt": "BWT", "worst_drop": "worst drop"}


def _interval(metrics: dict, name: str) -> tuple:
    return metrics.get(ci_low(name)), metrics.get(ci_high(name))


def leaderboard(runs: dict[str, dict]) -> pd.DataFrame:
    """Per method: the mean over tasks after the last request (= summary `average`), stability,
    the continual-learning summaries, router quality (LUMoE); every score with its 95 % interval
    in the columns `<name> low` and `<name> high` (runs logged before intervals have none)."""
    rows = []
    for method, run in runs.items():
        m, tasks = run["metrics"], run["tasks"]
        last = tasks[-1]
        precision = final_values(m, "router/precision", tasks)
        recall = final_values(m, "router/recall", tasks)
        row = {"method": run.get("method", method), "base model": run.get("model", ""), "order": run["order"],
               "seeds": seeds_label(run), "judge": run.get("judge", "")}
        for kind, label in (("forget_quality", "forget quality"), ("utility", "utility")):
            final = matrix_from_metrics(m, kind, tasks)[f"U{last}"].dropna()
            row[label] = final.mean() if len(final) else None
            row[f"{label} low"], row[f"{label} high"] = _interval(m, summary_metric(kind, "average"))
        correctness = matrix_from_metrics(m, "forget_correctness", tasks)[f"U{last}"].dropna()
        row["forget correctness"] = correctness.mean() if len(correctness) else None
        row["drift FQ"], row["drift utility"] = m.get(stability_metric("forget_quality")), m.get(stability_metric("utility"))
        for kind in KINDS:
            for summary, label in SUMMARY_LABEL.items():
                name = summary_metric(kind, summary)
                column = f"{label} {SHORT[kind]}"
                row[column] = m.get(name)
                row[f"{column} low"], row[f"{column} high"] = _interval(m, name)
        row["router prec."] = sum(precision) / len(precision) if precision else None
        row["router recall"] = sum(recall) / len(recall) if recall else None
        # the tasks the base model knew nothing of: the reason stands where their numbers would
        row["note"] = describe_nothing(run.get("nothing_to_unlearn") or {}, tasks) or ""
        rows.append(row)
    board = pd.DataFrame(rows)
    if board.empty:
        return board
    board["score"] = (board["forget quality"].fillna(0) + board["utility"].fillna(0)) / 2
    return board.sort_values(["base model", "score", "method"], ascending=[True, False, True]).drop(columns="score") \
        .reset_index(drop=True)


def _number(v) -> str:
    return "–" if v is None or v != v else f"{v:.2f}"


def for_display(board: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """The leaderboard as text: each score with its interval, `0.38 [0.10, 0.66]`."""
    names = [c for c in board.columns if not (c.endswith(" low") or c.endswith(" high"))]
    out = pd.DataFrame(index=board.index)
    for c in columns or names:
        if c in ("method", "base model", "order", "seeds", "judge", "note"):
            out[c] = board[c]
        elif f"{c} low" in board.columns:
            out[c] = [_number(v) if lo is None or lo != lo else f"{_number(v)} [{_number(lo)}, {_number(hi)}]"
                      for v, lo, hi in zip(board[c], board[f"{c} low"], board[f"{c} high"])]
        else:
            out[c] = [_number(v) for v in board[c]]
    return out


def degradation_curves(runs: dict[str, dict], kind: str, task: str) -> dict:
    """method -> (requests from `task` on, values, lows, highs) of task `task`'s score."""
    curves = {}
    for method, run in runs.items():
        if task in run["tasks"]:
            after = run["tasks"][run["tasks"].index(task):]
            names = [xuy_metric(kind, task, y) for y in after]
            m = run["metrics"]
            curves[method] = (after, [m.get(n) for n in names], [m.get(ci_low(n)) for n in names],
                              [m.get(ci_high(n)) for n in names])
    return curves


def judges_note(board: pd.DataFrame) -> str:
    """A warning when the rows were judged by different judges (their scores do not compare)."""
    judges = sorted(set(board["judge"])) if "judge" in board.columns else []
    return (f"Rows judged by different judges ({'; '.join(judges)}): compare scores only between rows of one judge."
            if len(judges) > 1 else "")


def build_report(runs: dict[str, dict], out_dir: Path, provenance: dict | None = None,
                 audits: dict[str, pd.DataFrame] | None = None,
                 attacks: dict[tuple[str, str], dict[str, float]] | None = None) -> dict:
    """Leaderboard, heatmaps, degradation curves as PNG files, and one self-contained HTML page;
    `provenance` (profile, release digest, code version…) heads the page; `audits` (base model ->
    LUMoE's router-audit intervals) and `attacks` ((base model, method) -> its robustness metrics)
    make the Robustness section."""
    from .robustness.router_audit import robustness_section_html

    import base64
    import html

    out_dir = Path(out_dir)
    board = leaderboard(runs)
    figures: list[tuple[str, Path]] = []
    first = next(iter(runs.values()))["tasks"][0] if runs else "A"
    for kind in KINDS:
        figures.append((f"Degradation of task {first}: {kind.replace('_', ' ')}",
                        degradation_png(degradation_curves(runs, kind, first), kind, first,
                                        out_dir / f"degradation_{kind}_{first}.png")))
    for method, run in sorted(runs.items()):
        for kind in KINDS:
            figures.append((f"{method}: {kind.replace('_', ' ')} X-UY",
                            heatmap_png(matrix_from_metrics(run["metrics"], kind, run["tasks"]),
                                        f"{method} {kind.replace('_', ' ')} (X-UY, 95 % CI)",
                                        out_dir / f"{method.replace(' ', '_')}_{kind}.png",
                                        matrix_from_metrics(run["metrics"], kind, run["tasks"], "low"),
                                        matrix_from_metrics(run["metrics"], kind, run["tasks"], "high"))))
    robustness, robustness_figures = robustness_section_html(audits or {}, out_dir, attacks)
    figures += robustness_figures
    nothing = sorted({(run.get("model", ""), describe_nothing(run.get("nothing_to_unlearn") or {}, run["tasks"]))
                      for run in runs.values() if run.get("nothing_to_unlearn")})
    notes = "".join(f"<li><b>{html.escape(model or 'the base model')}</b>: {html.escape(why)}</li>" for model, why in nothing)
    notes = (f"<h2>Nothing to unlearn</h2><p>The knowledge filter keeps only the evaluation items a base model answers "
             f"correctly; where it kept none of a task's forget items, there is nothing to unlearn and nothing to "
             f"measure, so those scores are absent (–), not 0.</p><ul>{notes}</ul>") if nothing else ""
    images = "\n".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>" for title, p in figures)
    judges = ", ".join(sorted(set(board["judge"]))) if "judge" in board.columns else "–"
    heading = " · ".join(f"{k}: {v}" for k, v in {**(provenance or {}), "judge": judges}.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlu report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>mlu: lifelong unlearning report</h1>
<p>{html.escape(heading)}</p><p><strong>{html.escape(judges_note(board))}</strong></p>
<p>Forget quality: refusal score on forget sets; utility: correctness on retain sets; both the mean over tasks
after the last request. Drift (the stability objective): Σ_t |P(M_t,t) − P(M_T,t)|, 0 = stable. Last: the last
task after its own request; BWT (backward transfer): mean over earlier tasks of P(M_T,t) − P(M_t,t); worst drop:
the largest fall of any task from right after its request to the end. [a, b]: the 95 % interval of a cluster
bootstrap over entities and the questions about them (phrasings of one question share an answer, so they are
resampled together), and over seeds when there are several (the base model's seeds first, then each one's
sequence seeds).</p>
<h2>Leaderboard</h2>{for_display(board).to_html(index=False, na_rep="–")}{notes}
{paper_section_html(runs)}{robustness}
<h2>Figures</h2>{images}</body></html>"""
    html_path = out_dir / "report.html"
    from .paths import atomic_write_bytes

    atomic_write_bytes(html_path, page.encode())
    return {"leaderboard": board, "html": html_path, "figures": [p for _, p in figures]}


def publish_report(store, profile: str, out_dir: Path, provenance: dict | None = None):
    """(Report, leaderboard, figure paths) over the newest run of every method for the profile,
    the page and figures logged in an MLflow run of their own; None when there is no run yet.
    `provenance` (release digest, code version…) is on the page, the run's tags and the Report."""
    import mlflow

    runs = collect_runs(store, profile)
    if not runs:
        return None
    from .robustness.attacks import collect_attacks
    from .robustness.router_audit import collect_audits

    provenance = {"profile": profile, **(provenance or {})}
    built = build_report(runs, out_dir, provenance, collect_audits(store, profile), collect_attacks(store, profile))
    provenance["judges"] = ", ".join(sorted(set(built["leaderboard"]["judge"])))
    tags = {"mlu.kind": "report", "mlu.profile": profile, **{f"mlu.{k}": str(v) for k, v in provenance.items()}}
    with store.start_run(f"report-{profile}", tags) as run:
        mlflow.log_artifact(str(built["html"]), "report")
        for figure in built["figures"]:
            mlflow.log_artifact(str(figure), "report/figures")
    board = built["leaderboard"]
    return Report(str(built["html"]), board.to_dict("records"), run.info.run_id, provenance), board, built["figures"]
