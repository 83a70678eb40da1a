"""The QA table: every row of the task files (split "train") and of the evaluation files
(split "eval": the original items, variant 0, and their four paraphrases, variants 1-4).

Each row carries its own identity (`qa_id`, from split, variant, image and question), so ground
truth is always joined by identity, never by list position.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path

import pandas as pd

from .questions import QuestionBook
from .records import IMAGE_TOKEN, RawRecord, eval_files, read_records, task_files

QA_COLUMNS = [
    "qa_id", "split", "task", "role", "entity_id", "entity", "class_name", "class_question",
    "variant", "question", "answer", "image", "source_file", "record", "release_id",
    "prompt_has_image",
]


def qa_id(split: str, variant: int | None, image: str, question: str) -> str:
    key = "\x1f".join([split, str(variant), image, question])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def read_all_records(root: Path) -> tuple[list[RawRecord], list[RawRecord]]:
    """(task-file records, evaluation-file records); a malformed file raises ReleaseDataError."""
    train = [r for src in task_files() for r in read_records(root, src)]
    evaluation = [r for src in eval_files() for r in read_records(root, src)]
    return train, evaluation


def build_qa_pairs(records: list[RawRecord], book: QuestionBook, catalog: pd.DataFrame) -> pd.DataFrame:
    names = dict(zip(catalog["entity_id"], catalog["entity"]))
    rows = []
    for rec in records:
        class_question, inferred = book.classify(rec.class_name, rec.question)
        variant = rec.source.variant if rec.source.variant is not None else inferred
        entity_id = unicodedata.normalize("NFC", rec.entity_folder)
        rows.append({
            "qa_id": qa_id(rec.source.split, variant, rec.image, rec.question),
            "split": rec.source.split,
            "task": rec.source.task,
            "role": rec.source.role,
            "entity_id": entity_id,
            "entity": names.get(entity_id, ""),
            "class_name": rec.class_name,
            "class_question": class_question,
            "variant": variant,
            "question": rec.question,
            "answer": rec.answer,
            "image": rec.image,
            "source_file": rec.source.relpath,
            "record": rec.record,
            "release_id": rec.release_id,
            "prompt_has_image": rec.prompt.startswith(IMAGE_TOKEN),
        })
    df = pd.DataFrame(rows, columns=QA_COLUMNS)
    return df.astype({"class_question": "Int64", "variant": "Int64", "record": "int64"})
