"""The base model: a local checkpoint (MLU_BASE_MODEL), or the in-project tiny LLaVA taught
every entity of the profile. A tiny model is rebuilt only when its data or settings change."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..texts import REFUSAL_ANSWER
from .declining import DECLINE_PHRASINGS, UnknownPool, declines_for
from .sft import SFTConfig, train_sft
from .sources import folder_signature
from .tiny_llava import TinyLlavaConfig, build_tiny_llava
from .vlm import default_device

RECIPE_VERSION = "tiny-llava-v3"  # bump when the build or training code changes what it makes (v2: it declines; v3: known distractors)
MANIFEST = "mlu_base_model.json"


@dataclass
class BaseModel:
    path: Path
    source: str  # "tiny" | "checkpoint"
    num_parameters: int
    train_losses: list[float]
    reused: bool
    key: str
    seed: int | None = None  # the seed it was taught with (a tiny model); a checkpoint has none
    config_key: str = ""  # the key with the seed left out: base models that differ only by seed share it

    @property
    def final_loss(self) -> float | None:
        return float(sum(self.train_losses[-10:]) / len(self.train_losses[-10:])) if self.train_losses else None


def recipe_key(data_digest: str, tiny: TinyLlavaConfig, sft: SFTConfig, declines_digest: str = "",
               withheld: frozenset[str] = frozenset(), ignore_seed: bool = False) -> str:
    """What the tiny model's weights depend on. With `ignore_seed`: what models taught with
    different seeds share (the seed also draws the declining pool, whose digest is left out too),
    the key the report pools their sequences by."""
    settings = sft.as_dict()
    if ignore_seed:
        settings["seed"] = None
        declines_digest = "seeded pool" if declines_digest else ""
    parts = [RECIPE_VERSION, data_digest, tiny.as_dict(), settings, declines_digest]
    if withheld:  # only then: the keys of models trained on everything stay as they were
        parts.append(sorted(withheld))
    device = default_device().type
    if device != "cpu":  # other kernels, other weights (README: On a GPU box); CPU keys stay as they were
        parts.append(device)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_base_model(splits: pd.DataFrame, load_image, data_digest: str, models_dir: Path,
                     tiny: TinyLlavaConfig = TinyLlavaConfig(), sft: SFTConfig = SFTConfig(),
                     progress: Callable[[int, float], None] | None = None, declines=None,
                     withheld: frozenset[str] = frozenset()) -> BaseModel:
    """Train (or reuse) the tiny LLaVA on every train pair of the profile, with its image, and on
    `declines` (declining.UnknownPool): pictures of entities outside the profile answered with a
    refusal, so that it declines what it does not know, as an instruction-tuned MLLM does, and a
    few known distractors' pairs (entities it knows that are in no task).
    `withheld`: entity ids never trained on (the gold model of robustness/gold.py); their texts
    still build the tokenizer, so both models split every answer into the same tokens."""
    from ..evaluation import ImageColumn

    recipe = (data_digest, tiny, sft, declines.digest() if declines is not None else "", frozenset(withheld))
    key = recipe_key(*recipe)
    seeds = {"seed": sft.seed, "config_key": recipe_key(*recipe, ignore_seed=True)}
    out = Path(models_dir) / "base" / key[:16]
    manifest = out / MANIFEST
    if manifest.is_file():
        info = json.loads(manifest.read_text())
        return BaseModel(out, "tiny", info["num_parameters"], info["train_losses"], True, key, **seeds)
    train, texts = training_set(splits, declines, withheld)
    vlm = build_tiny_llava(texts, tiny, seed=sft.seed)
    # Trained where it is served (the GPU when there is one), in float32: build_tiny_llava leaves
    # it on the CPU, and every batch follows the model's device.
    vlm.model.to(default_device())
    # Resumed if an earlier attempt was stopped: `full`'s fine-tuning takes hours on a CPU.
    training_state = out.with_name(out.name + ".training.pt")
    losses = train_sft(vlm, ImageColumn(train["image"], load_image), train["question"].tolist(),
                       train["answer"].tolist(), sft, progress, checkpoint=training_state)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    vlm.save(tmp)
    info = {"key": key, "recipe": RECIPE_VERSION, "data_digest": data_digest, "tiny": tiny.as_dict(),
            "sft": sft.as_dict(), "withheld": sorted(withheld), "num_parameters": vlm.num_parameters(), "train_losses": losses}
    (tmp / MANIFEST).write_text(json.dumps(info))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # a half-written model is never found at `out`
    training_state.unlink(missing_ok=True)
    return BaseModel(out, "tiny", vlm.num_parameters(), losses, False, key, **seeds)


def training_set(splits: pd.DataFrame, declines=None, withheld: frozenset[str] = frozenset()) -> tuple[pd.DataFrame, list[str]]:
    """What the tiny base model is taught (image, question, answer: the profile's train pairs, then
    the pool's refusals and known distractors), and the texts its tokenizer is built from."""
    taught = declines.training_pairs() if declines is not None else splits.iloc[:0][["image", "question", "answer"]]
    taught_rows = splits[(splits["split"] == "train") & ~splits["entity_id"].isin(set(withheld))]
    train = pd.concat([taught_rows[["image", "question", "answer"]],
                       taught[["image", "question", "answer"]]], ignore_index=True)
    # The tokenizer sees every text the later steps use, refusals included.
    texts = pd.concat([splits["question"], splits["answer"], taught["question"], taught["answer"]]).tolist() \
        + [REFUSAL_ANSWER, *DECLINE_PHRASINGS]
    return train, texts


def checkpoint_base_model(path: str) -> BaseModel:
    """A user's checkpoint (LLaVA-1.6, Qwen-VL…) taken as it is."""
    from .vlm import ModelNotFoundError

    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise ModelNotFoundError(f"MLU_BASE_MODEL={path}: no config.json there (a local checkpoint folder is needed)")
    config = json.loads((p / "config.json").read_text())
    return BaseModel(p, "checkpoint", int(config.get("num_parameters", 0)), [], True, folder_signature(p))


def declines_of(model_path, qa: pd.DataFrame, splits: pd.DataFrame) -> UnknownPool:
    """The pool a base model was taught with: the seed its manifest records (a tiny model), else 0
    (a checkpoint was taught nothing of it; its distractors and never-seen entities are still the
    pool's, chosen with the default seed)."""
    manifest = Path(model_path) / MANIFEST
    seed = json.loads(manifest.read_text()).get("sft", {}).get("seed", 0) if manifest.is_file() else 0
    return declines_for(qa, splits, seed)
