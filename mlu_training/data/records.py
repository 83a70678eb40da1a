"""Reading the release's JSON files into plain records, with errors that name file, record and field.

Record format: a list of
`{"id", "image": "downloaded_images/<Class>/<Entity>/<file>", "conversations": [human, gpt]}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..benchmark import CLASSES, ROLES, TASKS  # noqa: F401  (re-exported: the reader's vocabulary)

IMAGE_TOKEN = "<image>\n"
IMAGE_PATH = re.compile(r"^downloaded_images/(?P<cls>[^/]+)/(?P<entity>[^/]+)/(?P<file>[^/]+)$")


class ReleaseDataError(ValueError):
    """A release file that cannot be read as the format says. Names file, record and field."""

    def __init__(self, file: str, problem: str, record: int | None = None,
                 field: str | None = None, release_id: str | None = None):
        self.file, self.record, self.field, self.problem = file, record, field, problem
        where = file
        if record is not None:
            where += f", record {record}" + (f" (id {release_id!r})" if release_id else "")
        if field:
            where += f", field {field}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class SourceFile:
    """One QA file of the release and what its rows are."""

    relpath: str  # relative to the extracted release root
    split: str  # "train" (the full task files) or "eval" (the evaluation subsets)
    task: str
    role: str
    variant: int | None  # eval files: 0 original, 1-4 paraphrase; task files: inferred per row


@dataclass(frozen=True)
class RawRecord:
    source: SourceFile
    record: int  # index in the file's list
    release_id: str
    image: str
    prompt: str  # the human turn, "<image>\n" included
    answer: str

    @property
    def question(self) -> str:
        return self.prompt[len(IMAGE_TOKEN):] if self.prompt.startswith(IMAGE_TOKEN) else self.prompt

    @property
    def class_name(self) -> str:
        m = IMAGE_PATH.match(self.image)
        return m["cls"] if m else ""

    @property
    def entity_folder(self) -> str:
        m = IMAGE_PATH.match(self.image)
        return m["entity"] if m else ""


def task_files() -> list[SourceFile]:
    return [SourceFile(f"MLUBench/Tasks/Task{t}/task{t}_{r}.json", "train", t, r, None)
            for t in TASKS for r in ROLES]


def eval_files() -> list[SourceFile]:
    out = []
    for t in TASKS:
        for r in ROLES:
            out.append(SourceFile(f"tasks/Task{t}/task{t}_{r}.json", "eval", t, r, 0))
            out += [SourceFile(f"tasks/Task{t}/other_types_task{t}/task{t}_{r}_{k}.json", "eval", t, r, k)
                    for k in range(1, 5)]
    return out


def read_records(root: Path, source: SourceFile) -> list[RawRecord]:
    path = Path(root) / source.relpath
    if not path.is_file():
        raise ReleaseDataError(source.relpath, "file missing from the release")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ReleaseDataError(source.relpath, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ReleaseDataError(
            source.relpath, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno} "
            "(truncated or edited by hand?)") from None
    if not isinstance(data, list):
        raise ReleaseDataError(source.relpath, f"expected a list of records, got {type(data).__name__}")
    if not data:  # said here, not later as the rows of other files whose entity went missing with it
        raise ReleaseDataError(source.relpath, "the file holds no records (an empty list): every task side needs its rows")
    return [_parse(source, i, item) for i, item in enumerate(data)]


def _parse(source: SourceFile, i: int, item: object) -> RawRecord:
    def fail(field: str, problem: str) -> ReleaseDataError:
        rid = item.get("id") if isinstance(item, dict) else None
        return ReleaseDataError(source.relpath, problem, i, field, None if rid is None else str(rid))

    if not isinstance(item, dict):
        raise fail("", f"expected an object, got {type(item).__name__}")
    image = item.get("image")
    if not isinstance(image, str):
        raise fail("image", "missing" if image is None else f"expected text, got {type(image).__name__}")
    conv = item.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise fail("conversations", "expected a list of two turns (human, gpt)")
    if len(conv) > 2:  # never dropped silently: the benchmark is one question, one answer
        raise fail(f"conversations[{2}]", f"expected two turns (human, gpt), got {len(conv)}")
    for k, who in ((0, "human"), (1, "gpt")):
        turn = conv[k]
        if not isinstance(turn, dict) or turn.get("from") != who:
            raise fail(f"conversations[{k}].from", f"expected the {who} turn")
        if not isinstance(turn.get("value"), str):
            problem = "missing" if turn.get("value") is None else "expected text"
            raise fail(f"conversations[{k}].value", problem)
    return RawRecord(source, i, str(item.get("id", "")), image, conv[0]["value"], conv[1]["value"])
