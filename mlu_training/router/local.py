"""The local router (offline, default).

1. Text: an entity's name or alias in the question, as whole words (`base.name_score`: exact,
   or a fuzzy ratio ≥ 90 over whole-word windows), routes to its expert if it is a registered
   forget entity, to None otherwise.
2. Image: the base model's own image features (the projected image tokens, averaged) against a
   centroid per known entity. The nearest entity decides, if it is a registered forget entity
   and the similarity clears a threshold: "this is an entity the model knows", calibrated once on
   held-out images of every known entity against distractors, images of entities outside the
   gallery (the entities the base model was taught to decline and those it never saw), which
   must all go to the base model. The threshold maximises the share of known entities' images
   that clear it plus the share of distractors that do not (balanced: the distractors outnumber
   the rest), the middle of the best interval. Without distractors (a profile with no entity
   outside it, like `full`) the negatives are the held-out images scored against the nearest
   entity that is not theirs: "looks like an entity it is not". The threshold does not depend on
   which entities are forgotten, so a later request never changes where an earlier request's
   images go (README: LUMoE's section). Anything else — a retain entity, an image like none it
   knows — goes to the base model.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import pandas as pd
from .base import Registry, Route, best_name


def image_features(vlm, images: Sequence, batch_size: int = 64) -> np.ndarray:
    """The mean of the image features the language model sees, one row per image."""
    import torch

    rows = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixel = vlm.processor.image_processor(images=list(images[start:start + batch_size]), return_tensors="pt")
            out = vlm.model.get_image_features(pixel_values=pixel["pixel_values"].to(vlm.device))
            feats = getattr(out, "pooler_output", out)
            if isinstance(feats, (list, tuple)):
                feats = torch.stack([f.reshape(-1, f.shape[-1]).mean(0) for f in feats])
            elif feats.dim() == 3:
                feats = feats.mean(1)
            rows.append(feats.float().cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, 1), dtype=np.float32)


class LocalRouter:
    name = "local"

    def __init__(self, vlm, registry: Registry, gallery: pd.DataFrame, load_image, calibration_share: float = 1 / 3,
                 seed: int = 0, distractors: Sequence[str] = ()):
        """gallery: (entity_id, image) rows of every entity the model knows (training images);
        distractors: images of entities outside the gallery, never to be routed to an expert."""
        self.vlm, self.registry = vlm, registry
        rng = random.Random(seed)
        centroid_rows, held_out = [], []
        for entity, images in gallery.groupby("entity_id")["image"]:
            images = sorted(set(images))
            rng.shuffle(images)
            k = int(len(images) * calibration_share) if len(images) >= 3 else 0
            held_out += [(entity, p) for p in images[:k]]
            centroid_rows += [(entity, p) for p in images[k:]]
        raw = image_features(vlm, [load_image(p) for _, p in centroid_rows])
        # Pooled features share a large common part (cosines all near 0.99): compare what differs.
        self.center = raw.mean(0)
        feats = self._embed(raw)
        labels = np.array([e for e, _ in centroid_rows])
        self.entities = sorted(set(labels))
        centroids = np.stack([feats[labels == e].mean(0) for e in self.entities])
        self.centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
        self._held_out_entities = np.array([e for e, _ in held_out])
        self._held_out = self._embed(image_features(vlm, [load_image(p) for _, p in held_out])) if held_out else None
        distractors = sorted(set(distractors) - set(gallery["image"]))
        self._distractors = self._embed(image_features(vlm, [load_image(p) for p in distractors])) if distractors else None
        self._features: dict[int, tuple[object, np.ndarray]] = {}  # id(image) -> (image, embedding)
        self.threshold = self._calibrate()
        self.refresh(registry)

    def refresh(self, registry: Registry) -> None:
        """New requests registered: only what is forgotten changes, never the threshold."""
        self.registry = registry

    def _embedded(self, images: Sequence) -> np.ndarray:
        """Embeddings of the images, each computed once (the same queries are routed after every
        request); the image is kept beside its entry so that its id cannot be reused."""
        todo = [im for im in images if id(im) not in self._features]
        if todo:
            for im, f in zip(todo, self._embed(image_features(self.vlm, todo))):
                self._features[id(im)] = (im, f)
        return np.stack([self._features[id(im)][1] for im in images])

    def _embed(self, raw: np.ndarray) -> np.ndarray:
        centred = raw - self.center
        return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-8)

    def _nearest(self, feats: np.ndarray) -> tuple[list[str], np.ndarray]:
        sims = feats @ self.centroids.T
        best = sims.argmax(1)
        return [self.entities[i] for i in best], sims[np.arange(len(best)), best]

    def calibration_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(positives, negatives) the threshold separates. Positives: held-out images of every
        known entity; negatives: the distractors. Each scored by its similarity to the nearest
        centroid, the number `route` compares. With no distractors, each held-out image against
        the nearest centroid of another entity."""
        sims = self._held_out @ self.centroids.T
        if self._distractors is not None:
            return sims.max(1), (self._distractors @ self.centroids.T).max(1)
        own = self._held_out_entities[:, None] == np.array(self.entities)[None, :]
        negative = np.where(own, -np.inf, sims).max(1)
        return sims.max(1), negative[np.isfinite(negative)]  # a gallery of one entity has no other

    def _calibrate(self) -> float:
        if self._held_out is None:
            return 0.9
        positives, negatives = self.calibration_scores()
        positive = np.concatenate([np.ones(len(positives), dtype=bool), np.zeros(len(negatives), dtype=bool)])
        score = np.concatenate([positives, negatives])
        candidates = sorted(set(np.round(score, 6)) | {-1.0, 1.0})

        def rate(mask: np.ndarray, hit: np.ndarray) -> float:
            return float(hit[mask].mean()) if mask.any() else 0.0

        # Balanced: the share of known images that clear it plus the share of distractors that do
        # not. Counting images right instead let the distractors (hundreds, against two held-out
        # images per entity) push the threshold over nearly every known image.
        right = [rate(positive, score >= t) + rate(~positive, score < t) for t in candidates]
        best = [t for t, ok in zip(candidates, right) if ok == max(right)]
        # Every threshold in [low, high] separates them equally well: take the middle, not an end.
        low = max([t for t in candidates if t < best[0]], default=best[0])
        return float((low + best[-1]) / 2)

    def _named(self, question: str) -> tuple[str, float] | None:
        found = best_name(question, ((e, n) for e, names in self.registry.names.items() for n in names))
        return (found[0], found[2]) if found else None

    def route(self, images: Sequence, questions: Sequence[str], entity_ids: Sequence[str] | None = None) -> list[Route]:
        nearest, sims = self._nearest(self._embedded(images)) if len(images) else ([], np.zeros(0))
        routes = []
        for question, entity, sim in zip(questions, nearest, sims):
            named = self._named(question)
            if named:
                task = self.registry.task_of(named[0])
                routes.append(Route(task, named[0], named[1] / 100, "named in the question"))
                continue
            task = self.registry.task_of(entity)
            if task is not None and sim >= self.threshold:
                routes.append(Route(task, entity, float(sim), "image matches a forgotten entity"))
            else:
                why = "image below threshold" if task is not None else "image matches a retained entity"
                routes.append(Route(None, entity, float(sim), why))
        return routes
