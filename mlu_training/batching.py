"""Which rows train together: the seeded stream of batches shared by the base model's fine-tuning
(`models/sft.py`) and every adapter's training (`adapters.py`).

Grouped by length, a batch holds rows of similar token length, so it is mostly real tokens, not
padding (`VisionLanguageModel.training_batch` pads each batch to its own longest row only): on the
mini profile, fine-tuning batches were 50 % real tokens and unlearning batches 60 %, grouped ones
93 %. The groups stay random: each epoch shuffles the rows, sorts only windows of GROUP_BATCHES
batches by length and shuffles the batches it cut, so long and short batches alternate through
training and the same seed gives the same batches (and the same model).

Grouping is off by default in both recipes (SFTConfig, AdapterTraining: `length_grouped`): on mini
it made the base model's fine-tuning 2.2x faster per step but spoiled it (refusals and each class's
questions have lengths of their own, so grouped batches are of one kind); see models/sft.py.
"""

from __future__ import annotations

from typing import Sequence

import torch

GROUP_BATCHES = 8  # batches per window sorted by length: more is less padding, less random batches (mini: 4 -> 81 %, 8 -> 87 %, 16 -> 92 % real tokens in fine-tuning)


def token_lengths(tokenizer, questions: Sequence[str], answers: Sequence[str]) -> list[int]:
    """What rows are grouped by: the tokens of question and answer (the image's tokens and the chat
    template are the same for every row of one model, at the images' fixed size)."""
    texts = [f"{q} {a}" for q, a in zip(questions, answers)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class BatchStream:
    """An endless, seeded stream of batches of row indices, epoch after epoch.

    `lengths` given: grouped by length, every row once per epoch (the last batch of an epoch may be
    smaller: no forget row is left out of an epoch). `lengths` None: the plain stream, a permutation
    per epoch cut into full batches that run across epochs (the recipe before grouping)."""

    def __init__(self, n_rows: int, batch_size: int, generator: torch.Generator,
                 lengths: Sequence[int] | None = None, group_batches: int = GROUP_BATCHES):
        if n_rows < 1 or batch_size < 1:
            raise ValueError(f"a batch stream needs rows and a batch size (got {n_rows} rows, batch {batch_size})")
        if lengths is not None and len(lengths) != n_rows:
            raise ValueError(f"{len(lengths)} lengths for {n_rows} rows")
        self.n_rows, self.batch_size, self.generator = n_rows, batch_size, generator
        self.lengths, self.group_batches = lengths, group_batches
        self._rows: list[int] = []  # plain stream: rows not yet drawn
        self._batches: list[list[int]] = []  # grouped stream: this epoch's batches not yet drawn

    def __iter__(self):
        return self

    def __next__(self) -> list[int]:
        if self.lengths is None:
            if len(self._rows) < self.batch_size:
                self._rows += torch.randperm(self.n_rows, generator=self.generator).tolist()
            batch, self._rows = self._rows[: self.batch_size], self._rows[self.batch_size:]
            return batch
        if not self._batches:
            self._batches = self._grouped_epoch()
        return self._batches.pop()

    def _grouped_epoch(self) -> list[list[int]]:
        rows = torch.randperm(self.n_rows, generator=self.generator).tolist()
        window = self.batch_size * self.group_batches
        batches = []
        for start in range(0, len(rows), window):
            # sorted() is stable: rows of equal length keep their shuffled order
            by_length = sorted(rows[start: start + window], key=lambda r: self.lengths[r])
            batches += [by_length[i: i + self.batch_size] for i in range(0, len(by_length), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=self.generator).tolist()]
