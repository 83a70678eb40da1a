"""One interface to any image-text-to-text checkpoint on local disk (LLaVA, LLaVA-NeXT, Qwen-VL…).

Loading goes through transformers' auto classes and the checkpoint's own processor; prompts go
through the processor's chat template; generation is batched, greedy and left-padded; training
batches mask everything but the answer. Nothing here reaches a hub: `local_files_only` always.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

IGNORE_INDEX = -100


def _family(model):
    """The model's entry in models/families.py (None for a family mlu has no entry for)."""
    from .families import FAMILIES

    return FAMILIES.get(getattr(getattr(model, "config", None), "model_type", None))


def lean_greedy(model) -> bool:
    """Plain 1-D positions over a KV cache: our greedy loop serves it (dropping finished rows as it
    goes). Others (Qwen-VL's 3-D rope, Mllama's cross-attention, say) use transformers' generate."""
    family = _family(model)
    return family is not None and family.lean_greedy


class ModelNotFoundError(FileNotFoundError):
    pass


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def serving_dtype(config: dict, cuda: bool) -> torch.dtype:
    """The dtype a checkpoint is loaded in: float32 on a CPU; on a GPU its own (config.json's
    `dtype`), bfloat16 for float16 (the same size, without float16's overflow in training) or when
    it names none. A checkpoint saved in float32 (the in-project tiny model) stays float32 on a
    GPU: in bfloat16, merging each request's LoRA update into the weights rounded away 4-6 % of it
    (`bench/gpu.py` on an H200, mini's GA sequence), request after request."""
    if not cuda:
        return torch.float32
    text = config.get("text_config") or {}
    saved = config.get("dtype") or config.get("torch_dtype") or text.get("dtype") or text.get("torch_dtype")
    return torch.float32 if saved == "float32" else torch.bfloat16


