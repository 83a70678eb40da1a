"""Figures and tables people look at: X-UY heatmaps, degradation curves, markdown tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def heatmap_png(matrix: pd.DataFrame, title: str, path: Path) -> Path:
    """An X-UY matrix (rows: task evaluated, columns: after unlearning) as a PNG, values printed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(matrix.columns), 1.0 + 0.7 * len(matrix.index)), dpi=110)
    values = matrix.astype(float).to_numpy()
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(matrix.columns)), [f"after {c}" for c in matrix.columns])
    ax.set_yticks(range(len(matrix.index)), [f"task {r}" for r in matrix.index])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if pd.notna(values[i, j]):
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center",
                        color="white" if values[i, j] < 0.6 else "black", fontsize=9)
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
