"""The report people look at: the leaderboard, the X-UY heatmaps and degradation curves of every
method (figures.py draws them) and one HTML page, built from the sequences' MLflow runs, whose
metric names and tags sequences.py defines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .figures import degradation_png, heatmap_png
from .sequences import KINDS, SEQUENCE_RUN_KINDS, final_values, matrix_from_metrics, parse_order, stability_metric


@dataclass(frozen=True)
class Report:
    """The value of the `report` asset."""

    html: str  # the self-contained page
    leaderboard: list[dict]  # one row per method (and base model)
    mlflow_run_id: str


def collect_runs(store, profile: str) -> dict[str, dict]:
    """The newest finished sequence run of each method (baselines and LUMoE) on each base model
    for the profile, labelled by method (and base model, when there are several)."""
    newest: dict[tuple[str, str], dict] = {}
    for run in store.search_runs({"mlu.profile": profile}):
        tags = run.data.tags
        key = (tags.get("mlu.model", ""), tags.get("mlu.method", ""))
        if tags.get("mlu.kind") not in SEQUENCE_RUN_KINDS or key in newest:
            continue
        order = tags["mlu.order"]
        newest[key] = {"run_id": run.info.run_id, "model": key[0], "method": key[1], "order": order,
                       "tasks": parse_order(order), "metrics": run.data.metrics}
    several = len({model for model, _ in newest}) > 1
    return {(f"{method} on {model}" if several else method): run for (model, method), run in sorted(newest.items())}


def leaderboard(runs: dict[str, dict]) -> pd.DataFrame:
    """Per method: the mean over tasks after the last request, stability, router quality (LUMoE)."""
    rows = []
    for method, run in runs.items():
        last = run["tasks"][-1]
        fq = matrix_from_metrics(run["metrics"], "forget_quality", run["tasks"])[f"U{last}"].dropna()
        ut = matrix_from_metrics(run["metrics"], "utility", run["tasks"])[f"U{last}"].dropna()
        m = run["metrics"]
        precision = final_values(m, "router/precision", run["tasks"])
        recall = final_values(m, "router/recall", run["tasks"])
        rows.append({"method": run.get("method", method), "base model": run.get("model", ""), "order": run["order"],
                     "forget quality": fq.mean() if len(fq) else None, "utility": ut.mean() if len(ut) else None,
                     "drift FQ": m.get(stability_metric("forget_quality")), "drift utility": m.get(stability_metric("utility")),
                     "router prec.": sum(precision) / len(precision) if precision else None,
                     "router recall": sum(recall) / len(recall) if recall else None})
    board = pd.DataFrame(rows)
    if board.empty:
        return board
    board["score"] = (board["forget quality"].fillna(0) + board["utility"].fillna(0)) / 2
    return board.sort_values(["base model", "score", "method"], ascending=[True, False, True]).drop(columns="score") \
        .reset_index(drop=True)


def build_report(runs: dict[str, dict], out_dir: Path) -> dict:
    """Leaderboard, heatmaps, degradation curves as PNG files, and one self-contained HTML page."""
    import base64
    import html

    out_dir = Path(out_dir)
    board = leaderboard(runs)
    figures: list[tuple[str, Path]] = []
    first = next(iter(runs.values()))["tasks"][0] if runs else "A"
    for kind in KINDS:
        figures.append((f"Degradation of task {first}: {kind.replace('_', ' ')}",
                        degradation_png(runs, kind, first, out_dir / f"degradation_{kind}_{first}.png")))
    for method, run in sorted(runs.items()):
        for kind in KINDS:
            figures.append((f"{method}: {kind.replace('_', ' ')} X-UY",
                            heatmap_png(matrix_from_metrics(run["metrics"], kind, run["tasks"]),
                                        f"{method} {kind.replace('_', ' ')} (X-UY)", out_dir / f"{method.replace(' ', '_')}_{kind}.png")))
    images = "\n".join(
        f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>" for title, p in figures)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlu report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}figure{{display:inline-block;margin:8px}}</style></head>
<body><h1>mlu: lifelong unlearning report</h1>
<p>Forget quality: refusal score on forget sets; utility: correctness on retain sets; both the mean over tasks
after the last request. Drift (the stability objective): Σ_t |P(M_t,t) − P(M_T,t)|, 0 = stable.</p>
<h2>Leaderboard</h2>{board.to_html(index=False, float_format=lambda v: f"{v:.2f}", na_rep="–")}
<h2>Figures</h2>{images}</body></html>"""
    html_path = out_dir / "report.html"
    from .paths import atomic_write_bytes

    atomic_write_bytes(html_path, page.encode())
    return {"leaderboard": board, "html": html_path, "figures": [p for _, p in figures]}


def publish_report(store, profile: str, out_dir: Path):
    """(Report, leaderboard, figure paths) over the newest run of every method for the profile,
    the page and figures logged in an MLflow run of their own; None when there is no run yet."""
    import mlflow

    runs = collect_runs(store, profile)
    if not runs:
        return None
    built = build_report(runs, out_dir)
    with store.start_run(f"report-{profile}", {"mlu.kind": "report", "mlu.profile": profile}) as run:
        mlflow.log_artifact(str(built["html"]), "report")
        for figure in built["figures"]:
            mlflow.log_artifact(str(figure), "report/figures")
    board = built["leaderboard"]
    return Report(str(built["html"]), board.to_dict("records"), run.info.run_id), board, built["figures"]
