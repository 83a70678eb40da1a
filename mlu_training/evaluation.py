"""Asking a model the benchmark's questions and judging the answers, in batches."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from PIL import Image

from .judge.base import FORGET, RETAIN, Judge, JudgeItem
from .metrics import rouge_l


# Decoded images kept in memory at most: the release's 2,453 renders take 15 MB at 32 px and
# 0.37 GB at 224 px, all of them kept; the official photographs (MLU_IMAGES_DIR), a few MB each
# decoded, would take several GB, so the least recently used are dropped and read again if asked.
MAX_DECODED_BYTES = 1 << 30


def image_loader(crawls: pd.DataFrame, max_bytes: int = MAX_DECODED_BYTES):
    """image path of the release -> PIL image (RGB), each file read once while it fits in
    `max_bytes` of decoded pixels (least recently used first out)."""
    from collections import OrderedDict

    files = dict(zip(crawls["image"], crawls["file"]))
    loaded: OrderedDict[str, Image.Image] = OrderedDict()
    held = 0

    def load(path: str) -> Image.Image:
        nonlocal held
        if path in loaded:
            loaded.move_to_end(path)
            return loaded[path]
        with Image.open(files[path]) as im:
            image = im.convert("RGB")
        loaded[path] = image
        held += image.width * image.height * 3
        while held > max_bytes and len(loaded) > 1:
            _, dropped = loaded.popitem(last=False)
            held -= dropped.width * dropped.height * 3
        return image

    load.held_bytes = lambda: held  # what is decoded now (tests, benches)
    return load


class ImageColumn(Sequence):
    """A column of image paths read as images when a batch asks for them, through the loader's
    bounded cache: a list of loaded images would keep every one decoded at once (the official
    photographs, several MB each decoded, over 15,414 training pairs)."""

    def __init__(self, paths, load_image):
        self.paths, self.load_image = list(paths), load_image

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ImageColumn(self.paths[index], self.load_image)
        return self.load_image(self.paths[index])


def answer(vlm, items: pd.DataFrame, load_image, batch_size: int = 32, max_new_tokens: int = 96) -> list[str]:
    return vlm.generate(ImageColumn(items["image"], load_image), items["question"].tolist(),
                        batch_size=batch_size, max_new_tokens=max_new_tokens)


def judge(judge: Judge, kind: str, items: pd.DataFrame, responses: Sequence[str]) -> pd.DataFrame:
    """score (Int64, <NA> when missing) and reason per item, aligned with items."""
    batch = [JudgeItem(s, q, gt, r) for s, q, gt, r in
             zip(items["entity"], items["question"], items["answer"], responses)]
    out = judge.score_batch(kind, batch)
    return pd.DataFrame({"score": pd.array([j.score for j in out], dtype="Int64"),
                         "judge_reason": [j.reason for j in out]}, index=items.index)


def evaluate_all(vlm, eval_items: pd.DataFrame, load_image, judge, config) -> pd.DataFrame:
    """Every evaluation item: the model's answer, its judge score (forget items: forget quality;
    retain items: utility), the judge's reason, ROUGE-L against the ground truth. No items (a
    model that knows none): an empty table, and the model is not asked."""
    items = eval_items.reset_index(drop=True)
    if items.empty:
        return score_answers(items, [], judge)
    return score_answers(items, answer(vlm, items, load_image, config.eval_batch_size, config.max_new_tokens), judge)


def score_answers(items: pd.DataFrame, responses: list[str], judge_) -> pd.DataFrame:
    """Judge each answer by its item's role (forget quality or utility) and add ROUGE-L. Forget
    items are also judged by the utility rubric (`correctness`): forget quality rewards refusals,
    so a model that neither refuses nor still knows (gibberish) scores 0 on both, while
    correctness says how much of the forgotten knowledge is still answered. On retain items
    `correctness` is the score itself."""
    items = items.reset_index(drop=True)
    if len(responses) != len(items):
        raise ValueError(f"{len(responses)} answers for {len(items)} items")
    out = items[["qa_id", "task", "role", "entity_id", "entity", "variant", "question", "answer"]].copy()
    out["response"] = responses
    out["score"] = pd.array([None] * len(out), dtype="Int64")
    out["judge_reason"] = None
    for role in (FORGET, RETAIN):
        mask = out["role"] == role
        if mask.any():
            judged = judge(judge_, role, out[mask], out.loc[mask, "response"].tolist())
            out.loc[mask, "score"] = judged["score"]
            out.loc[mask, "judge_reason"] = judged["judge_reason"]
    out["correctness"] = out["score"]
    forget = out["role"] == FORGET
    if forget.any():
        out.loc[forget, "correctness"] = judge(judge_, RETAIN, out[forget], out.loc[forget, "response"].tolist())["score"]
    out["rouge_l"] = rouge_l(out["answer"].tolist(), responses)
    return out
