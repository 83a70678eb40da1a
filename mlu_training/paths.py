"""Where mlu finds and writes things. Every location can be overridden by a setting."""

from __future__ import annotations

import os
from pathlib import Path

# The checkout this package lives in (an editable install, which `make setup` makes).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """What mlu makes at run time: rendered images, tables, models (ignored by git)."""
    return PROJECT_ROOT / "data"


def default_cache_dir() -> Path:
    """Downloaded and verified release archives, shared by every checkout of this user."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlu"


def default_shared_release_dir() -> Path:
    """The release copy that sits beside the project in ../shared."""
    return PROJECT_ROOT.parent / "shared" / "data" / "mlubench"


def default_requests_dir() -> Path:
    """Where unlearning request files are dropped (MLU_REQUESTS_DIR)."""
    return PROJECT_ROOT / "unlearning_requests"


def default_base_models_dir() -> Path:
    """Where checkpoint folders are dropped to be evaluated as new base models (MLU_BASE_MODELS_DIR)."""
    return PROJECT_ROOT / "base_models"


def default_tracking_uri() -> str:
    """MLflow on SQLite; MLflow 3 refuses the old ./mlruns file store, so the path is absolute."""
    return f"sqlite:///{PROJECT_ROOT / 'mlflow' / 'mlflow.db'}"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write a file so that readers see either the old content or the new, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def find_folder_with(root: str | Path, filename: str) -> Path:
    """The shallowest folder under `root` that holds `filename` (an adapter or a checkpoint inside
    a downloaded MLflow model)."""
    hits = sorted(Path(root).rglob(filename), key=lambda p: len(p.parts))
    if not hits:
        raise FileNotFoundError(f"no {filename} under {root}")
    return hits[0].parent