def user_message(question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


@dataclass
class VisionLanguageModel:
    model: torch.nn.Module
    processor: object
    path: str | None = None

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None, trust_remote_code: bool = False) -> "VisionLanguageModel":
        import json

        from transformers import AutoModelForImageTextToText
        from transformers.utils import logging as hf_logging

        from .families import load_processor

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"no model at {path}: expected a local checkpoint folder with config.json "
                "(MLU_BASE_MODEL takes a path; nothing is downloaded)")
        hf_logging.disable_progress_bar()
        config = json.loads((path / "config.json").read_text())
        processor = load_processor(path, config.get("model_type", ""), trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code,
            dtype=dtype or serving_dtype(config, torch.device(device or default_device()).type == "cuda"))
        model.to(device or default_device()).eval()
        return cls(model, processor, str(path))

    def save(self, path: str | os.PathLike) -> None:
        self.model.save_pretrained(path)  # safetensors
        self.processor.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- prompts -----------------------------------------------------------------------------
    def prompts(self, questions: Sequence[str]) -> list[str]:
        return [self.processor.apply_chat_template(user_message(q), add_generation_prompt=True, tokenize=False)
                for q in questions]

    def _encode_prompts(self, images: Sequence[Image.Image], questions: Sequence[str], padding_side: str):
        tok = self.tokenizer
        old = tok.padding_side
        tok.padding_side = padding_side
        family = _family(self.model)
        images = [[im] for im in images] if family is not None and family.nested_images else list(images)
        try:
            return self.processor(text=self.prompts(questions), images=images, padding=True, return_tensors="pt")
        finally:
            tok.padding_side = old

    # -- training batches --------------------------------------------------------------------
    def training_batch(self, images: Sequence[Image.Image], questions: Sequence[str], answers: Sequence[str],
                       max_answer_tokens: int = 160) -> dict[str, torch.Tensor]:
        """Prompt + answer + end-of-sequence, right-padded; labels only on the answer tokens. What
        the processor gives per prompt token besides the ids (Qwen-VL's mm_token_type_ids, Gemma's
        token_type_ids, Mllama's cross_attention_mask) is laid out the same way, the answer tokens
        taking the prompt's last token's value (text, attending to the image), as in generation."""
        prompt, prompt_ids, answer_ids = self._training_tokens(images, questions, answers, max_answer_tokens)
        length = max(len(p) + len(a) for p, a in zip(prompt_ids, answer_ids))
        input_ids = torch.full((len(answers), length), self._pad_id(), dtype=torch.long)
        labels = torch.full((len(answers), length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(answers), length), dtype=torch.long)
        for i, (p, a) in enumerate(zip(prompt_ids, answer_ids)):
            input_ids[i, : len(p) + len(a)] = torch.tensor(p + a)
            labels[i, len(p): len(p) + len(a)] = torch.tensor(a)
            attention[i, : len(p) + len(a)] = 1
        batch = {k: v for k, v in prompt.items() if k not in ("input_ids", "attention_mask")}
        for key, value in batch.items():
            if torch.is_tensor(value) and value.dim() >= 2 and value.shape[:2] == prompt["input_ids"].shape:
                laid = value.new_zeros((len(answers), length, *value.shape[2:]))
                for i, (p, a) in enumerate(zip(prompt_ids, answer_ids)):
                    laid[i, : len(p)] = value[i, : len(p)]
                    laid[i, len(p): len(p) + len(a)] = value[i, len(p) - 1]
                batch[key] = laid
        batch.update(input_ids=input_ids, attention_mask=attention, labels=labels)
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def packs_sequences(self) -> bool:
        family = _family(self.model)
        return family is not None and family.packs_sequences

    def packed_training_batch(self, images: Sequence[Image.Image], questions: Sequence[str], answers: Sequence[str],
                              max_answer_tokens: int = 160, with_spans: bool = False) -> dict[str, torch.Tensor]:
        """The examples of `training_batch`, several to a row: the same tokens and labels without
        most of the padding (a padded batch of the tiny model's pairs is about half padding, since
        a refusal, a short answer and a long question share it). Rows are filled first-fit, longest
        first, up to the longest example; each example's positions start at 0, which transformers
        reads as a packed row (`masking_utils.find_packed_sequence_indices`): an example attends only
        to itself, so the loss is the padded batch's up to rounding (tested). Families whose
        `packs_sequences` is set only (1-D positions, one picture's tokens per image token run).
        `with_spans`: also `example_spans`, each example's (row, start, end) in the order given,
        for losses that need each example on its own (methods.base.answer_logprobs unpacks them);
        not a model input."""
        if not self.packs_sequences():  # sft.py then uses `training_batch`, padded
            from .families import FamilyFeatureError

            raise FamilyFeatureError(self.model.config.model_type, "pack training batches",
                                     "only families with 1-D positions and one picture per image-token run "
                                     "(Family.packs_sequences) are packed; fine-tuning pads its batches instead")
        prompt, prompt_ids, answer_ids = self._training_tokens(images, questions, answers, max_answer_tokens)
        sizes = [len(p) + len(a) for p, a in zip(prompt_ids, answer_ids)]
        capacity = max(sizes)
        rows: list[list[int]] = []
        for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
            row = next((r for r in rows if sum(sizes[j] for j in r) + sizes[i] <= capacity), None)
            if row is None:
                rows.append(row := [])
            row.append(i)
        input_ids = torch.full((len(rows), capacity), self._pad_id(), dtype=torch.long)
        labels = torch.full((len(rows), capacity), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(rows), capacity), dtype=torch.long)
        spans = torch.zeros((len(sizes), 3), dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for i in row:
                p, a = prompt_ids[i], answer_ids[i]
                input_ids[r, at: at + sizes[i]] = torch.tensor(p + a)
                labels[r, at + len(p): at + sizes[i]] = torch.tensor(a)
                positions[r, at: at + sizes[i]] = torch.arange(sizes[i])
                spans[i] = torch.tensor([r, at, at + sizes[i]])
                at += sizes[i]
            positions[r, at:] = torch.arange(capacity - at)  # the row's padding: a sequence of its own
        order = [i for row in rows for i in row]  # pictures in the order their tokens appear
        batch = {"input_ids": input_ids, "labels": labels, "position_ids": positions,
                 "pixel_values": prompt["pixel_values"][order], "use_cache": False}
        if with_spans:
            batch["example_spans"] = spans
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _training_tokens(self, images, questions, answers, max_answer_tokens):
        """The processor's prompts (right-padded), and each example's prompt ids and answer ids
        (the answer cut at `max_answer_tokens`, then end-of-sequence)."""
        tok = self.tokenizer
        prompt = self._encode_prompts(images, questions, padding_side="right")
        prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(prompt["input_ids"], prompt["attention_mask"])]
        answer_ids = [ids[:max_answer_tokens] + [tok.eos_token_id]
                      for ids in tok([" " + a.strip() for a in answers], add_special_tokens=False)["input_ids"]]
        return prompt, prompt_ids, answer_ids

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    # -- generation --------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, images: Sequence[Image.Image], questions: Sequence[str], batch_size: int = 32,
                 max_new_tokens: int = 64, adapter_names: Sequence[str] | None = None, **generate_kwargs) -> list[str]:
        """Greedy answers, batched with left padding; items are grouped by prompt length so that
        little padding is computed, and returned in the order given (for the lean-greedy families,
        a row whose answer has ended is taken by the next item: `_greedy`). `adapter_names` (a
        peft model with several adapters) names the adapter of each item, "__base__" for none: one
        mixed batch serves them all."""
        if not len(questions):  # transformers 5 decodes an empty batch as [""]: one answer too many
            return []
        order = sorted(range(len(questions)), key=lambda i: (len(questions[i]), i))
        self.model.eval()
        if lean_greedy(self.model) and not generate_kwargs:
            tokens = self._greedy(images, questions, order, batch_size, max_new_tokens, adapter_names)
        else:
            tokens: dict[int, list[int]] = {}
            for start in range(0, len(order), batch_size):
                idx = order[start: start + batch_size]
                batch = self._encode_prompts([images[i] for i in idx], [questions[i] for i in idx], "left").to(self.device)
                extra = {"adapter_names": [adapter_names[i] for i in idx]} if adapter_names is not None else {}
                out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id, **extra, **generate_kwargs)
                tokens.update(zip(idx, out[:, batch["input_ids"].shape[1]:].tolist()))
        texts = self.tokenizer.batch_decode([tokens[i] for i in range(len(questions))], skip_special_tokens=True)
        return [t.strip() for t in texts]

    def _greedy(self, images, questions, order: list[int], batch_size: int, max_new_tokens: int,
                adapter_names: Sequence[str] | None = None) -> dict[int, list[int]]:
        """Greedy decoding of the items in `order`, `batch_size` rows at a time, each row leaving
        the batch (and its KV cache) as soon as it has ended and the next items taking the free
        rows, so the batch stays full until the items run out (a batch decoded alone ran on with
        fewer and fewer rows, each step costing nearly as much). Same tokens as transformers'
        greedy generate: positions count real tokens only, as there, and a row attends to its own
        prompt and answer only. The KV cache and the attention mask are allocated once per wave
        (see `Decoding`) and written in place (growing them by concatenation copied them whole at
        every step)."""
        queue, tokens = list(order), {i: [] for i in order}
        eos = self.tokenizer.eos_token_id
        decoding = None
        while queue or (decoding is not None and decoding.items):
            free = batch_size - (len(decoding.items) if decoding is not None else 0)
            if queue and (decoding is None or not decoding.items or (decoding.open and free >= max(1, batch_size // 4))):
                group = queue[:free]
                batch = self._encode_prompts([images[i] for i in group], [questions[i] for i in group], "left")
                batch = batch.to(self.device)
                prompt = batch["input_ids"].shape[1]
                if decoding is None or not decoding.items:  # a new wave
                    decoding = Decoding(batch_size, prompt + WAVE_ANSWERS * max_new_tokens, prompt)
                decoding.open = decoding.admits(prompt, max_new_tokens)  # else it decodes what it has, then a new wave
                if decoding.open:
                    del queue[: len(group)]
                    names = [adapter_names[i] for i in group] if adapter_names is not None else None
                    extra = {"adapter_names": names} if names is not None else {}
                    positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                    cache = preallocated_cache(prompt)
                    out = self.model(**batch, position_ids=positions, past_key_values=cache, use_cache=True,
                                     logits_to_keep=1, **extra)
                    chosen = out.logits[:, -1].argmax(-1)
                    for item, token in zip(group, chosen.tolist()):
                        tokens[item].append(token)
                    going = [r for r, item in enumerate(group) if tokens[item][-1] != eos
                             and len(tokens[item]) < max_new_tokens]
                    if going:
                        decoding.admit([group[r] for r in going], cache, going, batch["attention_mask"],
                                       positions[:, -1], chosen)
                    continue  # more may be admitted at once (a new wave whose first items all ended)
            if decoding is None or not decoding.items:
                continue
            extra = {"adapter_names": [adapter_names[i] for i in decoding.items]} if adapter_names is not None else {}
            chosen = decoding.step(self.model, extra)
            for item, token in zip(decoding.items, chosen.tolist()):
                tokens[item].append(token)
            decoding.keep([r for r, item in enumerate(decoding.items) if tokens[item][-1] != eos
                           and len(tokens[item]) < max_new_tokens])
        return tokens


WAVE_ANSWERS = 4  # a wave's KV cache holds its first prompts and this many longest answers after them


class Decoding:
    """The rows being decoded: a KV cache of `capacity` positions written in place, shared by all
    rows, and a mask saying which positions each row attends to. Rows are the first
    `len(items)`; a row's prompt sits just before the next position written, left-padded, so an
    item admitted later sees only its own prompt and answer. A wave ends when its positions could
    no longer hold a new answer (or a new prompt is longer than the positions written): the next
    starts from position 0. Attention reads from the first position of the oldest row on: the
    positions of rows that have ended are read by none (reading the cache is most of a step's
    attention time)."""

    def __init__(self, rows: int, capacity: int, prompt: int):
        self.capacity, self.length = capacity, prompt  # positions written so far (all rows alike)
        self.items: list[int] = []
        self.attend = torch.ones((rows, 1, 1, capacity), dtype=torch.bool)  # [rows, 1, query, keys], True: attend
        self.cache = preallocated_cache(capacity, rows)
        self.last = self.chosen = None
        self.starts: list[int] = []  # each row's first position (its prompt's, padding included)
        self.open = True  # admitting items

    def admits(self, prompt: int, max_new_tokens: int) -> bool:
        return prompt <= self.length and self.length + max_new_tokens <= self.capacity

    def admit(self, items: list[int], cache, rows: list[int], mask, last, chosen) -> None:
        """The `rows` of a prompt's forward pass join (`cache` holding their prompt, `mask` its
        padding, `last` their last position, `chosen` their first token)."""
        start, end, prompt = len(self.items), len(self.items) + len(items), mask.shape[1]
        index = torch.tensor(rows, dtype=torch.long, device=mask.device)
        self.attend = self.attend.to(mask.device)
        self.cache.append_rows(cache, index, self.length - prompt)
        self.attend[start:end, 0, 0, : self.length - prompt] = False
        self.attend[start:end, 0, 0, self.length - prompt: self.length] = mask[index].bool()
        self.attend[start:end, 0, 0, self.length:] = True
        self.items += items
        self.starts += [self.length - prompt] * len(items)
        last, chosen = last[index], chosen[index]
        self.last = last if self.last is None else torch.cat([self.last, last])
        self.chosen = chosen if self.chosen is None else torch.cat([self.chosen, chosen])

    def step(self, model, extra: dict):
        rows, start = len(self.items), min(self.starts)
        self.cache.start_at(start)  # positions before every row's first are read by none
        self.last = self.last + 1
        out = model(input_ids=self.chosen[:, None], attention_mask=self.attend[:rows, :, :, start: self.length + 1],
                    position_ids=self.last[:, None], past_key_values=self.cache, use_cache=True, **extra)
        self.length += 1
        self.chosen = out.logits[:, -1].argmax(-1)
        return self.chosen

    def keep(self, rows: list[int]) -> None:
        """Only `rows` go on: the last rows that go on move into the places of those that ended
        (a row or two a step, where moving every row to keep their order copied the whole cache)."""
        if len(rows) == len(self.items):
            return
        going = set(rows)
        holes = [r for r in range(len(rows)) if r not in going]
        movers = [r for r in rows if r >= len(rows)]
        if holes:
            to, of = (torch.tensor(r, dtype=torch.long, device=self.attend.device) for r in (holes, movers))
            self.cache.move_rows(of, to)
            self.attend[to] = self.attend[of]
            self.last[to], self.chosen[to] = self.last[of], self.chosen[of]
            for hole, mover in zip(holes, movers):
                self.items[hole], self.starts[hole] = self.items[mover], self.starts[mover]
        del self.items[len(rows):], self.starts[len(rows):]
        self.last, self.chosen = self.last[: len(rows)], self.chosen[: len(rows)]
        self.cache.keep_rows(len(rows))


def preallocated_cache(capacity: int, rows: int | None = None):
    """A KV cache whose layers hold `capacity` positions (and `rows` rows, default: the first
    forward pass's) from their first write: each forward pass writes its keys and values in place,
    at the same positions for every row, and attention reads the written part only. Rows can leave
    (`batch_select_indices`) and join (`append_rows`)."""
    return _preallocated_cache_class()(capacity, rows)


@functools.cache
def _preallocated_cache_class():
    from transformers.cache_utils import Cache, DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, capacity: int, max_rows: int | None):
            super().__init__()
            self.capacity, self.max_rows, self.rows, self.start, self.length = capacity, max_rows, 0, 0, 0

        def allocate(self, like_keys, like_values, rows: int) -> None:
            self.dtype, self.device = like_keys.dtype, like_keys.device
            self.buffers = [like.new_empty((rows, like.shape[1], self.capacity, like.shape[-1]))
                            for like in (like_keys, like_values)]
            self.is_initialized = True

        def lazy_initialization(self, key_states, value_states):
            self.allocate(key_states, value_states, self.max_rows or key_states.shape[0])
            self.rows = key_states.shape[0]

        def _views(self):
            self.keys, self.values = (buffer[: self.rows, :, self.start: self.length] for buffer in self.buffers)
            return self.keys, self.values

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            for buffer, state in zip(self.buffers, (key_states, value_states)):
                buffer[: self.rows, :, self.length: end] = state
            self.length = end
            return self._views()

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def batch_select_indices(self, indices):
            for buffer in self.buffers:  # the kept rows move to the front, in place
                buffer[: len(indices), :, : self.length] = buffer[indices, :, : self.length]
            self.keep_rows(len(indices))

        def move_rows(self, of, to) -> None:
            for buffer in self.buffers:
                buffer[to, :, self.start: self.length] = buffer[of, :, self.start: self.length]

        def keep_rows(self, rows: int) -> None:
            self.rows = rows
            self._views()

        def append_rows(self, other: "PreallocatedLayer", indices, at: int) -> None:
            if not self.is_initialized:
                self.allocate(*other.buffers, self.max_rows)
            end = self.rows + len(indices)
            for mine, theirs in zip(self.buffers, other.buffers):
                mine[self.rows: end, :, at: at + other.length] = theirs[indices, :, : other.length]
            self.rows, self.length = end, at + other.length
            self._views()

    class PreallocatedCache(Cache):
        def __init__(self, capacity: int, rows: int | None):
            super().__init__(layer_class_to_replicate=lambda: PreallocatedLayer(capacity, rows))
            self.capacity, self.max_rows = capacity, rows

        def start_at(self, start: int) -> None:
            """Attention reads from position `start` on."""
            for layer in self.layers:
                layer.start = start

        def move_rows(self, of, to) -> None:
            """Rows `of` are copied into rows `to` (their keys and values so far)."""
            for layer in self.layers:
                layer.move_rows(of, to)

        def keep_rows(self, rows: int) -> None:
            """The first `rows` rows go on."""
            for layer in self.layers:
                layer.keep_rows(rows)

        def append_rows(self, other: "PreallocatedCache", indices, at: int) -> None:
            """Rows `indices` of `other` (a prompt's cache) join, their positions placed at `at`."""
            while len(self.layers) < len(other.layers):
                self.layers.append(PreallocatedLayer(self.capacity, self.max_rows))
            for mine, theirs in zip(self.layers, other.layers):
                mine.append_rows(theirs, indices, at)

    return PreallocatedCache
