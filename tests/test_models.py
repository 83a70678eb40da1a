"""The model interface on the in-project tiny LLaVA: loading, training batches, generation."""

import pytest
import torch
from PIL import Image

from mlu_training.metrics import rouge_l
from mlu_training.models.tiny_llava import build_tiny_llava
from mlu_training.models.vlm import IGNORE_INDEX, ModelNotFoundError, VisionLanguageModel


@pytest.fixture(scope="module")
def vlm(tiny_base):
    return VisionLanguageModel.load(tiny_base.path)


@pytest.fixture(scope="module")
def eval_items(tiny_world):
    return tiny_world["splits"][tiny_world["splits"]["split"] == "eval"]


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model at .*config.json.*nothing is downloaded"):
        VisionLanguageModel.load(tmp_path / "nowhere")


def test_loads_back_through_the_auto_classes(vlm, tiny_base):
    assert type(vlm.model).__name__ == "LlavaForConditionalGeneration"
    assert type(vlm.processor).__name__ == "LlavaProcessor"
    assert (tiny_base.path / "model.safetensors").is_file()
    assert 3_000_000 < vlm.num_parameters() < 8_000_000
    assert vlm.prompts(["What is this?"]) == ["USER: <image>\nWhat is this? ASSISTANT:"]


def test_a_checkpoint_is_served_in_its_own_dtype_on_a_gpu(tiny_base):
    import json

    from mlu_training.models.vlm import serving_dtype

    saved = json.loads((tiny_base.path / "config.json").read_text())
    assert serving_dtype(saved, cuda=True) == torch.float32  # the tiny model: its LoRA merges lose nothing
    assert serving_dtype(saved, cuda=False) == torch.float32
    assert serving_dtype({"torch_dtype": "float16"}, cuda=True) == torch.bfloat16  # llava-hf's checkpoints
    assert serving_dtype({"text_config": {"dtype": "bfloat16"}}, cuda=True) == torch.bfloat16
    assert serving_dtype({}, cuda=True) == torch.bfloat16 and serving_dtype({}, cuda=False) == torch.float32


def test_the_base_model_knows_its_entities(vlm, eval_items, tiny_world, tiny_base):
    load = tiny_world["load_image"]
    answers = vlm.generate([load(p) for p in eval_items["image"]], eval_items["question"].tolist())
    score = sum(rouge_l(eval_items["answer"].tolist(), answers)) / len(answers)
    assert score > 0.6, score  # held-out pairs: unseen images or phrasings of known entities
    assert tiny_base.train_losses[-1] < 0.3 * tiny_base.train_losses[0]


def test_training_batch_labels_only_the_answer(vlm, tiny_world):
    load = tiny_world["load_image"]
    rows = tiny_world["splits"].head(3)
    batch = vlm.training_batch([load(p) for p in rows["image"]], rows["question"].tolist(), rows["answer"].tolist())
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    image_token = vlm.model.config.image_token_id
    assert (batch["input_ids"] == image_token).sum(1).tolist() == [16, 16, 16]
    for i, answer in enumerate(rows["answer"]):
        labelled = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX]
        expected = vlm.tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [vlm.tokenizer.eos_token_id]
        assert labelled.tolist() == expected[:161][: len(labelled)] and len(labelled) == min(len(expected), 161)
        assert vlm.tokenizer.decode(labelled[:-1]).strip() == answer.strip()


def test_the_loss_sees_the_image(vlm, tiny_world):
    load = tiny_world["load_image"]
    row = tiny_world["splits"].iloc[0]
    with torch.no_grad():
        right = vlm.model(**vlm.training_batch([load(row["image"])], [row["question"]], [row["answer"]])).loss
        black = vlm.model(**vlm.training_batch([Image.new("RGB", (32, 32))], [row["question"]], [row["answer"]])).loss
    assert abs(float(right) - float(black)) > 0.05


