"""Which base models exist, and where each one's weights come from.

Every base model is one partition key of the `base_models` dimension:
  - `tiny`: the in-project tiny LLaVA (the default when MLU_BASE_MODEL is unset);
  - a checkpoint folder's name: MLU_BASE_MODEL's folder, or one dropped in MLU_BASE_MODELS_DIR;
  - `mlu-base-model-v<N>`: a version someone registered under mlu-base-model in MLflow.
The key alone says where to look, so nothing else has to be stored to resolve it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

TINY = "tiny"
REGISTERED_BASE = "mlu-base-model"
_REGISTRY_KEY = re.compile(rf"^{REGISTERED_BASE}-v(\d+)$")
PARTITION_TAG = "mlu.model_partition"  # on every version a base_model partition registered or adopted


class UnknownBaseModel(LookupError):
    pass


@dataclass(frozen=True)
class ModelSource:
    key: str  # the partition key
    kind: str  # "tiny" | "checkpoint" | "registry"
    path: Path | None = None  # a checkpoint folder
    version: str | None = None  # a registry version


def folder_key(path: str | Path) -> str:
    """A checkpoint folder's partition key: its name, kept to letters, digits, '.', '_' and '-'."""
    # abspath, not resolve: a symlinked folder is named by its link, not by a snapshot hash
    name = re.sub(r"[^\w.-]+", "-", Path(os.path.abspath(Path(path).expanduser())).name).strip("-.")
    if not name or name == TINY or _REGISTRY_KEY.match(name):
        raise ValueError(f"{path}: rename the folder; {name!r} cannot name a base model")
    return name


def registry_key(version: str | int) -> str:
    return f"{REGISTERED_BASE}-v{version}"


def default_key(base_model_path: str | None) -> str:
    """The base model the settings name: MLU_BASE_MODEL's folder, else the tiny LLaVA."""
    return folder_key(base_model_path) if base_model_path else TINY


def resolve(key: str, base_model_path: str | None, models_dir: str | Path | None) -> ModelSource:
    """Where the weights of base model `key` are."""
    if key == TINY:
        return ModelSource(key, "tiny")
    match = _REGISTRY_KEY.match(key)
    if match:
        return ModelSource(key, "registry", version=match.group(1))
    if base_model_path and folder_key(base_model_path) == key:
        return ModelSource(key, "checkpoint", path=Path(base_model_path).expanduser())
    folder = named_folders(models_dir)[0].get(key)
    if folder is not None:
        return ModelSource(key, "checkpoint", path=folder)
    raise UnknownBaseModel(
        f"base model {key!r}: not 'tiny', not a registry version ({REGISTERED_BASE}-v<N>), not MLU_BASE_MODEL "
        f"({base_model_path or 'unset'}) and no checkpoint folder {Path(models_dir or '.') / key} with a config.json")


def is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def folder_signature(folder: Path) -> str:
    """Cheap and content-sensitive enough to notice a changed or still-growing checkpoint: every
    file's relative name, size and first MiB (so all of config.json), not gigabytes of weights."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder)}\0{f.stat().st_size}\0".encode())
        with f.open("rb") as stream:
            h.update(hashlib.sha256(stream.read(1 << 20)).digest())
    return h.hexdigest()


def folder_digest(folder: str | Path) -> str:
    """sha256 over every file of a checkpoint or adapter folder (names and all their bytes):
    weights, configuration, tokenizer and chat template alike, all of which decide an answer.
    What LUMoE's answer cache keys by; folder_signature above is the cheap watch for changes."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def named_folders(models_dir: str | Path | None) -> tuple[dict[str, Path], list[str]]:
    """(partition key -> folder, complaints) for the checkpoint folders in MLU_BASE_MODELS_DIR
    (those with a config.json; hidden folders are skipped, so a copy can land as .name first)."""
    root = Path(models_dir) if models_dir else None
    if root is None or not root.is_dir():
        return {}, []
    found, complaints = {}, []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not is_checkpoint(folder):
            continue
        try:
            key = folder_key(folder)
        except ValueError as why:
            complaints.append(str(why))
            continue
        if key in found:
            complaints.append(f"{folder}: {found[key]} already names base model {key!r}")
            continue
        found[key] = folder
    return found, complaints
