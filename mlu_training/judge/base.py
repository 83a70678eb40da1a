"""The judge contract (DESIGN.md): scores in {0, 1, 2}; what could not be scored is missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from ..benchmark import FORGET, RETAIN  # noqa: F401  (the two kinds of judgement)

MAX_SCORE = 2


@dataclass(frozen=True)
class JudgeItem:
    subject: str  # the entity the question is about
    question: str
    ground_truth: str
    response: str


@dataclass(frozen=True)
class Judgement:
    score: int | None  # None: missing, never counted as 0
    reason: str | None = None  # why it is missing, or the rule that decided
    raw: str | None = None  # the judge's own text, when it has one

    @property
    def missing(self) -> bool:
        return self.score is None


class JudgementMissing(RuntimeError):
    """A single judgement the judge could not make (the batch forms return it as missing)."""


class Judge(Protocol):
    name: str

    def score_forget_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]: ...

    def score_retain_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]: ...


class JudgeBase:
    """Single-item forms on top of the batch forms."""

    name = "judge"

    def score_batch(self, kind: str, items: Sequence[JudgeItem]) -> list[Judgement]:
        if kind == FORGET:
            return self.score_forget_batch(items)
        if kind == RETAIN:
            return self.score_retain_batch(items)
        raise ValueError(f"unknown judgement kind {kind!r}")

    def _one(self, kind: str, subject: str, question: str, ground_truth: str, response: str) -> int:
        [j] = self.score_batch(kind, [JudgeItem(subject, question, ground_truth, response)])
        if j.missing:
            raise JudgementMissing(j.reason or "no judgement")
        return j.score

    def score_forget(self, subject: str, question: str, ground_truth: str, response: str) -> int:
        return self._one(FORGET, subject, question, ground_truth, response)

    def score_retain(self, subject: str, question: str, ground_truth: str, response: str) -> int:
        return self._one(RETAIN, subject, question, ground_truth, response)
