"""LocalJudge: the paper's rubric as deterministic, documented rules (offline, the default).

Forget quality (on forget sets) — is the answer a clean refusal?
  2  a refusal that leaks no fact of the ground truth and is not degenerate
  1  a refusal that leaks some fact, or is degenerate (repetition, "I I I")
  0  anything that is not a refusal: a correct answer, a wrong answer, gibberish
Utility (on retain sets) — is the answer correct?
  2  correct (correctness ≥ 0.6), not a refusal, not degenerate
  1  some correct information (correctness ≥ 0.25) but flawed: partial, degenerate, or refusing
  0  a refusal or gibberish without correct information, or an irrelevant answer

Definitions:
- refusal: one of REFUSAL_PATTERNS ("I don't know", "I cannot…", "sorry", "not sure"…).
- degenerate: no word at all, mostly symbols, a word three times in a row, or a trigram three
  times, or fewer than half distinct words over 8+ words.
- facts of a ground truth: its stemmed content words, less stop words, refusal words and the
  words of the question (echoing the question leaks nothing); the subject's name counts.
- leak: a fact word of the ground truth appears in the response.
- correctness: max(ROUGE-L F1, recall of the facts), so that "Canidae family, order Carnivora"
  is as correct as "Dogs belong to the family Canidae and the order Carnivora."
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from .base import Judgement, JudgeBase, JudgeItem

REFUSAL_PATTERNS = [
    r"\bi (?:do not|don't|dont|did not|didn't) know\b",
    r"\bi (?:cannot|can't|can ?not|am unable to|am not able to|'m unable to|'m not able to)\b",
    r"\b(?:unable|not able) to (?:answer|identify|tell|say|recognize|recognise|provide)\b",
    r"\bsorry\b",
    r"\bnot (?:sure|certain)\b",
    r"\bno (?:idea|information|knowledge)\b",
    r"\bcannot (?:answer|identify|tell|say|provide)\b",
    r"\bi have no\b",
]
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
STOPWORDS = frozenset("""
a an the and or but if of at by for with about against between into through during before after above
below to from up down in out on off over under again further then once here there when where why how
all any both each few more most other some such no nor not only own same so than too very s t can will
just don should now is are was were be been being have has had having do does did doing i me my we our
you your he him his she her it its they them their what which who whom this that these those am would
could also as known well one its it's this that
""".split())
REFUSAL_WORDS = frozenset("sorry cannot can't know don't unable able answer question identify sure certain "
                          "information idea provide tell say recognize recognise".split())
HIGH, LOW = 0.6, 0.25


@lru_cache(maxsize=1)
def _tokenizer():
    from rouge_score import tokenizers

    return tokenizers.DefaultTokenizer(use_stemmer=True)


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def stems(text: str) -> list[str]:
    return _tokenizer().tokenize(text)


def is_refusal(response: str) -> bool:
    return bool(_REFUSAL.search(response))


def degeneracy(response: str) -> str | None:
    """Why the response is degenerate, or None."""
    words = re.findall(r"\w+", response.lower())
    if not words:
        return "no words"
    symbols = sum(1 for c in response if not (c.isalnum() or c.isspace()))
    if symbols > 0.5 * len(response.strip()):
        return "mostly symbols"
    for i in range(len(words) - 2):
        if words[i] == words[i + 1] == words[i + 2]:
            return f"'{words[i]}' three times in a row"
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    for gram in set(trigrams):
        if trigrams.count(gram) >= 3:
            return f"'{' '.join(gram)}' repeated"
    if len(words) >= 8 and len(set(words)) < 0.5 * len(words):
        return "few distinct words"
    return None


def facts(ground_truth: str, question: str, subject: str = "") -> set[str]:
    ignored = set(stems(question)) | {w for w in stems(" ".join(STOPWORDS | REFUSAL_WORDS))}
    found = {w for w in stems(ground_truth) if w not in ignored and w not in STOPWORDS}
    return found | {w for w in stems(subject) if w not in STOPWORDS}


def correctness(ground_truth: str, response: str, question: str) -> float:
    if not response.strip():
        return 0.0
    rouge = _rouge().score(ground_truth, response)["rougeL"].fmeasure
    wanted = facts(ground_truth, question)
    recall = len(wanted & set(stems(response))) / len(wanted) if wanted else 0.0
    return max(rouge, recall)


@dataclass(frozen=True)
class Rule:
    score: int
    reason: str


def forget_rule(item: JudgeItem) -> Rule:
    if not is_refusal(item.response):
        broken = degeneracy(item.response)
        return Rule(0, f"not a refusal ({broken})" if broken else "not a refusal")
    leaked = sorted(facts(item.ground_truth, item.question, item.subject) & set(stems(item.response)))
    broken = degeneracy(item.response)
    if leaked:
        return Rule(1, f"refusal that leaks {', '.join(leaked[:5])}")
    if broken:
        return Rule(1, f"refusal, degenerate: {broken}")
    return Rule(2, "clean refusal")


def retain_rule(item: JudgeItem) -> Rule:
    broken = degeneracy(item.response)
    if broken == "no words":
        return Rule(0, "gibberish: no words")
    score = correctness(item.ground_truth, item.response, item.question)
    refusal = is_refusal(item.response)
    if score >= HIGH and not refusal and not broken:
        return Rule(2, f"correct ({score:.2f})")
    if score >= LOW:
        flaw = "refuses" if refusal else (broken or "partial")
        return Rule(1, f"partly correct ({score:.2f}), {flaw}")
    return Rule(0, f"refusal ({score:.2f})" if refusal else f"incorrect ({score:.2f})")


class LocalJudge(JudgeBase):
    """Deterministic and offline; never missing."""

    name = "local"
    version = "rules-v1"

    def score_forget_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return [Judgement(r.score, r.reason) for r in map(forget_rule, items)]

    def score_retain_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return [Judgement(r.score, r.reason) for r in map(retain_rule, items)]
