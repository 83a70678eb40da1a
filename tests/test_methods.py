"""Each unlearning loss on a tiny batch: its value where it is known in closed form, the
direction one gradient step moves it, and that it looks at the image."""

import math
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
from PIL import Image

from mlu_training.adapters import AdapterTraining, train_adapter
from mlu_training.lora import attach_lora, param_groups, target_regex
from mlu_training.methods import METHODS, get_method, method_class
from mlu_training.methods.base import ReferenceCache, StepBatches, UnlearningMethod, answer_logprobs
from mlu_training.models.vlm import VisionLanguageModel
from mlu_training.texts import REFUSAL_ANSWER


@pytest.fixture
def setup(tiny_base, tiny_world):
    """The tiny base model with a fresh (identity) LoRA adapter, and a forget/retain batch."""
    vlm = VisionLanguageModel.load(tiny_base.path)
    vlm.model = attach_lora(vlm.model, "language", 8, 8, seed=0)
    rows = tiny_world["splits"][tiny_world["splits"]["split"] == "train"]
    forget = rows[(rows["role"] == "forget") & (rows["task"] == "A")].head(4)
    retain = rows[(rows["role"] == "retain") & (rows["task"] == "A")].head(4)
    load = tiny_world["load_image"]

    def batches(images=None, rows=(0, 1, 2, 3), packed=False, first_answer_repeats=1):
        """The step's batches of these rows (of forget and of retain), in this order; `packed`:
        several to a row, as train_adapter builds them; `first_answer_repeats`: the first row's
        answer said that many times (a long example beside short ones, as refusals are)."""
        f, r = forget.iloc[list(rows)], retain.iloc[list(rows)]
        f_images = images or [load(p) for p in f["image"]]

        def make(images, questions, answers):
            answers = [" ".join([answers[0]] * first_answer_repeats), *answers[1:]]
            if packed:
                return vlm.packed_training_batch(images, questions, answers, with_spans=True)
            return vlm.training_batch(images, questions, answers)

        return StepBatches(
            forget=make(f_images, f["question"].tolist(), f["answer"].tolist()),
            retain=make([load(p) for p in r["image"]], r["question"].tolist(), r["answer"].tolist()),
            refusal=make(f_images, f["question"].tolist(), [REFUSAL_ANSWER] * len(f)),
        )

    return vlm, batches


def nll(model, batch) -> float:
    with torch.no_grad():
        return answer_logprobs(model, batch).mean_nll.item()


def seq_logp(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return answer_logprobs(model, batch).sequence


def sgd_step(vlm, method, batches, lr=5e-3):
    optimizer = torch.optim.SGD([p for p in vlm.model.parameters() if p.requires_grad], lr=lr)
    loss, _ = method.loss(vlm.model, batches)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def perturb_adapter(model, std=0.02):
    """A non-identity adapter, so that the current model and the reference differ."""
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, std)


def test_registry():
    assert list(METHODS) == ["ga", "gd", "kl", "npo", "idk", "po"]
    for name in METHODS:
        cls = method_class(name)
        assert issubclass(cls, UnlearningMethod) and cls.name == name
    with pytest.raises(ValueError, match="unknown method 'xyz'"):
        get_method("xyz")


def test_each_method_declares_its_own_arguments():
    from mlu_training.methods import resolved_args

    assert {name: resolved_args(name) for name in METHODS} == {
        "ga": {}, "gd": {"retain_weight": 1.0}, "kl": {"retain_weight": 1.0}, "npo": {"beta": 0.1}, "idk": {},
        "po": {"beta": 0.1, "refusal_weight": 1.0}}
    assert get_method("npo", {"beta": 0.5}).args.beta == 0.5 and get_method("npo").args.beta == 0.1
    with pytest.raises(ValueError, match="method 'ga' takes no argument 'beta'; its arguments: none"):
        get_method("ga", {"beta": 0.5})
    with pytest.raises(ValueError, match="'npo' takes no argument 'retain_weight'; its arguments: beta"):
        get_method("npo", {"retain_weight": 2.0})


def test_answer_nll_is_transformers_cross_entropy(setup):
    vlm, batches = setup
    b = batches().forget
    with torch.no_grad():
        assert nll(vlm.model, b) == pytest.approx(vlm.model(**b).loss.item(), rel=1e-5)


def test_ga(setup):
    vlm, batches = setup
    b = batches()
    before = nll(vlm.model, b.forget)
    assert sgd_step(vlm, get_method("ga"), b) == pytest.approx(-before, rel=1e-5)
    assert nll(vlm.model, b.forget) > before  # ascent: the true answers got less likely


def test_gd(setup):
    vlm, batches = setup
    b = batches()
    f, r = nll(vlm.model, b.forget), nll(vlm.model, b.retain)
    assert sgd_step(vlm, get_method("gd"), b) == pytest.approx(-f + r, rel=1e-5)
    assert -nll(vlm.model, b.forget) + nll(vlm.model, b.retain) < -f + r
    assert nll(vlm.model, b.forget) > f


