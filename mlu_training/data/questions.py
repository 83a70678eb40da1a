"""Which common question of its class a QA row asks, and in which phrasing.

Every class has five common questions (`Prompts Template/<Class>.txt`, variant 0) and four other
phrasings of each (`Different Type of Questions/<Class>/<Class>_<k>.txt`, variant k). The task
files mix all five phrasings, sometimes with the template's parenthesis trimmed, so rows are
matched exactly first and fuzzily (rapidfuzz) second. Some phrasings repeat across variants
("What is this person's name?" is both 0 and 2); the lowest variant wins.
"""

from __future__ import annotations

import re
from pathlib import Path

from rapidfuzz import fuzz, process

TEMPLATES = "Topics and Entities"
# Data class folder -> template folder, where they differ.
TEMPLATE_CLASS = {"Corporation": "Corporations", "Movies": "Movie"}
MIN_FUZZY_SCORE = 80.0
_NUMBERED = re.compile(r"^\s*(\d+)[.)]\s*(.+?)\s*$")


def normalise_question(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def _numbered_lines(path: Path) -> dict[int, str]:
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _NUMBERED.match(line)
        if m:
            out[int(m[1])] = m[2]
    return out


class QuestionBook:
    """The class questions of the release, to label each row with (class_question, variant)."""

    def __init__(self, phrasings: dict[str, dict[tuple[int, int], str]]):
        # class name -> {(class_question, variant): text}
        self.phrasings = phrasings
        self._exact: dict[str, dict[str, tuple[int, int]]] = {}
        for cls, table in phrasings.items():
            exact: dict[str, tuple[int, int]] = {}
            for (q, v), text in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                exact.setdefault(normalise_question(text), (q, v))
            self._exact[cls] = exact

    @classmethod
    def from_release(cls, root: Path, class_names: tuple[str, ...]) -> "QuestionBook":
        base = Path(root) / TEMPLATES
        phrasings: dict[str, dict[tuple[int, int], str]] = {}
        for name in class_names:
            folder = TEMPLATE_CLASS.get(name, name)
            table = {(q, 0): text for q, text in _numbered_lines(base / "Prompts Template" / f"{folder}.txt").items()}
            for k in range(1, 5):
                path = base / "Different Type of Questions" / folder / f"{folder}_{k}.txt"
                table.update({(q, k): text for q, text in _numbered_lines(path).items()})
            phrasings[name] = table
        return cls(phrasings)

    def classify(self, class_name: str, question: str) -> tuple[int | None, int | None]:
        """(class_question 1-5, variant 0-4), or (None, None) when nothing is close enough."""
        exact = self._exact.get(class_name)
        if not exact:
            return None, None
        key = normalise_question(question)
        if key in exact:
            return exact[key]
        choices = list(exact)
        hit = process.extractOne(key, choices, scorer=fuzz.token_set_ratio, score_cutoff=MIN_FUZZY_SCORE)
        return exact[hit[0]] if hit else (None, None)
