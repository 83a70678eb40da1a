"""What the benches measure on: the outputs of `make run` (the profile's tables, a base model's
partition and its knowledge filter), or any data folder laid out the same way (`--data-dir`;
the test-suite's smoke runs build a tiny one)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from mlu_training.models.registry import BaseModelRef
from mlu_training.paths import default_data_dir


def bench_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every bench takes: where the outputs are, which base model, and --smoke."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="MLU_DATA_DIR of the run (default: the project's data/)")
    ap.add_argument("--model", default="tiny", help="the base model partition (default: tiny)")
    ap.add_argument("--smoke", action="store_true", help="a few items, one repeat: checks the bench runs, measures nothing")
    return ap


def load_run_outputs(data_dir: Path | None = None, model: str = "tiny"):
    """(splits, raw crawls, the base model, its knowledge filter) of a finished run."""
    from mlu_assets.io import from_json

    tables = Path(data_dir or default_data_dir()) / "tables"
    needed = ["benchmark_splits.parquet", "raw_crawls.parquet", f"base_model/{model}.json",
              f"knowledge_filter/{model}.parquet"]
    missing = [n for n in needed if not (tables / n).is_file()]
    if missing:
        sys.exit(f"bench: {', '.join(missing)} not found under {tables}; run `make run` first (or pass --data-dir)")
    splits = pd.read_parquet(tables / "benchmark_splits.parquet")
    crawls = pd.read_parquet(tables / "raw_crawls.parquet")
    base = from_json(BaseModelRef, json.loads((tables / "base_model" / f"{model}.json").read_text()))
    known = pd.read_parquet(tables / "knowledge_filter" / f"{model}.parquet")
    return splits, crawls, base, known