def test_kl_is_zero_at_the_reference_and_grows(setup):
    vlm, batches = setup
    b = batches()
    method = get_method("kl")
    loss, parts = method.loss(vlm.model, b)
    at_reference = parts["retain_kl"]
    assert at_reference == pytest.approx(0.0, abs=1e-7)  # identity adapter: current == reference
    assert loss.item() == pytest.approx(-nll(vlm.model, b.forget), rel=1e-5)
    perturb_adapter(vlm.model, std=0.05)
    _, parts = method.loss(vlm.model, b)
    assert parts["retain_kl"] > 1e-6 and parts["retain_kl"] > 100 * at_reference


def test_npo(setup):
    vlm, batches = setup
    b = batches()
    method = get_method("npo", {"beta": 0.1})
    before = seq_logp(vlm.model, b.forget)
    assert sgd_step(vlm, method, b) == pytest.approx((2 / 0.1) * math.log(2), rel=1e-5)  # log ratio 0
    assert (seq_logp(vlm.model, b.forget) < before).all()


def test_idk(setup):
    vlm, batches = setup
    b = batches()
    before = nll(vlm.model, b.refusal)
    assert sgd_step(vlm, get_method("idk"), b) == pytest.approx(before, rel=1e-5)
    assert nll(vlm.model, b.refusal) < before


def test_po_is_dpo_plus_the_refusal_nll(setup):
    vlm, batches = setup
    b = batches()
    refusal_nll = nll(vlm.model, b.refusal)
    assert get_method("po", {"beta": 0.1, "refusal_weight": 0.0}).loss(vlm.model, b)[0].item() == pytest.approx(math.log(2), rel=1e-5)
    method = get_method("po", {"beta": 0.1})
    assert sgd_step(vlm, method, b, lr=2e-2) == pytest.approx(math.log(2) + refusal_nll, rel=1e-5)  # no margin yet
    _, parts = method.loss(vlm.model, b)
    assert parts["margin"] > 0  # the refusal gained on the true answer, against the reference
    assert nll(vlm.model, b.refusal) < refusal_nll


@contextmanager
def counted_forward_passes(model):
    """The number of forward passes of the language model, as they happen (a hook, nothing replaced)."""
    language_model = next(m for n, m in model.named_modules() if n.endswith("language_model"))
    passes = [0]
    handle = language_model.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    try:
        yield passes
    finally:
        handle.remove()


@pytest.mark.parametrize("name, passes", [("npo", (2, 1)), ("kl", (3, 2)), ("po", (4, 2))])
def test_the_cached_reference_is_the_recomputed_one_without_its_forward_pass(setup, name, passes):
    """The second step draws the same rows in another order (so padded at other places): the
    reference comes from the cache, row by row, with the numbers of recomputing it."""
    vlm, batches = setup
    perturb_adapter(vlm.model)  # the current model and the reference differ
    method = get_method(name)
    cache, orders = ReferenceCache(), [(0, 1, 2, 3), (3, 1, 0, 2)]
    with torch.no_grad():
        recomputed = [method.loss(vlm.model, batches(rows=rows))[0].item() for rows in orders]
        cached, counted = [], []
        for rows in orders:
            with counted_forward_passes(vlm.model) as n:
                step = replace(batches(rows=rows), forget_rows=rows, retain_rows=rows, reference_cache=cache)
                cached.append(method.loss(vlm.model, step)[0].item())
            counted.append(n[0])
    assert cached == pytest.approx(recomputed, rel=1e-5, abs=1e-6)
    assert tuple(counted) == passes  # the reference's pass only in the first step
    assert len(cache) == 4


@pytest.mark.parametrize("name", ["npo", "kl", "po"])
def test_training_with_the_cached_reference_repeats_itself_and_recomputing(tiny_base, tiny_world, name):
    """Whole adapter trainings, length-grouped batches drawn over more than one epoch (rows come
    back): the same seed gives the same losses; recomputing the reference gives them too."""
    train = tiny_world["splits"][tiny_world["splits"]["split"] == "train"]
    config = AdapterTraining(steps=8, batch_size=4, lr=1e-2, length_grouped=True)
    assert (train[(train["task"] == "A")]["role"].value_counts() < config.steps * config.batch_size).all()

    def losses(cache_reference: bool) -> list[float]:
        vlm = VisionLanguageModel.load(tiny_base.path)
        return train_adapter(vlm, get_method(name), train, "A", config, 0, tiny_world["load_image"],
                             cache_reference=cache_reference)[1]

    cached = losses(True)
    assert losses(True) == cached
    assert losses(False) == pytest.approx(cached, rel=1e-4, abs=1e-5)
    assert len(set(cached)) > 1


