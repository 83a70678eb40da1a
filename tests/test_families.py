"""Every family of models/families.py, proven on a tiny random-weight checkpoint built offline
(tiny_families.py: a small config of the family, its processor class with its own PIL image
processor, an in-project tokenizer, a chat template), saved with save_pretrained and taken from
the folder as a user's checkpoint: registered as a base model (and loaded back from `models:/…`),
its knowledge filter, one step of every method with LoRA on the language model, the projector and
the vision tower, a sequence step merged and evaluated, one LUMoE expert, and a mixed-adapter
batch token-identical to each sample alone. The Dagster assets themselves run for LLaVA-1.6 (the
paper's family); the other families go through the same functions those assets call."""

from __future__ import annotations

import importlib.util

import mlflow
import pandas as pd
import pytest
from conftest import test_resources

from mlu_training.adapters import AdapterTraining, train_adapter
from mlu_training.judge.local import LocalJudge
from mlu_training.lifelong import UnlearningConfig, run_sequence
from mlu_training.lora import attach_lora, param_groups
from mlu_training.methods import METHODS, get_method
from mlu_training.models.families import FAMILIES, FamilyFeatureError, get_family
from mlu_training.models.tiny_families import BUILDERS, save_tiny_family
from mlu_training.models.vlm import VisionLanguageModel
from mlu_training.texts import REFUSAL_ANSWER

# SmolVLM's processor demands a video processor (torchvision) and num2words: neither is here.
NEEDS = {"smolvlm": ("torchvision", "num2words")}
WORKING = [f for f in FAMILIES if all(importlib.util.find_spec(m) for m in NEEDS.get(f, ()))]
BLOCKED = [f for f in FAMILIES if f not in WORKING]
ONE_STEP = AdapterTraining(steps=1, batch_size=2, targets="both", lr=1e-2, projector_lr=1e-2, vision_lr=1e-2)


def test_every_family_has_a_builder_and_targets_for_each_part():
    assert set(BUILDERS) == set(FAMILIES) >= {"llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm",
                                              "gemma3", "mllama"}
    for family in FAMILIES.values():
        assert family.language and family.vision_tower and (family.projector or family.projector_parameters)
    with pytest.raises(FamilyFeatureError, match="'blip_2'.*FAMILIES"):
        get_family("blip_2")


@pytest.mark.parametrize("family", WORKING)
def test_each_part_takes_lora_where_the_table_says_and_only_there(family):
    from mlu_training.models.tiny_families import BUILDERS

    for where, parts in (("language", {"language"}), ("projector", {"projector"}), ("vision_tower", {"vision_tower"}),
                         ("vision", {"projector", "vision_tower"})):
        model, _ = BUILDERS[family](["Who is this person?", "Taylor Swift"])
        peft_model = attach_lora(model, where, 2, 2, seed=0)
        groups = param_groups(peft_model, {"language": 1, "projector": 1, "vision_tower": 1})
        assert {g["name"] for g in groups} == parts, (family, where)


@pytest.fixture(scope="module")
def texts(tiny_world):
    s = tiny_world["splits"]
    return [*s["question"], *s["answer"], REFUSAL_ANSWER]


@pytest.fixture(scope="module")
def few(tiny_world):
    """A few training and evaluation rows of task A (both roles), images as the tiny profile renders them."""
    s = tiny_world["splits"]
    train = s[(s["split"] == "train") & (s["task"] == "A")].groupby("role").head(2).reset_index(drop=True)
    evaluation = s[(s["split"] == "eval") & (s["task"] == "A")].groupby("role").head(2).reset_index(drop=True)
    return train, evaluation


@pytest.fixture(scope="module", params=WORKING)
def checkpoint(request, texts, tmp_path_factory):
    """(family, folder): the family's tiny random-weight checkpoint, saved like a user's."""
    folder = tmp_path_factory.mktemp("families") / f"tiny-{request.param.replace('_', '-')}"
    return request.param, save_tiny_family(request.param, texts, folder)


