"""What the benches measure on: the outputs of `make run` (the mini profile's tables and base model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from mlu_training.paths import default_data_dir


def load_run_outputs(data_dir: Path | None = None):
    tables = Path(data_dir or default_data_dir()) / "tables"
    needed = ["benchmark_splits.parquet", "raw_crawls.parquet", "base_model.json"]
    missing = [n for n in needed if not (tables / n).is_file()]
    if missing:
        sys.exit(f"bench: {', '.join(missing)} not found under {tables}; run `make run` first (or set MLU_DATA_DIR)")
    splits = pd.read_parquet(tables / "benchmark_splits.parquet")
    crawls = pd.read_parquet(tables / "raw_crawls.parquet")
    base = json.loads((tables / "base_model.json").read_text())
    return splits, crawls, base
