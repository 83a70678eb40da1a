"""Answers generated once inside a LUMoE sequence. After each request every item is evaluated
again, but most items go to the same expert (or the base model) as at the step before: their
answer cannot change, so it is looked up instead of generated again.

An answer is keyed by everything that decides it: the model state that produced it (the base
checkpoint's files and the route's adapter files, by content), the route, the item (its image and
question) and the decoding settings. A retrained expert or another base model has other bytes,
hence another key: it never reuses an answer it did not give."""

from __future__ import annotations

import json
from typing import Hashable, Sequence


class AnswerCache:
    """Answers by (model state, route, item, decoding settings). `generated` counts the items
    actually decoded, `reused` those answered from the cache. `enabled=False` stores nothing and
    only counts (the uncached reference, for comparisons)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.answers: dict[tuple, str] = {}
        self.generated = 0
        self.reused = 0

    def generate(self, mixture, images: Sequence, questions: Sequence[str], routes: Sequence[str | None],
                 items: Sequence[Hashable], mode: str = "grouped", **options) -> list[str]:
        """mixture.generate(images, questions, routes, mode, **options), decoding only the items
        whose key has no answer yet (each once, however often it appears). `items` names each
        item's inputs (its image and question)."""
        if not self.enabled:
            self.generated += len(questions)
            return mixture.generate(images, questions, routes, mode=mode, **options)
        settings = json.dumps({"mode": mode, **options}, sort_keys=True)
        keys = [(mixture.state_key(r), r, item, settings) for r, item in zip(routes, items)]
        todo, seen = [], set()  # the first item of each key not answered yet
        for i, key in enumerate(keys):
            if key not in self.answers and key not in seen:
                seen.add(key)
                todo.append(i)
        if todo:
            answers = mixture.generate([images[i] for i in todo], [questions[i] for i in todo],
                                       [routes[i] for i in todo], mode=mode, **options)
            self.answers.update((keys[i], a) for i, a in zip(todo, answers))
        self.generated += len(todo)
        self.reused += len(keys) - len(todo)
        return [self.answers[k] for k in keys]