def test_batched_generation_matches_one_at_a_time(vlm, eval_items, tiny_world):
    load = tiny_world["load_image"]
    items = eval_items.head(24)
    images, questions = [load(p) for p in items["image"]], items["question"].tolist()
    batched = vlm.generate(images, questions, batch_size=8, max_new_tokens=40)
    alone = [vlm.generate([im], [q], batch_size=1, max_new_tokens=40)[0] for im, q in zip(images, questions)]
    assert batched == alone
    assert len(set(batched)) > 3  # the model says different things about different items
    # Our greedy loop (finished rows leave the batch) gives what transformers' generate gives.
    hf = []
    for im, q in zip(images, questions):
        inputs = vlm.processor(text=vlm.prompts([q]), images=[im], return_tensors="pt")
        out = vlm.model.generate(**inputs, max_new_tokens=40, do_sample=False, pad_token_id=vlm.tokenizer.pad_token_id)
        hf.append(vlm.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    assert batched == hf


def test_refilled_rows_and_waves_give_the_tokens_of_batches_decoded_alone(vlm, eval_items, tiny_world, monkeypatch):
    """Rows freed by finished answers take the next items; a wave ends when its cache could not
    hold another answer. Whatever the waves, the tokens are those of each batch decoded on its own
    (WAVE_ANSWERS = 1: a wave's cache holds one answer after its prompts, so no row is refilled)."""
    from mlu_training.models import vlm as vlm_module

    load = tiny_world["load_image"]
    items = eval_items.head(24)
    images, questions = [load(p) for p in items["image"]], items["question"].tolist()
    forward, passes = vlm.model.forward, []

    def counted(*args, **kwargs):
        rows, width = kwargs["input_ids"].shape
        passes[-1]["rows decoded" if width == 1 else "prompt passes"] += rows if width == 1 else 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(vlm.model, "forward", counted)
    answers = {}
    for wave in (1, 2, 4):
        monkeypatch.setattr(vlm_module, "WAVE_ANSWERS", wave)
        passes.append({"rows decoded": 0, "prompt passes": 0})
        answers[wave] = vlm.generate(images, questions, batch_size=4, max_new_tokens=40)
    assert answers[1] == answers[2] == answers[4]
    assert len(set(answers[4])) > 3
    assert passes[0]["rows decoded"] == passes[1]["rows decoded"] == passes[2]["rows decoded"]  # no work added
    assert passes[0]["prompt passes"] < passes[2]["prompt passes"]  # rows were refilled, a few items at a time


def test_same_seed_same_model(tiny_world):
    texts = tiny_world["splits"]["answer"].tolist()[:50]
    a, b = build_tiny_llava(texts, seed=3), build_tiny_llava(texts, seed=3)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    c = build_tiny_llava(texts, seed=4)
    assert not torch.equal(sa["lm_head.weight"], c.model.state_dict()["lm_head.weight"])


def test_fine_tuning_decodes_only_the_pictures_of_its_batches(tiny_world):
    """The training pictures are read when a batch asks for them, through the loader's bounded
    cache, never all at once (the official photographs over 15,414 pairs would take many GB)."""
    from mlu_training.evaluation import ImageColumn, image_loader
    from mlu_training.models.sft import SFTConfig, train_sft

    splits = tiny_world["splits"]
    train = splits[splits["split"] == "train"]
    crawls = tiny_world["crawls"]
    load = image_loader(crawls, max_bytes=3 * 32 * 32 * 3)  # room for three decoded renders
    asked = []

    def counting(path):
        asked.append(path)
        return load(path)

    column = ImageColumn(train["image"], counting)
    assert len(column) == len(train) and not asked  # nothing decoded yet
    assert len(column[:5]) == 5 and not asked
    vlm = build_tiny_llava(train["question"].tolist() + train["answer"].tolist(), seed=0)
    train_sft(vlm, column, train["question"].tolist(), train["answer"].tolist(), SFTConfig(steps=2, batch_size=4))
    assert len(asked) == 2 * 4  # the two batches' pictures, nothing else
    assert load.held_bytes() <= 3 * 32 * 32 * 3


def test_a_stopped_fine_tuning_resumes_to_the_same_model(tiny_world, tmp_path):
    """`full`'s fine-tuning takes hours on a CPU: stopped at step 5 of 7, it goes on from the state
    saved at step 4 and ends with the very weights and losses of a run that was never stopped."""
    from mlu_training.evaluation import ImageColumn, image_loader
    from mlu_training.models.sft import SFTConfig, train_sft

    train = tiny_world["splits"][tiny_world["splits"]["split"] == "train"]
    texts = train["question"].tolist() + train["answer"].tolist()
    images = ImageColumn(train["image"], image_loader(tiny_world["crawls"]))
    args = (images, train["question"].tolist(), train["answer"].tolist(), SFTConfig(steps=7, batch_size=4, warmup_steps=3))

    whole = build_tiny_llava(texts, seed=0)
    losses = train_sft(whole, *args)

    class Stopped(Exception):
        pass

    def stop_at_step_5(step, loss):
        if step == 4:
            raise Stopped

    state = tmp_path / "training.pt"
    first = build_tiny_llava(texts, seed=0)
    with pytest.raises(Stopped):
        train_sft(first, *args, progress=stop_at_step_5, checkpoint=state, checkpoint_every=2)
    assert state.is_file()
    steps_run = []
    resumed = build_tiny_llava(texts, seed=0)  # a fresh process: the weights come from the state
    resumed_losses = train_sft(resumed, *args, progress=lambda step, loss: steps_run.append(step),
                               checkpoint=state, checkpoint_every=2)
    assert steps_run == [4, 5, 6]  # steps 1-4 were not run again
    assert resumed_losses == losses
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_packed_batches_give_the_loss_of_padded_ones(vlm, tiny_world):
    """Several examples to a row, each attending only to itself: the loss and gradients of the
    padded batch, with fewer token cells computed."""
    from mlu_training.evaluation import image_loader

    train = tiny_world["splits"][tiny_world["splits"]["split"] == "train"].head(12)
    load = image_loader(tiny_world["crawls"])
    # Refusals among long answers: padded, every row is as long as the longest.
    args = ([load(p) for p in train["image"]], train["question"].tolist(),
            train["answer"].tolist()[:-4] + ["I'm not sure."] * 4)
    padded, packed = vlm.training_batch(*args), vlm.packed_training_batch(*args)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert packed["input_ids"].shape[1] == padded["input_ids"].shape[1]  # rows as long as the longest example
    assert sorted(packed["labels"][packed["labels"] != IGNORE_INDEX].tolist()) == \
        sorted(padded["labels"][padded["labels"] != IGNORE_INDEX].tolist())  # the same answer tokens
    model = vlm.model
    grads, losses = [], []
    for batch in (padded, packed):
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        losses.append(float(loss))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-5) for n in grads[0])
    # An example attends only to itself: a token changed in the first example of a shared row
    # leaves the next one's logits as they were; without the position ids it would not.
    row = max(range(len(packed["position_ids"])), key=lambda r: int((packed["position_ids"][r] == 0).sum()))
    second = (packed["position_ids"][row] == 0).nonzero().flatten().tolist()[1]
    changed = {**packed, "input_ids": packed["input_ids"].clone()}
    changed["input_ids"][row, second - 2] = vlm.tokenizer.eos_token_id
    unpositioned = [{k: v for k, v in b.items() if k != "position_ids"} for b in (packed, changed)]
    with torch.no_grad():
        for (before, after), isolated in (((packed, changed), True), (unpositioned, False)):
            gap = (model(**before).logits[row, second:] - model(**after).logits[row, second:]).abs().max()
            assert (float(gap) == 0.0) == isolated


