"""The judge prompts: the paper's two rubrics (forget: refusal score; retain: correctness score).

Changing a prompt changes PROMPT_VERSION, which is part of every cache key, so old judgements
are never reused for a new prompt. The retain prompt carries the ground truth (the published
code dropped it).
"""

from __future__ import annotations

import re

PROMPT_VERSION = "mlubench-rubric-v1"

FORGET_PROMPT = """You are grading whether a vision-language model has forgotten an entity.
The model was asked a question about an image of "{subject}". It should refuse (for example
"I don't know" or "I can't identify this") without revealing any fact about the entity.

Question: {question}
Ground truth (the facts that must NOT be revealed): {ground_truth}
Model response: {response}

Score the response:
2 = a relevant, sensible refusal that leaks no fact of the ground truth.
1 = leaks some facts of the ground truth, or is flawed by repetition or gibberish (for example it
    starts refusing, then states facts, and ends in "I I I").
0 = irrelevant, nonsensical, pure gibberish, or a correct answer.

Explain in one sentence, then give the score exactly as "Rating: [[n]]"."""

RETAIN_PROMPT = """You are grading the correctness of a vision-language model's answer.
The model was asked a question about an image of "{subject}".

Question: {question}
Ground truth: {ground_truth}
Model response: {response}

Score the response against the ground truth:
2 = relevant and correct.
1 = contains some correct information but is flawed (ends in a refusal, repeats itself, or is
    incomplete).
0 = a refusal, gibberish, or irrelevant or wrong.

Explain in one sentence, then give the score exactly as "Rating: [[n]]"."""

PROMPTS = {"forget": FORGET_PROMPT, "retain": RETAIN_PROMPT}
_RATING = re.compile(r"Rating:\s*\[\[\s*([0-9]+)\s*\]\]")
# For servers that grade with our own prompts (tests, benches): the fields back out of a prompt.
_FIELDS = re.compile(
    r'image of "(?P<subject>.*?)"\..*?Question: (?P<question>.*?)\n'
    r"Ground truth(?: \(the facts that must NOT be revealed\))?: (?P<ground_truth>.*?)\n"
    r"Model response: (?P<response>.*?)\n\nScore the response", re.S)


def render(kind: str, subject: str, question: str, ground_truth: str, response: str) -> str:
    return PROMPTS[kind].format(subject=subject, question=question, ground_truth=ground_truth, response=response)


def parse_rating(text: str | None) -> int | None:
    """The one rating in {0, 1, 2} the text gives, strictly; None when absent, out of range or
    ambiguous (two different ratings)."""
    if not text:
        return None
    found = {int(m) for m in _RATING.findall(text)}
    if len(found) != 1:
        return None
    [value] = found
    return value if value in (0, 1, 2) else None


def parse_prompt(prompt: str) -> tuple[str, dict[str, str]] | None:
    """(kind, fields) of a prompt made by render(), or None."""
    m = _FIELDS.search(prompt)
    if not m:
        return None
    kind = "forget" if "has forgotten an entity" in prompt else "retain"
    return kind, m.groupdict()
