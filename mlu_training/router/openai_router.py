"""The API router: the paper's two steps on an OpenAI-compatible vision endpoint (MLU_ROUTER_MODEL).
Step 1: which of the nine classes the picture shows; step 2: which entity of that class (from the
names the router knows), or "None". The image goes as a data URL. Same rules as the API judge:
retries on 429/5xx/timeouts, a persistent cache, and an answer it cannot get is *missing*: the
query goes to the base model (utility first) and the miss is counted, never hidden."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from ..chat_api import ApiUnavailable, ChatClient
from ..data.records import CLASSES
from ..judge.cache import ApiCache, cache_key
from .base import Registry, Route, best_name

PROMPT_VERSION = "router-two-step-v1"
CLASS_PROMPT = ("Which one of these categories does the main subject of the image belong to: {classes}? "
                "Question asked about the image: {question}\nAnswer with the category only, or None if unsure.")
ENTITY_PROMPT = ("The image shows something from the category {cls}. Which one of these is it: {names}? "
                 "Question asked about the image: {question}\nAnswer with the name only, or None if it is none of them.")


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _message(text: str, image) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": data_url(image)}}]}]


def _pick(answer: str, options: Sequence[str]) -> str | None:
    """The option the model named as whole words (tolerant of case, punctuation and a typo), or
    None: "Catherine" does not name "Cat" (a weighted partial ratio took it for it)."""
    text = answer.strip().strip(".").strip()
    if not text or text.casefold().startswith("none"):
        return None
    hit = best_name(text, ((o, o) for o in options), min_length=1)
    return hit[0] if hit else None


class OpenAIRouter:
    name = "openai"

    def __init__(self, registry: Registry, entity_classes: dict[str, str], model: str, base_url: str | None = None,
                 api_key: str | None = None, cache_url: str | None = None, concurrency: int = 8, **client_options):
        """entity_classes: entity id -> class, for every entity the router may name."""
        self.registry, self.entity_classes = registry, entity_classes
        self.model = model
        self.client = ChatClient(model=model, base_url=base_url, api_key=api_key, max_tokens=32, **client_options)
        self.cache = ApiCache(cache_url) if cache_url else None
        self.concurrency = concurrency
        self.missing = 0

    def _ask(self, step: str, text: str, image, image_key: str) -> str:
        key = cache_key("router", self.model, PROMPT_VERSION, step, text, image_key)
        if self.cache:
            hit = self.cache.get_many([key]).get(key)
            if hit is not None:
                return json.loads(hit)
        answer = self.client.complete(_message(text, image))
        if self.cache:
            self.cache.put("router", key, json.dumps(answer))
        return answer

    def _route_one(self, image, question: str) -> Route:
        image_key = cache_key(data_url(image))
        try:
            cls = _pick(self._ask("class", CLASS_PROMPT.format(classes=", ".join(CLASSES), question=question),
                                  image, image_key), CLASSES)
            if cls is None:
                return Route(None, None, 0.0, "class: None")
            candidates = {n: e for e, c in self.entity_classes.items() if c == cls for n in self.registry.names.get(e, [e])}
            if not candidates:
                return Route(None, None, 0.0, f"no known entity of class {cls}")
            answer = self._ask("entity", ENTITY_PROMPT.format(cls=cls, names=", ".join(sorted(candidates)), question=question),
                               image, image_key)
        except ApiUnavailable as why:
            self.missing += 1
            return Route(None, None, 0.0, f"missing: {why}")
        name = _pick(answer, sorted(candidates))
        if name is None:
            return Route(None, None, 0.0, "entity: None")
        entity = candidates[name]
        task = self.registry.task_of(entity)
        return Route(task, entity, 1.0, "named by the model" if task else "named a retained entity")

    def refresh(self, registry: Registry) -> None:
        self.registry = registry

    def route(self, images: Sequence, questions: Sequence[str], entity_ids: Sequence[str] | None = None) -> list[Route]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._route_one, images, questions))
