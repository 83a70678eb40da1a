"""Figures and small tables: X-UY heatmaps, degradation curves, markdown matrices. Pure drawing
(matplotlib, files only): sequences.py draws a run's heatmaps with it, report.py the report's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def heatmap_png(matrix: pd.DataFrame, title: str, path: Path, low: pd.DataFrame | None = None,
                high: pd.DataFrame | None = None) -> Path:
    """An X-UY matrix (rows: task evaluated, columns: after unlearning) as a PNG, values printed,
    each with its 95 % interval beneath when `low` and `high` (same shape) are given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(matrix.columns), 1.0 + 0.7 * len(matrix.index)), dpi=110)
    values = matrix.astype(float).to_numpy()
    if low is not None and high is not None:  # by label: a task without judged items has no row in `matrix`
        low, high = (m.reindex(index=matrix.index, columns=matrix.columns) for m in (low, high))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(matrix.columns)), [f"after {c}" for c in matrix.columns])
    ax.set_yticks(range(len(matrix.index)), [f"task {r}" for r in matrix.index])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if pd.notna(values[i, j]):
                text = f"{values[i, j]:.2f}"
                if low is not None and high is not None and pd.notna(low.iat[i, j]) and pd.notna(high.iat[i, j]):
                    text += f"\n[{low.iat[i, j]:.2f}, {high.iat[i, j]:.2f}]"
                ax.text(j, i, text, ha="center", va="center",
                        color="white" if values[i, j] < 0.6 else "black", fontsize=9 if "\n" not in text else 7)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown(matrix: pd.DataFrame, digits: int = 2) -> str:
    table = matrix.astype(float).round(digits).astype(object).where(matrix.notna(), "–")
    return table.reset_index(names="task").to_markdown(index=False)


DODGE = 0.07  # sideways offset between methods in the degradation plot, in units of one request


def degradation_png(curves: dict[str, tuple[list[str], list, list, list]], kind: str, task: str, path: Path) -> Path:
    """How task `task`'s score moves as later requests are unlearned: one line per method, its
    95 % interval as a band. `curves`: method -> (requests after task, values, lows, highs)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    nan = float("nan")
    markers, styles = "osD^vPX*", ("-", "--", "-.", ":")
    n = len(curves)
    for i, (method, (after, values, lows, highs)) in enumerate(sorted(curves.items())):
        # Methods often share a value (0 after a collapse): each is nudged sideways and drawn with its
        # own marker and dash, so coinciding lines stay visible instead of hiding one another.
        xs = [x + DODGE * (i - (n - 1) / 2) for x in range(len(after))]
        line, = ax.plot(xs, [nan if v is None else v for v in values], marker=markers[i % len(markers)],
                        linestyle=styles[i % len(styles)], markersize=5, label=method)
        ax.fill_between(xs, [nan if v is None else v for v in lows], [nan if v is None else v for v in highs],
                        color=line.get_color(), alpha=0.12, linewidth=0)
        ax.set_xticks(range(len(after)), [f"U{y}" for y in after])
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel(kind.replace("_", " "))
    ax.set_title(f"task {task}: {kind.replace('_', ' ')} as requests accumulate", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def probe_forget_quality_png(intervals: pd.DataFrame, title: str, path: Path) -> Path:
    """Forget quality per evasion probe with the real router beside the oracle router, each with
    its 95 % interval. `intervals`: rows (probe, measure, value, low, high) with the measures
    `forget_quality` and `forget_quality_oracle` (router_audit.audit_intervals)."""
    plt = _pyplot()
    probes = list(dict.fromkeys(intervals.loc[intervals["measure"] == "forget_quality", "probe"]))
    fig, ax = plt.subplots(figsize=(1.4 + 0.7 * len(probes), 3.6), dpi=110)
    width = 0.38
    for offset, (measure, label) in zip((-width / 2, width / 2), (("forget_quality", "real router"),
                                                                  ("forget_quality_oracle", "oracle router"))):
        part = intervals[intervals["measure"] == measure].set_index("probe").reindex(probes)
        values = part["value"].astype(float).to_numpy()
        errors = [values - part["low"].astype(float).to_numpy(), part["high"].astype(float).to_numpy() - values]
        ax.bar([i + offset for i in range(len(probes))], values, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(range(len(probes)), probes, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("forget quality")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