def test_a_family_goes_through_the_chain(checkpoint, few, tiny_world, tmp_path):
    from mlu_training.lumoe.experts import ExpertConfig, train_expert
    from mlu_training.lumoe.mixture import ExpertMixture
    from mlu_training.mlflow_store import MlflowStore
    from mlu_training.models.knowledge import filter_known
    from mlu_training.models.registry import provide_base_model
    from mlu_training.models.sources import ModelSource, folder_key

    family, folder = checkpoint
    train, evaluation = few
    load_image = tiny_world["load_image"]
    judge = LocalJudge()

    # base_model from a folder: registered, and `models:/…` loads back and answers as the checkpoint does
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = MlflowStore(uri)
    base = provide_base_model(ModelSource(folder_key(folder), "checkpoint", path=folder), store, tiny_world["digest"],
                              "tiny", tmp_path / "registry", teach_tiny=None, tiny_params={})
    vlm = VisionLanguageModel.load(base.path)
    assert vlm.model.config.model_type == family
    images = [load_image(p) for p in evaluation["image"]]
    direct = vlm.generate(images, evaluation["question"].tolist(), max_new_tokens=96)  # the pyfunc's default
    crawls = tiny_world["crawls"].set_index("image")
    frame = pd.DataFrame({"image": [crawls.loc[p, "file"] for p in evaluation["image"]], "question": evaluation["question"]})
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    assert list(mlflow.pyfunc.load_model(base.model_uri).predict(frame)) == direct

    # fine-tuning packs its batches where the family's positions allow, else says why (and pads)
    if not vlm.packs_sequences():
        with pytest.raises(FamilyFeatureError, match=rf"'{family}' cannot pack training batches: .*pads"):
            vlm.packed_training_batch(images[:2], evaluation["question"].tolist()[:2], evaluation["answer"].tolist()[:2])

    # knowledge filter: a random-weight model knows (next to) nothing
    known = filter_known(vlm, evaluation, load_image, judge, threshold=2, batch_size=8, max_new_tokens=6)
    assert len(known.table) == len(evaluation) and len(known.kept) < len(evaluation)

    # LoRA on language, projector and vision tower; one step of every method
    peft_model = attach_lora(VisionLanguageModel.load(base.path).model, "both", 4, 4, seed=0)
    assert {g["name"] for g in param_groups(peft_model, {"language": 1, "projector": 1, "vision_tower": 1})} == {
        "language", "projector", "vision_tower"}
    for name in METHODS:
        one = VisionLanguageModel.load(base.path)
        model, losses = train_adapter(one, get_method(name), train, "A", ONE_STEP, 0, load_image)
        assert len(losses) == 1 and pd.notna(losses[0]), name

    # a sequence step: trained, merged into the backbone, checkpointed and evaluated
    config = UnlearningConfig(method="gd", order="A", training=ONE_STEP, max_new_tokens=6, eval_batch_size=8)
    result = run_sequence(base.path, train, evaluation, load_image, judge, config, tmp_path / "sequence")
    assert len(result.evaluations) == len(evaluation) and result.evaluations["score"].notna().all()
    assert VisionLanguageModel.load(tmp_path / "sequence" / "step-0-A" / "model").model.config.model_type == family

    # one LUMoE expert; a mixed-adapter batch gives each sample's tokens alone
    forget = train[train["role"] == "forget"]
    expert = train_expert(base.path, base.key, "A", forget, ExpertConfig(training=AdapterTraining(
        steps=2, batch_size=2, lr=5e-2)), tmp_path / "experts", load_image)
    mixture = ExpertMixture(base.path)
    mixture.add_expert("A", expert.path)
    routes = ["A" if r == "forget" else None for r in evaluation["role"]]
    questions = evaluation["question"].tolist()
    mixed = mixture.generate(images, questions, routes, mode="mixed", max_new_tokens=6)
    grouped = mixture.generate(images, questions, routes, mode="grouped", max_new_tokens=6)
    alone = [mixture.generate([im], [q], [r], max_new_tokens=6)[0] for im, q, r in zip(images, questions, routes)]
    assert mixed == grouped == alone


@pytest.mark.parametrize("family", BLOCKED or ["none"])
def test_a_family_that_cannot_run_here_says_which_and_why(family, texts, tmp_path):
    if family == "none":
        pytest.skip("every family can run here")
    with pytest.raises(FamilyFeatureError, match=rf"(?is)model family '{family}' cannot build its processor: .*"
                                                  rf"({'|'.join(NEEDS[family])})"):
        save_tiny_family(family, texts, tmp_path / family)


def test_llava_next_through_the_dagster_assets(texts, tmp_path):
    """The paper's family through the real assets: base_model from MLU_BASE_MODEL's folder, then
    its knowledge filter, which keeps nothing (random weights) and says so."""
    import dagster as dg

    from mlu_assets.benchmark import assets as benchmark_assets
    from mlu_assets.models import assets as model_assets

    folder = save_tiny_family("llava_next", texts, tmp_path / "tiny-llava-next")
    resources = test_resources(tmp_path, models={"base_model_path": str(folder)})
    assets = dg.load_assets_from_modules([benchmark_assets, model_assets])
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("base_models", ["tiny-llava-next"])
    assert dg.materialize(assets, resources=resources, instance=instance,
                          selection=dg.AssetSelection.groups("benchmark")).success
    result = dg.materialize(assets, resources=resources, instance=instance, partition_key="tiny-llava-next",
                            selection=dg.AssetSelection.groups("models"),
                            run_config={"ops": {"knowledge_filter": {"config": {"max_new_tokens": 8}}}})
    assert result.success
    assert result.output_for_node("base_model").source == "checkpoint"
    kept = result.output_for_node("knowledge_filter")
    assert kept.empty
    meta = result.asset_materializations_for_node("knowledge_filter")[0].metadata
    assert "nothing to unlearn" in meta["nothing_to_unlearn"].value
