"""Judges (DESIGN.md contract): LocalJudge (rules, offline, default) and OpenAIJudge (any
OpenAI-compatible endpoint, the paper's rubric). Scores are 0, 1, 2; unscorable is missing."""

from .base import FORGET, MAX_SCORE, RETAIN, Judgement, JudgeItem, JudgementMissing
from .local import LocalJudge

__all__ = ["FORGET", "RETAIN", "MAX_SCORE", "Judgement", "JudgeItem", "JudgementMissing", "LocalJudge", "OpenAIJudge"]


def __getattr__(name):  # the openai client is imported only by those who use it
    if name == "OpenAIJudge":
        from .openai_judge import OpenAIJudge

        return OpenAIJudge
    raise AttributeError(name)
