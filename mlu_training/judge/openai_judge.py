"""OpenAIJudge: the paper's rubric on any OpenAI-compatible endpoint (OPENAI_BASE_URL,
MLU_JUDGE_MODEL), many calls at once within a bound, retried on faults, cached on disk.

A rerun of the same items makes zero calls; an answer that cannot be had or parsed is missing,
with its reason, and is asked again next time.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from ..chat_api import ApiUnavailable, ChatClient
from .base import FORGET, RETAIN, Judgement, JudgeBase, JudgeItem
from .cache import ApiCache, cache_key
from .prompts import PROMPT_VERSION, parse_rating, render


class OpenAIJudge(JudgeBase):
    name = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 cache_url: str | None = None, concurrency: int = 8, **client_options):
        self.model = model
        self.client = ChatClient(model=model, base_url=base_url, api_key=api_key, **client_options)
        self.cache = ApiCache(cache_url) if cache_url else None
        self.concurrency = concurrency
        self.calls = 0  # judgements asked of the endpoint (not served from the cache)
        self._calls_lock = threading.Lock()

    def _key(self, kind: str, item: JudgeItem) -> str:
        return cache_key("judge", self.model, PROMPT_VERSION, kind, item.subject, item.question,
                         item.ground_truth, item.response)

    def _ask(self, kind: str, item: JudgeItem) -> Judgement:
        with self._calls_lock:
            self.calls += 1
        try:
            text = self.client.complete([{"role": "user", "content": render(kind, item.subject, item.question,
                                                                           item.ground_truth, item.response)}])
        except ApiUnavailable as e:
            return Judgement(None, str(e))
        score = parse_rating(text)
        if score is None:
            return Judgement(None, f"unparseable rating in {text[:160]!r}", text)
        return Judgement(score, None, text)

    def _score(self, kind: str, items: Sequence[JudgeItem]) -> list[Judgement]:
        keys = [self._key(kind, it) for it in items]
        cached = self.cache.get_many(sorted(set(keys))) if self.cache else {}
        done: dict[str, Judgement] = {k: Judgement(**json.loads(v)) for k, v in cached.items()}
        todo = {k: it for k, it in zip(keys, items) if k not in done}  # identical items asked once
        if todo:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                for key, judgement in zip(todo, pool.map(lambda it: self._ask(kind, it), todo.values())):
                    done[key] = judgement
                    if self.cache and not judgement.missing:
                        self.cache.put(f"judge/{kind}", key, json.dumps(judgement.__dict__))
        return [done[k] for k in keys]

    def score_forget_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return self._score(FORGET, items)

    def score_retain_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return self._score(RETAIN, items)
