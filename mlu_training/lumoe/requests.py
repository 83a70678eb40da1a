"""Unlearning requests: a small JSON file naming entities to forget, e.g.
{"entities": ["Taylor Swift", "Big Ben"]}, with optional extra question-answer pairs to forget
too: "qa": [{"question": …, "answer": …, "image": "downloaded_images/<Class>/<Entity>/<file>"}].
Its file name (without .json) is the request's id. A request naming an unknown entity, or none,
or with a malformed extra pair, is rejected with the reason; nothing is registered."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..benchmark import FORGET, TASKS, cap_images_per_entity, held_out_train
from ..data.catalog import entity_key
from ..paths import atomic_write_bytes

REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RequestRejected(ValueError):
    pass


@dataclass(frozen=True)
class UnlearningRequest:
    id: str
    entity_ids: list[str]
    qa: tuple[dict, ...] = ()  # extra {"question", "answer", "image"} pairs

    def as_dict(self) -> dict:
        return {"id": self.id, "entity_ids": self.entity_ids, "qa": list(self.qa)}


def read_request(path: Path, catalog: pd.DataFrame) -> UnlearningRequest:
    path = Path(path)
    request_id = path.stem
    if not REQUEST_ID.match(request_id) or request_id in TASKS:
        raise RequestRejected(f"{path.name}: the file name must be an id of letters, digits, '.', '_' or '-' "
                              f"(and not a benchmark task {', '.join(TASKS)})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestRejected(f"{path.name}: not valid JSON ({e})") from None
    names = data.get("entities") if isinstance(data, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise RequestRejected(f"{path.name}: field 'entities' must be a non-empty list of entity names")
    lookup: dict[str, str] = {}
    for row in catalog.itertuples(index=False):
        for name in (row.entity_id, row.entity, *list(row.aliases)):
            lookup[entity_key(name)] = row.entity_id
    unknown = [n for n in names if entity_key(n) not in lookup]
    if unknown:
        raise RequestRejected(f"{path.name}: unknown entit{'y' if len(unknown) == 1 else 'ies'} "
                              f"{', '.join(repr(u) for u in unknown)} (not in the entity catalog)")
    extra = data.get("qa", [])
    if not isinstance(extra, list):
        raise RequestRejected(f"{path.name}: field 'qa' must be a list of question-answer pairs")
    for i, pair in enumerate(extra):
        for field in ("question", "answer", "image"):
            value = pair.get(field) if isinstance(pair, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise RequestRejected(f"{path.name}: qa[{i}].{field} must be non-empty text")
        if not pair["image"].startswith("downloaded_images/") or ".." in pair["image"].split("/"):
            raise RequestRejected(f"{path.name}: qa[{i}].image must be a release image path (downloaded_images/…)")
    qa = tuple({"question": p["question"].strip(), "answer": p["answer"].strip(), "image": p["image"]} for p in extra)
    return UnlearningRequest(request_id, sorted({lookup[entity_key(n)] for n in names}), qa)


def accepted_request_path(data_dir: Path, request_id: str) -> Path:
    """Where an accepted request is kept, normalised, for its expert's run to read."""
    return Path(data_dir) / "requests" / f"{request_id}.json"


def write_request(folder: Path, request_id: str, entities: list[str]) -> Path:
    path = Path(folder) / f"{request_id}.json"
    atomic_write_bytes(path, json.dumps({"entities": entities}, ensure_ascii=False, indent=1).encode())
    return path


def request_rows(request: UnlearningRequest, qa: pd.DataFrame, max_images: int | None,
                 known_images: set[str] | None = None) -> pd.DataFrame:
    """The train rows of the requested entities (held out from evaluation, up to max_images
    pictures each, as the profile picks them) and the extra pairs, as forget rows. An extra pair's image must be one of `known_images` (raw_crawls)."""
    rows = cap_images_per_entity(held_out_train(qa[qa["entity_id"].isin(request.entity_ids)]), max_images)
    if request.qa:
        unknown = [p["image"] for p in request.qa if known_images is not None and p["image"] not in known_images]
        if unknown:
            raise RequestRejected(f"request {request.id}: no image for {', '.join(unknown[:3])} in raw_crawls")
        extra = pd.DataFrame([{**p, "qa_id": f"{request.id}-extra-{i}", "entity_id": p["image"].split("/")[2]}
                              for i, p in enumerate(request.qa)])
        rows = pd.concat([rows, extra], ignore_index=True)
    return rows.assign(task=request.id, role=FORGET)


def forget_rows(request_id: str, splits: pd.DataFrame, qa: pd.DataFrame, crawls: pd.DataFrame, data_dir,
                max_images: int | None) -> pd.DataFrame:
    """What the expert of a request learns to refuse: a benchmark task's forget train rows (from
    the profile's splits), or an accepted request's entities and extra pairs (from the validated QA
    pairs with a crawled image). Raises RequestRejected before anything is trained."""
    if request_id in TASKS:
        train = splits[splits["split"] == "train"]
        return train[(train["task"] == request_id) & (train["role"] == FORGET)]
    stored = accepted_request_path(data_dir, request_id)
    if not stored.is_file():
        raise RequestRejected(f"request {request_id}: no accepted request file at {stored}")
    data = json.loads(stored.read_text())
    request = UnlearningRequest(data["id"], data["entity_ids"], tuple(data.get("qa", [])))
    crawled = set(crawls["image"])
    return request_rows(request, qa[qa["image"].isin(crawled)], max_images, crawled)
