"""What every unlearning method shares: the batches it gets, answer-only log-probabilities, and
the frozen reference model (the model before this step: the backbone with the adapter off), with
what it says about each training row kept for the rest of the adapter's training."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F

from ..models.vlm import IGNORE_INDEX


class ReferenceCache:
    """What the frozen reference said about each training row, kept for one adapter's training.

    The reference does not change while an adapter trains (it is the model with this adapter off,
    or the frozen original), so a row's reference values are computed the first step the row is
    drawn and reused afterwards, instead of one or two more forward passes every step. Keyed by
    (what, row): `what` names the batch and the value ("forget sequence", "retain distribution").
    KL's values are a distribution over the vocabulary per retain answer token: with a large
    vocabulary (LLaVA's 32k: 128 KB a token in float32) and many retain rows that adds up, and
    train_adapter(cache_reference=False) trades it back for the passes."""

    def __init__(self):
        self._values: dict[tuple[str, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self._values)

    def rows(self, what: str, rows: Sequence[int], compute: Callable[[], Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        """The values of `rows`; `compute()` (one tensor per row, the batch's) runs when any is missing."""
        keys = [(what, int(r)) for r in rows]
        if not all(k in self._values for k in keys):
            self._values.update(zip(keys, compute()))
        return [self._values[k] for k in keys]


@dataclass
class StepBatches:
    """The tensors of one training step. Every batch carries pixel_values: images always."""

    forget: dict  # forget prompts with their true answers
    retain: dict | None = None  # retain prompts with their true answers (methods with uses_retain)
    refusal: dict | None = None  # forget prompts with the refusal answer (methods with uses_refusal)
    forget_rows: Sequence[int] | None = None  # the task's forget rows in `forget` (and `refusal`: the same prompts)
    retain_rows: Sequence[int] | None = None  # the task's retain rows in `retain`
    reference_cache: ReferenceCache | None = None  # None (or rows unknown): the reference runs every step


@dataclass
class TokenLogProbs:
    token: torch.Tensor  # [batch, length] log p of each label token, 0 where masked
    mask: torch.Tensor  # [batch, length] 1 on answer tokens
    logits: torch.Tensor  # [batch, length, vocab], aligned with token

    @property
    def sequence(self) -> torch.Tensor:
        """Σ log p over each answer."""
        return self.token.sum(-1)

    @property
    def mean_nll(self) -> torch.Tensor:
        """Cross-entropy averaged over every answer token of the batch."""
        return -self.token.sum() / self.mask.sum().clamp(min=1)

    def answer_distributions(self) -> list[torch.Tensor]:
        """Per row, log p over the vocabulary at each answer token: [answer tokens, vocab]. Row by
        row, so that rows padded differently in another batch line up (masked_kl)."""
        logp = torch.log_softmax(self.logits, -1)
        return [row[mask.bool()] for row, mask in zip(logp, self.mask)]


def answer_logprobs(model, batch: dict) -> TokenLogProbs:
    """log p(label) of the answer tokens only (prompt, image and padding tokens are masked), one
    row per example: a packed batch (`example_spans`, VisionLanguageModel.packed_training_batch)
    is cut back into its examples, so every method sees what a padded batch gives it."""
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "example_spans")}
    logits = model(**inputs).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    if "example_spans" in batch:
        logits, labels = _per_example(logits, labels, batch["example_spans"])
    mask = (labels != IGNORE_INDEX).to(logits.dtype)
    token = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    return TokenLogProbs(token, mask, logits)


def _per_example(logits: torch.Tensor, labels: torch.Tensor, spans: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted logits and labels of packed rows, one row per example (padded on the right): an
    example at [start, end) of its row predicts its tokens start+1 … end-1 at start … end-2."""
    from torch.nn.utils.rnn import pad_sequence

    cut = [(int(r), int(s), int(e) - 1) for r, s, e in spans.tolist()]
    return (pad_sequence([logits[r, s:e] for r, s, e in cut], batch_first=True),
            pad_sequence([labels[r, s:e] for r, s, e in cut], batch_first=True, padding_value=IGNORE_INDEX))


def masked_kl(reference: Sequence[torch.Tensor], current: TokenLogProbs) -> torch.Tensor:
    """KL(reference ‖ current) per answer token, averaged over answer tokens only; `reference` is
    the reference's answer_distributions() of the same rows, in the same order."""
    cur_logp = torch.log_softmax(current.logits, -1)[current.mask.bool()]  # row by row, as answer_distributions
    ref_logp = torch.cat(list(reference))
    if ref_logp.shape != cur_logp.shape:
        raise ValueError(f"reference and current answers differ: {tuple(ref_logp.shape)} vs {tuple(cur_logp.shape)}")
    per_token = F.kl_div(cur_logp, ref_logp, log_target=True, reduction="none").sum(-1)
    return per_token.sum() / max(len(per_token), 1)


@dataclass(frozen=True)
class NoArgs:
    """A method without hyperparameters of its own (steps, rates and LoRA are AdapterTraining's)."""


class UnlearningMethod(ABC):
    """One method = one subclass that says what data it needs, which hyperparameters it takes (its
    `Args` dataclass, with defaults) and how its loss is computed."""

    name: ClassVar[str]
    description: ClassVar[str]
    uses_retain: ClassVar[bool] = False
    uses_refusal: ClassVar[bool] = False
    Args: ClassVar[type] = NoArgs
    # The method's unlearning budget: the language-model LoRA's learning rate (AdapterTraining's
    # steps and batch are shared), used where AdapterTraining.lr is None. Each unlearning method
    # sets its own: the smallest rate of the ladder in scripts/choose_budgets.py whose first request
    # leaves at most half of that task's forgotten items answered (the same for every task and
    # order; README: "The budget"). This default, the first wave's shared rate, is fine-tuning's.
    lr: ClassVar[float] = 3e-4

    def __init__(self, args: Any = None, original=None):
        self.args = args if args is not None else self.Args()
        self.original = original  # the frozen base model, when the reference is "original"

    @contextmanager
    def reference(self, model):
        """The frozen reference of KL, NPO and PO. By default ("previous") the same weights with
        this step's LoRA adapter switched off, i.e. the model as it was before this step (earlier
        steps are merged into the backbone): no copy is made. With reference="original", the base
        model as it was before the sequence began: a second, frozen copy in memory."""
        if self.original is not None:
            with torch.no_grad():
                yield self.original
        else:
            with torch.no_grad(), model.disable_adapter():
                yield model

    def frozen_reference(self, model, batches: StepBatches, what: str, rows: Sequence[int] | None,
                         compute: Callable[[Any], Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        """The reference's values for each of `rows`: `compute(reference model)` gives one tensor per
        row of the batch; taken from the step's ReferenceCache when it has every row."""
        def run() -> list[torch.Tensor]:
            with self.reference(model) as ref:
                return [value.detach() for value in compute(ref)]

        if batches.reference_cache is None or rows is None:
            return run()
        return batches.reference_cache.rows(what, rows, run)

    @classmethod
    def make_args(cls, overrides: dict | None = None):
        """The method's arguments: its defaults, with `overrides` (a name it does not take is an error)."""
        overrides = dict(overrides or {})
        known = {f.name for f in fields(cls.Args)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"method {cls.name!r} takes no argument {', '.join(map(repr, unknown))}; "
                             f"its arguments: {', '.join(sorted(known)) or 'none'}")
        return cls.Args(**overrides)

    @abstractmethod
    def loss(self, model, batches: StepBatches) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise and its parts (for the logs)."""
