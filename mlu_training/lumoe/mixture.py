"""Serving LUMoE: one base model in memory, every expert loaded beside it as a peft adapter.
Never a copy of the model per expert (the published code deep-copied it N+1 times)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from ..models.sources import folder_digest

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class ExpertMixture:
    def __init__(self, base_model_path: str | None, vlm=None):
        """Over the checkpoint at `base_model_path`, or over `vlm`, a base model already in memory
        (an attack's changed copy of the weights: no files, so no state_key to cache answers by)."""
        from ..models.vlm import VisionLanguageModel

        self.vlm = vlm if vlm is not None else VisionLanguageModel.load(base_model_path)
        self.base_model_path = str(base_model_path) if base_model_path is not None else None
        self.experts: dict[str, str] = {}
        self._adapter_digests: dict[str, str] = {}  # taken as each adapter is loaded
        self._base_digest: str | None = None

    @classmethod
    def over(cls, vlm) -> "ExpertMixture":
        """A mixture over a base model already in memory (an attack's changed copy of the weights)."""
        return cls(None, vlm)

    def add_expert(self, name: str, adapter_path: str | Path) -> None:
        from peft import PeftModel

        if name in self.experts:
            return
        if not self.experts:
            self.vlm.model = PeftModel.from_pretrained(self.vlm.model, str(adapter_path), adapter_name=name)
        else:
            self.vlm.model.load_adapter(str(adapter_path), adapter_name=name)
        self.vlm.model.eval()
        self.experts[name] = str(adapter_path)
        self._adapter_digests[name] = folder_digest(adapter_path)

    def state_key(self, route: str | None) -> str:
        """What answers the items of `route` (None: the base model), by content: the digest of
        the base checkpoint's files, with that of the route's adapter files as they were loaded."""
        if self.base_model_path is None:
            raise ValueError("a mixture over weights in memory has no files to key answers by: do not cache its answers")
        if self._base_digest is None:  # the first time it is asked: only the answer cache needs it
            self._base_digest = folder_digest(self.base_model_path)
        if route is None:
            return self._base_digest
        return hashlib.sha256(f"{self._base_digest} {self._adapter_digests[route]}".encode()).hexdigest()

    def generate(self, images: Sequence, questions: Sequence[str], routes: Sequence[str | None],
                 mode: str = "grouped", **options) -> list[str]:
        """Answer each item with its route's expert, or with the base model where the route is None.
        grouped: one batched pass per route; mixed: one pass, the adapter chosen per row."""
        unknown = {r for r in routes if r is not None and r not in self.experts}
        if unknown:
            raise KeyError(f"no expert loaded for route(s) {sorted(unknown)}")
        if not self.experts:
            return self.vlm.generate(images, questions, **options)
        if mode == "mixed":
            names = [BASE if r is None else r for r in routes]
            return self.vlm.generate(images, questions, adapter_names=names, **options)
        if mode != "grouped":
            raise ValueError(f"mode {mode!r}: grouped or mixed")
        answers: list[str] = [""] * len(questions)
        for route in dict.fromkeys(routes):
            idx = [i for i, r in enumerate(routes) if r == route]
            sub_images, sub_questions = [images[i] for i in idx], [questions[i] for i in idx]
            if route is None:
                with self.vlm.model.disable_adapter():
                    out = self.vlm.generate(sub_images, sub_questions, **options)
            else:
                self.vlm.model.set_adapter(route)
                out = self.vlm.generate(sub_images, sub_questions, **options)
            for i, a in zip(idx, out):
                answers[i] = a
        return answers