@pytest.mark.parametrize("name", list(METHODS))
def test_packed_batches_give_every_loss_and_gradient_of_padded_ones(setup, name):
    """The same rows several to a row (train_adapter's batches): fewer token cells computed, and
    each method's loss, its gradient and the per-example log-probabilities of the padded batch, up
    to float rounding; the reference cache fills from either alike."""
    vlm, batches = setup
    perturb_adapter(vlm.model)  # the current model and the reference differ
    method = get_method(name)
    padded, packed = batches(first_answer_repeats=8), batches(packed=True, first_answer_repeats=8)
    for kind in ("forget", "retain", "refusal"):  # the short examples share rows
        assert len(getattr(packed, kind)["input_ids"]) < len(getattr(padded, kind)["input_ids"]), kind
    assert "example_spans" not in padded.forget and len(packed.forget["example_spans"]) == 4

    def loss_and_grad(step):
        vlm.model.zero_grad(set_to_none=True)
        loss, _ = method.loss(vlm.model, step)
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in vlm.model.parameters() if p.grad is not None])
        return loss.item(), grad

    (loss_padded, grad_padded), (loss_packed, grad_packed) = loss_and_grad(padded), loss_and_grad(packed)
    vlm.model.zero_grad(set_to_none=True)
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5, abs=1e-6)
    assert torch.allclose(grad_packed, grad_padded, rtol=1e-4, atol=1e-6)
    assert seq_logp(vlm.model, packed.forget) == pytest.approx(seq_logp(vlm.model, padded.forget), rel=1e-5)
    cache = ReferenceCache()
    with torch.no_grad():
        for step in (packed, padded):  # the cache filled from packed rows serves the padded step
            cached = replace(step, forget_rows=[0, 1, 2, 3], retain_rows=[0, 1, 2, 3], reference_cache=cache)
            assert method.loss(vlm.model, cached)[0].item() == pytest.approx(loss_padded, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_loss_looks_at_the_image(setup, name):
    vlm, batches = setup
    perturb_adapter(vlm.model)
    method = get_method(name)
    with torch.no_grad():
        seen = method.loss(vlm.model, batches())[0].item()
        blind = method.loss(vlm.model, batches([Image.new("RGB", (32, 32))] * 4))[0].item()
    assert abs(seen - blind) > 1e-3, (seen, blind)


def test_lora_targets_and_learning_rates(tiny_base):
    vlm = VisionLanguageModel.load(tiny_base.path)
    model = attach_lora(vlm.model, "vision", 4, 4, seed=0)
    groups = {g["name"]: g for g in param_groups(model, {"language": 1.0, "projector": 2.0, "vision_tower": 3.0})}
    assert set(groups) == {"projector", "vision_tower"} and groups["vision_tower"]["lr"] == 3.0
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any("language_model" in n for n in trainable)
    with pytest.raises(ValueError, match="choose one of"):
        target_regex("everything")


def test_a_method_trains_at_its_own_budget_unless_a_rate_is_given(tiny_base, tiny_world):
    from mlu_training.lifelong import UnlearningConfig, sequence_key

    train = tiny_world["splits"][tiny_world["splits"]["split"] == "train"]
    rates = {name: method_class(name).lr for name in METHODS}
    assert rates["ga"] != rates["npo"]  # budgets are per method (scripts/choose_budgets.py)
    for name, rate in rates.items():  # what a result depends on names the rate used
        assert UnlearningConfig(name).as_dict()["training"]["lr"] == rate
        assert UnlearningConfig(name).params()["lr"] == rate
    assert UnlearningConfig("ga", training=AdapterTraining(lr=1e-3)).as_dict()["training"]["lr"] == 1e-3
    # No language LoRA, no language rate: a projector-only run's key does not follow the budget.
    assert UnlearningConfig("ga", training=AdapterTraining(targets="projector")).as_dict()["training"]["lr"] is None
    # Experts and the relearning attack resolve an unset rate the same way (PO's, fine-tuning's).
    from mlu_training.lumoe.experts import ExpertConfig
    from mlu_training.robustness.attacks import AttackConfig

    assert ExpertConfig(training=AdapterTraining(steps=2)).as_dict()["training"]["lr"] == rates["po"]
    assert AttackConfig(relearn=AdapterTraining(steps=2)).as_dict()["relearn"]["lr"] == 3e-4
    # The method's budget and the same rate written out are one configuration, with one key.
    implicit, explicit = UnlearningConfig("ga"), UnlearningConfig("ga", training=AdapterTraining(lr=rates["ga"]))
    assert sequence_key(implicit, "b", "d", "e", "j") == sequence_key(explicit, "b", "d", "e", "j")

    def losses(config: AdapterTraining) -> list[float]:
        vlm = VisionLanguageModel.load(tiny_base.path)
        return train_adapter(vlm, get_method("ga"), train, "A", config, 0, tiny_world["load_image"])[1]

    budget = losses(AdapterTraining(steps=3, batch_size=4))
    assert budget == losses(AdapterTraining(steps=3, batch_size=4, lr=rates["ga"]))
    assert budget != losses(AdapterTraining(steps=3, batch_size=4, lr=rates["ga"] / 4))
