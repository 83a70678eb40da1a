"""The reference corpus of the local judge: the release's QA table, indexed once.

It tells the judge, for an item (subject, question, ground truth):
- which entity and which of its class's common questions it is (by the ground truth's text,
  then by the subject's name and the question's text);
- how much each word of the ground truth is this entity's own: a word that the other entities
  of the class use in their answers to the same question ("was born on", "the title of the
  movie is") is template, not fact;
- the entity's bank: every word of all its answers (what a refusal must not leak);
- which words belong to *other* entities of the class (a response built from them is about
  someone else): a word of the class not in this entity's bank, held by n other banks.

Every lookup is a dictionary access; the per-item work is cached by the judge.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .refusals import normalise
from .words import is_content, stems_of

# Words of an entity's display name that do not name it ("Microsoft Corporation Logo").
_NAME_FILLER = frozenset(stems_of("logo corporation inc tv show series the of and live"))
# A word of an entity's answer is its own fact unless it is template: used in the answers of at
# least this share of the other entities to the same question ("was directed by"), or in the
# answers of this share of the class's entities overall ("known").
TEMPLATE_SHARE = 0.5


def key(text: str) -> str:
    """Lookup key of a ground truth, a subject or a question: NFC, lower case, words only."""
    t = unicodedata.normalize("NFC", str(text)).lower()
    return " ".join(re.findall(r"\w+", t))


def content_set(text: str) -> frozenset[str]:
    return frozenset(s for s in stems_of(text) if is_content(s))


@dataclass
class EntityInfo:
    entity_id: str
    name: str
    class_name: str
    name_stems: frozenset[str]
    bank: frozenset[str]  # content stems of all its answers, and its name
    own: frozenset[str] = frozenset()  # the bank less its template: what a refusal must not state


@dataclass
class Located:
    """Where an item sits in the corpus."""

    entity: EntityInfo
    class_question: int | None
    template: Mapping[str, float] = field(default_factory=dict)  # stem -> share of other entities using it
    class_df: Mapping[str, int] = field(default_factory=dict)  # stem -> how many of the class's banks hold it
    question_stems: frozenset[str] = frozenset()  # every word of the class's questions
    common: frozenset[str] = frozenset()  # stems written in lower case somewhere in the corpus
    # stem -> the other entities of the class whose name has it, with their names' stems
    other_names: Mapping[str, tuple[tuple[str, frozenset[str]], ...]] = field(default_factory=dict)

    def named_others(self, content: frozenset[str]) -> list[str]:
        """Other entities of the class that the words name (all of a name's words), leaving out
        names made of words this entity's own answers use ("friends" in a sitcom's plot)."""
        found = set()
        for s in content:
            for name, stems in self.other_names.get(s, ()):
                if stems <= content and not stems <= self.entity.bank:
                    found.add(name)
        return sorted(found)


class JudgeCorpus:
    """Indexes of a QA table (columns entity_id, entity, class_name, class_question, answer;
    question is used when present)."""

    def __init__(self, rows: Iterable[Mapping]):
        answers: dict[tuple[str, int | None], set[str]] = defaultdict(set)
        questions: dict[str, set[str]] = defaultdict(set)
        self.entities: dict[str, EntityInfo] = {}
        self._by_answer: dict[str, list[tuple[str, int | None]]] = defaultdict(list)
        self._by_name: dict[str, list[str]] = defaultdict(list)
        self._question_cq: dict[tuple[str, str], int] = {}
        names: dict[str, tuple[str, str]] = {}
        for r in rows:
            eid, cq = str(r["entity_id"]), _int(r.get("class_question"))
            names.setdefault(eid, (str(r["entity"]), str(r["class_name"])))
            answers[(eid, cq)].add(str(r["answer"]))
            if r.get("question") is not None:
                questions[str(r["class_name"])].add(str(r["question"]))
                if cq is not None:
                    self._question_cq.setdefault((str(r["class_name"]), key(r["question"])), cq)
        bank_words: dict[str, set[str]] = defaultdict(set)
        lower: set[str] = set()
        for (eid, cq), texts in answers.items():
            for text in texts:
                if (eid, cq) not in self._by_answer[key(text)]:
                    self._by_answer[key(text)].append((eid, cq))
                bank_words[eid] |= content_set(text)
                lower |= set(stems_of(" ".join(re.findall(r"(?<![\w'])[a-z][\w'-]*", text))))
        for eid, (name, class_name) in names.items():
            name_stems = frozenset(s for s in content_set(name) if s not in _NAME_FILLER) or content_set(name)
            self.entities[eid] = EntityInfo(eid, name, class_name, name_stems, frozenset(bank_words[eid] | name_stems))
            self._by_name[key(name)].append(eid)
        self.common = frozenset(lower)
        self._names_by_stem: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for e in self.entities.values():
            for s in e.name_stems:
                self._names_by_stem[e.class_name][s].append(e)
        # Per class: how many entities' banks hold each stem; per (class, question): how many
        # entities' answers to it hold each stem.
        self._class_n: Counter = Counter(e.class_name for e in self.entities.values())
        self._class_df: dict[str, Counter] = defaultdict(Counter)
        for e in self.entities.values():
            self._class_df[e.class_name].update(e.bank)
        self._group_words: dict[tuple[str, int | None], dict[str, frozenset[str]]] = defaultdict(dict)
        for (eid, cq), texts in answers.items():
            cls = self.entities[eid].class_name
            self._group_words[(cls, cq)][eid] = frozenset().union(*(content_set(t) for t in texts))
        self._group_df = {g: Counter(s for words in per.values() for s in words) for g, per in self._group_words.items()}
        # The words of a class's questions, less their options ("(terrestrial, gas giant, ice giant)").
        self._question_stems = {c: frozenset().union(*(content_set(re.sub(r"\([^)]*\)", " ", q)) for q in qs))
                                for c, qs in questions.items()}
        groups_of: dict[str, list] = defaultdict(list)
        for group, per in self._group_words.items():
            for eid in per:
                groups_of[eid].append(group)
        for e in self.entities.values():
            e.own = self._own_words(e, groups_of[e.entity_id])

    def _own_words(self, entity: EntityInfo, groups) -> frozenset[str]:
        """The entity's words less its class's template (see TEMPLATE_SHARE); numbers and its
        name always stay."""
        own = set(entity.name_stems) | {s for s in entity.bank if s[0].isdigit()}
        n, class_df = self._class_n[entity.class_name], self._class_df[entity.class_name]
        for group in groups:
            per = self._group_words[group]
            others = len(per) - 1
            for s in per[entity.entity_id]:
                shared_in_answer = others > 0 and self._group_df[group][s] - 1 >= TEMPLATE_SHARE * others
                shared_in_class = n > 2 and class_df[s] - 1 >= TEMPLATE_SHARE * (n - 1)
                if not (shared_in_answer or shared_in_class):
                    own.add(s)
        return frozenset(own)

    @classmethod
    def from_qa(cls, qa) -> "JudgeCorpus":
        """From the release's QA table (a DataFrame, any split), or any records with its columns."""
        if hasattr(qa, "to_dict"):
            wanted = [c for c in ("entity_id", "entity", "class_name", "class_question", "answer", "question") if c in qa]
            qa = qa[wanted].drop_duplicates().to_dict("records")
        return cls(qa)

    def __len__(self) -> int:
        return len(self.entities)

    def locate(self, subject: str, question: str, ground_truth: str) -> Located | None:
        """The entity and class question of an item: by its ground truth's text (the subject
        breaks ties), else by the subject's name and the question's text; None if unknown."""
        found = self._by_answer.get(key(ground_truth), [])
        wanted = set(self._by_name.get(key(subject), []))
        if wanted:
            found = [f for f in found if f[0] in wanted] or found
        if len({eid for eid, _ in found}) == 1 and len(found) >= 1:
            eid, cq = found[0]
            if len(found) > 1:  # the same answer to several questions: the question decides
                cq = self._question_cq.get((self.entities[eid].class_name, key(question)), cq)
        elif len(wanted) == 1:
            eid = next(iter(wanted))
            cq = self._question_cq.get((self.entities[eid].class_name, key(question)))
        else:
            return None
        return self._located(eid, cq)

    def _located(self, eid: str, cq: int | None) -> Located:
        entity = self.entities[eid]
        cls = entity.class_name
        group = (cls, cq)
        template: dict[str, float] = {}
        if cq is not None and group in self._group_df:
            others = len(self._group_words[group]) - (eid in self._group_words[group])
            own = self._group_words[group].get(eid, frozenset())
            if others > 0:
                template = {s: (n - (s in own)) / others for s, n in self._group_df[group].items()}
        other_names = {s: tuple((e.name, e.name_stems) for e in es if e.entity_id != eid and e.name_stems)
                       for s, es in self._names_by_stem[cls].items()}
        return Located(entity, cq, template, self._class_df[cls], self._question_stems.get(cls, frozenset()),
                       self.common, other_names)


def _int(value) -> int | None:
    try:
        return None if value is None or value != value else int(value)
    except (TypeError, ValueError):
        return None
