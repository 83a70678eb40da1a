"""One interface to any image-text-to-text checkpoint on local disk (LLaVA, LLaVA-NeXT, Qwen-VL…).

Loading goes through transformers' auto classes and the checkpoint's own processor; prompts go
through the processor's chat template; generation is batched, greedy and left-padded; training
batches mask everything but the answer. Nothing here reaches a hub: `local_files_only` always.
"""

from __future__ import annotations

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


def torch_threads(n: int | None = None) -> None:
    """Use the cores we have (2 in CI) without oversubscribing them."""
    torch.set_num_threads(n or max(1, len(os.sched_getaffinity(0))))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
        model_type = json.loads((path / "config.json").read_text()).get("model_type", "")
        processor = load_processor(path, model_type, trust_remote_code)
        model = AutoModelForImageTextToText.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code,
            dtype=dtype or (torch.bfloat16 if torch.cuda.is_available() else torch.float32))
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
        tok = self.tokenizer
        prompt = self._encode_prompts(images, questions, padding_side="right")
        prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(prompt["input_ids"], prompt["attention_mask"])]
        answer_ids = [ids[:max_answer_tokens] + [tok.eos_token_id]
                      for ids in tok([" " + a.strip() for a in answers], add_special_tokens=False)["input_ids"]]
        length = max(len(p) + len(a) for p, a in zip(prompt_ids, answer_ids))
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        input_ids = torch.full((len(answers), length), pad, dtype=torch.long)
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

    # -- generation --------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, images: Sequence[Image.Image], questions: Sequence[str], batch_size: int = 32,
                 max_new_tokens: int = 64, adapter_names: Sequence[str] | None = None, **generate_kwargs) -> list[str]:
        """Greedy answers, batched with left padding; items are grouped by prompt length so that
        little padding is computed, and returned in the order given. `adapter_names` (a peft
        model with several adapters) names the adapter of each item, "__base__" for none: one
        mixed batch serves them all."""
        if not len(questions):  # transformers 5 decodes an empty batch as [""]: one answer too many
            return []
        order = sorted(range(len(questions)), key=lambda i: (len(questions[i]), i))
        self.model.eval()
        lean = lean_greedy(self.model) and not generate_kwargs
        tokens: dict[int, list[int]] = {}
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            batch = self._encode_prompts([images[i] for i in idx], [questions[i] for i in idx], "left").to(self.device)
            names = [adapter_names[i] for i in idx] if adapter_names is not None else None
            if lean:
                tokens.update(zip(idx, self._greedy(batch, max_new_tokens, names)))
            else:
                extra = {"adapter_names": names} if names is not None else {}
                out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id, **extra, **generate_kwargs)
                tokens.update(zip(idx, out[:, batch["input_ids"].shape[1]:].tolist()))
        texts = self.tokenizer.batch_decode([tokens[i] for i in range(len(questions))], skip_special_tokens=True)
        return [t.strip() for t in texts]

    def _greedy(self, batch, max_new_tokens: int, adapter_names: list[str] | None = None) -> list[list[int]]:
        """Greedy decoding that drops each row from the batch (and its KV cache) once it has
        ended, instead of computing padding until the longest answer is done. Same tokens as
        transformers' greedy generate: positions count real tokens only, as there."""
        eos = self.tokenizer.eos_token_id
        mask = batch["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"adapter_names": list(adapter_names)} if adapter_names is not None else {}
        out = self.model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1, **extra)
        cache, last = out.past_key_values, positions[:, -1]
        rows = torch.arange(mask.shape[0], device=mask.device)
        tokens: list[list[int]] = [[] for _ in range(mask.shape[0])]
        for step in range(max_new_tokens):
            chosen = out.logits[:, -1].argmax(-1)
            for row, token in zip(rows.tolist(), chosen.tolist()):
                tokens[row].append(token)
            running = chosen != eos
            if step == max_new_tokens - 1 or not running.any():
                break
            if not running.all():
                keep = running.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                rows, mask, last, chosen = rows[keep], mask[keep], last[keep], chosen[keep]
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            last = last + 1
            if adapter_names is not None:
                extra = {"adapter_names": [adapter_names[r] for r in rows.tolist()]}
            out = self.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=last[:, None],
                             past_key_values=cache, use_cache=True, **extra)
        return tokens
