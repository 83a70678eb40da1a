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
from ..data.records import IMAGE_PATH
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


def check_request_id(request_id: str) -> str:
    """The one rule for a request's id, for the CLI and the sensor alike: letters, digits, '.',
    '_', '-' (a file name in the requests folder, never a path), and not a benchmark task."""
    if not isinstance(request_id, str) or not REQUEST_ID.match(request_id) or request_id in TASKS:
        raise RequestRejected(f"{request_id!r}: a request id is 1-64 letters, digits, '.', '_' or '-', starting with a "
                              f"letter or digit (a plain file name, no '/'), and not a benchmark task {', '.join(TASKS)}")
    return request_id


def request_id_of(path: Path) -> str:
    """The id a request file stands for (its name without .json), checked."""
    try:
        return check_request_id(Path(path).stem)
    except RequestRejected as why:
        raise RequestRejected(f"{Path(path).name}: the file name must be a request id: {why}") from None


def read_request_bytes(path: Path, max_bytes: int = 1 << 20) -> bytes:
    """A request file's bytes: a regular file, read without following a link (a link could make
    mlu read any file it can reach); anything else is refused with the reason."""
    import os
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        kind = "a symbolic link" if path.is_symlink() else f"unreadable ({e.strerror})"
        raise RequestRejected(f"{path.name}: {kind}; a request must be a plain file in the requests folder") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise RequestRejected(f"{path.name}: {kind}; a request must be a plain file in the requests folder")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > max_bytes:
            raise RequestRejected(f"{path.name}: {info.st_size} bytes; a request is a small JSON file (at most {max_bytes})")
        return f.read(max_bytes + 1)


def served_entities(data_dir: Path, splits: pd.DataFrame | None = None) -> dict[str, str]:
    """entity id -> the request whose expert already forgets it: the benchmark's tasks (the
    profile's forget entities, from `splits`) and every accepted request file."""
    served = {}
    if splits is not None:
        forget = splits[splits["role"] == FORGET]
        served.update(zip(forget["entity_id"], forget["task"]))
    for stored in sorted((Path(data_dir) / "requests").glob("*.json")):
        try:
            data = json.loads(stored.read_text(encoding="utf-8"))
            served.update({e: data["id"] for e in data["entity_ids"]})
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return served


def parse_request(request_id: str, payload: bytes | dict, catalog: pd.DataFrame,
                  served: dict[str, str] | None = None, name: str | None = None) -> UnlearningRequest:
    """A request from its content, checked: the id, the entities against the catalog (and not
    already forgotten by another request's expert, `served`), the extra pairs field by field."""
    name = name or f"{request_id}.json"
    check_request_id(request_id)
    if isinstance(payload, dict):
        data = payload
    else:
        try:
            data = json.loads(payload.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestRejected(f"{name}: not valid JSON ({e})") from None
    names = data.get("entities") if isinstance(data, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise RequestRejected(f"{name}: field 'entities' must be a non-empty list of entity names")
    lookup: dict[str, str] = {}
    for row in catalog.itertuples(index=False):
        for alias in (row.entity_id, row.entity, *list(row.aliases)):
            lookup[entity_key(alias)] = row.entity_id
    unknown = [n for n in names if entity_key(n) not in lookup]
    if unknown:
        raise RequestRejected(f"{name}: unknown entit{'y' if len(unknown) == 1 else 'ies'} "
                              f"{', '.join(repr(u) for u in unknown)} (not in the entity catalog)")
    entity_ids = sorted({lookup[entity_key(n)] for n in names})
    taken = {e: served[e] for e in entity_ids if served and served.get(e, request_id) != request_id}
    if taken:
        raise RequestRejected(f"{name}: " + "; ".join(f"{e!r} is already forgotten by the expert of request {r!r}"
                                                      for e, r in taken.items())
                              + " (one expert per entity: change that request instead)")
    extra = data.get("qa", [])
    if not isinstance(extra, list):
        raise RequestRejected(f"{name}: field 'qa' must be a list of question-answer pairs")
    for i, pair in enumerate(extra):
        for field in ("question", "answer", "image"):
            value = pair.get(field) if isinstance(pair, dict) else None
            if not isinstance(value, str) or not value.strip():
                raise RequestRejected(f"{name}: qa[{i}].{field} must be non-empty text")
        if not IMAGE_PATH.match(pair["image"]) or {"..", "."} & set(pair["image"].split("/")):
            raise RequestRejected(f"{name}: qa[{i}].image must be a release image path "
                                  f"(downloaded_images/<Class>/<Entity>/<file>), not {pair['image']!r}")
    qa = tuple({"question": p["question"].strip(), "answer": p["answer"].strip(), "image": p["image"]} for p in extra)
    return UnlearningRequest(request_id, entity_ids, qa)


def read_request(path: Path, catalog: pd.DataFrame, served: dict[str, str] | None = None) -> UnlearningRequest:
    path = Path(path)
    return parse_request(request_id_of(path), read_request_bytes(path), catalog, served, path.name)


def rejection_path(folder: Path, request_id: str) -> Path:
    """Where the reason a request was refused is written, beside it."""
    return Path(folder) / f"{request_id}.rejected.txt"


def accepted_request_path(data_dir: Path, request_id: str) -> Path:
    """Where an accepted request is kept, normalised, for its expert's run to read."""
    return Path(data_dir) / "requests" / f"{request_id}.json"


def write_request(folder: Path, request_id: str, entities: list[str]) -> Path:
    """Files a request as `<folder>/<id>.json` (the id checked: never a path out of the folder)."""
    path = Path(folder) / f"{check_request_id(request_id)}.json"
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