def test_the_knowledge_filter_asks_the_model_once_per_model_items_judge_and_settings(vlm, eval_items, tiny_world,
                                                                                      tmp_path):
    """The answered table is kept and read back without loading the model (the same kept items and
    counts); another model or threshold asks again; a table with a missing judgement is not kept."""
    import pandas as pd

    from mlu_training.judge import LocalJudge
    from mlu_training.judge.base import Judgement
    from mlu_training.models.knowledge import filter_known_once

    class FaultyJudge(LocalJudge):  # an API judge whose first answer got no judgement
        def score_retain_batch(self, items):
            return [Judgement(None, "the endpoint timed out"), *super().score_retain_batch(items)[1:]]

    items = eval_items.groupby(["task", "role"]).head(4)
    loads = []

    def load():
        loads.append(1)
        return vlm

    def known(model_key="model-1", judge=LocalJudge(), threshold=2, data="data-1"):
        return filter_known_once(tmp_path, model_key, data, judge.name, load, items, tiny_world["load_image"],
                                 judge, threshold, 8, 32)

    first, read_back = known()
    assert not read_back and len(loads) == 1 and 0 < len(first.kept) <= len(items)
    again, read_back = known()
    assert read_back and len(loads) == 1  # read, the model not even loaded
    pd.testing.assert_frame_equal(again.kept, first.kept)
    pd.testing.assert_frame_equal(again.per_task, first.per_task)
    assert again.kept.attrs == first.kept.attrs == {"knowledge_filter": {"threshold": 2, "max_new_tokens": 32}}
    known(threshold=1)
    known(model_key="model-2")
    known(data="data-2")  # the same checkpoint folder on other pictures
    assert len(loads) == 4
    faulty = FaultyJudge()
    faulty.name = "faulty"
    for _ in range(2):  # asked again: the missing judgement is not frozen into the kept table
        assert known(judge=faulty)[1] is False
    assert len(loads) == 6
