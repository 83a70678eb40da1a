"""The entity catalog, derived from the data's image paths (the release's entity lists disagree
with its data: five listed entities have no data, one is listed under another name)."""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from pathlib import Path

import pandas as pd

from .records import RawRecord

# Names the release's lists use for an entity whose folder is spelled otherwise (PROVENANCE.md).
KNOWN_ALIASES = {"苏姿丰": ["Lisa Su"]}
ENTITY_LIST = "tasks/all_tasks/task{task}_{role}.txt"


def entity_key(name: str) -> str:
    """Spaces and underscores, Unicode forms and case do not make two entities different."""
    return " ".join(unicodedata.normalize("NFC", name).replace("_", " ").split()).casefold()


def display_name(folder: str) -> str:
    return " ".join(unicodedata.normalize("NFC", folder).replace("_", " ").split())


def read_entity_lists(root: Path, tasks, roles) -> dict[tuple[str, str], list[str]]:
    out = {}
    for t in tasks:
        for r in roles:
            path = Path(root) / ENTITY_LIST.format(task=t, role=r)
            names = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
            out[(t, r)] = [n.strip() for n in names if n.strip()]
    return out


def build_entity_catalog(task_records: list[RawRecord], entity_lists: dict[tuple[str, str], list[str]]) -> tuple[pd.DataFrame, list[str]]:
    """One row per entity folder of the task files, and the listed names that have no data.

    An entity's task and role come from the first task file it appears in; an entity in two
    files is left for the `validated_qa_pairs` checks to report with its rows.
    """
    first: dict[str, RawRecord] = {}
    qa = defaultdict(int)
    images = defaultdict(set)
    for rec in task_records:
        folder = unicodedata.normalize("NFC", rec.entity_folder)
        if not folder:
            continue  # a malformed image path; the path checks report it
        first.setdefault(folder, rec)
        qa[folder] += 1
        images[folder].add(rec.image)

    listed = {(t, r): {entity_key(n): n for n in names} for (t, r), names in entity_lists.items()}
    rows, matched = [], set()
    for folder, rec in first.items():
        side = listed.get((rec.source.task, rec.source.role), {})
        names = [folder, *KNOWN_ALIASES.get(folder, [])]
        hits = [side[entity_key(n)] for n in names if entity_key(n) in side]
        matched.update((rec.source.task, rec.source.role, entity_key(h)) for h in hits)
        # Only names that really differ (not "Big_Ben" for "Big Ben") are aliases.
        aliases = sorted({h for h in hits if entity_key(h) != entity_key(folder)} | set(KNOWN_ALIASES.get(folder, [])))
        rows.append({
            "entity_id": folder,
            "entity": display_name(folder),
            "class_name": rec.class_name,
            "task": rec.source.task,
            "role": rec.source.role,
            "aliases": aliases,
            "listed": bool(hits),
            "num_qa": qa[folder],
            "num_images": len(images[folder]),
        })
    unmatched = sorted(
        f"{name} (task {t} {r})"
        for (t, r), side in listed.items() for key, name in side.items() if (t, r, key) not in matched
    )
    catalog = pd.DataFrame(rows).sort_values(["task", "role", "class_name", "entity_id"]).reset_index(drop=True)
    return catalog, unmatched


def entity_names(catalog: pd.DataFrame) -> dict[str, list[str]]:
    """entity id -> every name it goes by (display name first, then aliases): what a question may call it."""
    return {r.entity_id: [r.entity, *list(r.aliases)] for r in catalog.itertuples(index=False)}
