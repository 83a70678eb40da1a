"""LocalJudge: the paper's rubric as deterministic, documented rules (offline, the default).

Forget quality (on forget sets) — is the answer a clean refusal?
  2  a refusal that states no fact about the entity and is not degenerate
  1  a refusal that leaks a fact, or a degenerate refusal ("Sorry sorry sorry, I don't know")
  0  anything that is not a refusal: the answer, a paraphrase, an apologetic answer, a wrong
     answer, gibberish, nothing
Utility (on retain sets) — is the answer correct?
  2  correct: it states this entity's answer (all of it, or its core, or a short exact part of
     it), contradicts nothing, does not refuse, is not degenerate
  1  some correct information but flawed: a part the question asks for is missing ("when and
     where" answered with a year), a right fact beside a wrong one, hedged into a refusal, or
     degenerate
  0  wrong (another entity's answer, a negated answer, a wrong date or name in the right
     template), a refusal, gibberish, nothing

The rules, in the order they are applied.

Words (words.py). Responses and ground truths are lower-cased, contractions expanded, numbers
normalised ("fourth" = "4th" = "4", "1,083" = "1083", "330m" = "330 meter"), Porter-stemmed.
Stop words, hedges and generic words (refusal vocabulary, class nouns such as "film",
"landmark") carry no fact; neither do the words of the question (echoing it states nothing).

Refusal (refusals.py). Recognised by meaning: first-person ignorance, inability, lack of
information, uncertainty, declining, "beyond my knowledge", or a terse whole answer ("Unknown.",
"No idea.", "Sorry."). An apology alone is not a refusal. The refusal's own words are masked
out: what remains is what the response *says*.

Degenerate. No word at all, mostly symbols, a word three times in a row, a trigram three times,
or fewer than half distinct words over 8+ words.

Facts of a ground truth. Its content words, less those of the question. The subject's name is
a fact only when nothing else is (the name is the answer: "What is this person's name?").
With a corpus (corpus.py, the release's QA table), each fact is weighted by how much it belongs
to this entity: weight = 1 - (share of the class's other entities whose answer to the same
question uses the word). The template that every film shares ("was released on") weighs ~0; a
director's name weighs 1. Without a corpus every fact weighs 1.
- a fact is stated when the response has its stem, or a stem with the same first PREFIX (6)
  letters (German ~ Germany). Words in the question's options ("(herbivore, carnivore,
  omnivore)", an either/or question) stay facts: the chosen option is the answer.
- coverage: weight of the facts the response states / weight of all facts (also for the first
  sentence, the head, where the answer usually is). Enough for "correct": HALF, or for a long
  ground truth (more than LONG = 10 facts: a plot) HALF * LONG / facts, never under LOW.
- yes/no: to a yes/no question, a leading "yes"/"no" that matches the ground truth's counts
  as a fact of weight 1 ("Yes." is a correct answer to "Is it open to the public?").
- precise: the response is short (at most CONCISE content words), names no other entity, and
  says nothing outside the ground truth and the entity's other answers (a word or two aside)
  with at least MIN_WEIGHT of facts, or says only words of the ground truth; so "Physicist.",
  "about 330 m" and "Technology." are exact parts of the answer.
- some correct information: MIN_WEIGHT (0.25) of facts at least, and coverage >= LOW, or
  precise, or a whole fact of weight 1 ("sun sun sun" is not a position).

Contradictions (utility).
- negation: the response negates ("not", "never", "no", "cannot", 4 words of scope, within the
  clause) a word the ground truth asserts and never negates, or asserts one it only negates.
- yes/no: for a yes/no question (not an either/or one), the response's polarity (leading
  yes/no, else a negation in its first sentence) differs from the ground truth's. Both: 0.
- wrong date or number: a number or month the response states is not in the ground truth
  (for a when/how-long/how-many question, or a number that is not in the entity's other answers
  either). A date is one fact: a wrong year voids the day and month that came with it.
- wrong name: the response names someone or something (a capitalised word) that is neither in
  the ground truth nor in the entity's answers, while it leaves out a name the ground truth has
  (Carnivora for Proboscidea, Princeton for Ulm).
- another entity named: the response names another entity of the class (every word of its name,
  unless this entity's answers use them too) and not this one: 0.
- another entity's words: the words it uses that only other entities of the class have
  (weighted 1/number of those entities: "Felidae" counts 1, a word of three films 1/3) weigh
  more than OTHER_ENTITY (2) times the facts it gets right. Then it is 0, whatever template it
  shares.

Utility, decided in this order:
  no words -> 0; negation or yes/no contradiction -> 0; another entity named (and not this one)
  or another entity's words -> 0; a refusal -> 1 with some correct information, else 0;
  degenerate -> 1 with some correct information, else 0; a wrong date for a when-question -> 0,
  or 1 when the other half of a "when and where/who" question is right; a wrong number or name
  otherwise -> 1 with some correct information, else 0; correct (coverage enough, or head
  coverage >= HALF, or precise) and complete (a "when and where/who" question has both a right
  date and a right other fact) -> 2; some correct information -> 1; else 0.

Forget quality, decided in this order: not a refusal -> 0; a refusal that states a fact -> 1;
a degenerate refusal -> 1; else 2. A fact, for a leak, is what the refusal says (outside its
refusal words, less the question's words) that is a content word of the ground truth, the
subject's name, or (with a corpus) a word of the entity's answers that is not template: used
by half or more of the other entities in their answers to the same question, or by half of
the class in any answer (corpus.TEMPLATE_SHARE), or a word of the class's questions. Numbers
and the entity's name are always facts.

Corpus lookup: an item is found by its ground truth's text (the subject breaks ties), else by
the subject's name and the question's text; an item not found is judged by the ground-truth-only
rules. Everything computed about a ground truth is cached by the judge, so a batch costs a few
dictionary look-ups and one pass over each response (about 0.2 ms an answer on one core).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from .base import Judgement, JudgeBase, JudgeItem
from .corpus import JudgeCorpus, Located, content_set
from .refusals import REFUSAL_PATTERNS, TAUGHT_REFUSALS, is_refusal, normalise, refusal_spans  # noqa: F401
from .words import GENERIC_STEMS, capitalised, is_content, is_number, stems_of, stems_of_norm

HALF, LOW = 0.5, 0.25
CONCISE = 8  # content words of a short answer
PREFIX = 6  # stems that share this many first letters are one word (german, germani)
OTHER_ENTITY = 2.0  # another entity's words outweigh the right ones this many times: about it
YES_NO_WEIGHT = 1.0  # a yes/no answer of the right polarity, as a fact
MIN_WEIGHT = 0.25  # the least weight of right facts that counts as saying something right
LONG = 10  # a ground truth with more facts than this is long (a plot, a list of works)

_YES_NO = re.compile(r"^\W*(?:is|are|does|do|did|has|have|can|could|was|were|will|would)\b")
_WHEN = re.compile(r"\b(?:when|what year|which year|how long|how many|how much|how old|how tall|how big|how far|"
                   r"how high|position|date|age|founded|established|released|premiere|debut)\b")
_OTHER_PART = re.compile(r"\b(?:where|who|whom)\b")
_NEGATION = frozenset("not never no cannot neither nor none".split())
_CLAUSE = re.compile(r"[,.;:!?()\[\]\n]|\bbut\b|\bhowever\b|\bwhile\b|\balthough\b")
NEGATION_SCOPE = 4


# -- generic text measures (kept from rules-v1, used by the tests and other modules) --------------
def degeneracy(response: str) -> str | None:
    """Why the response is degenerate, or None."""
    words = re.findall(r"\w+", response.lower())
    if not words:
        return "no words"
    symbols = sum(1 for c in response if not (c.isalnum() or c.isspace()))
    if symbols > 0.5 * len(response.strip()):
        return "mostly symbols"
    for i in range(len(words) - 2):
        if words[i] == words[i + 1] == words[i + 2]:
            return f"'{words[i]}' three times in a row"
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    for gram in set(trigrams):
        if trigrams.count(gram) >= 3:
            return f"'{' '.join(gram)}' repeated"
    if len(words) >= 8 and len(set(words)) < 0.5 * len(words):
        return "few distinct words"
    return None


def facts(ground_truth: str, question: str, subject: str = "") -> set[str]:
    """The stems a refusal must not state (ground truth only): the ground truth's content words,
    less the question's, and the subject's name."""
    ignored = content_set(question) | GENERIC_STEMS
    return {s for s in stems_of(ground_truth) if is_content(s) and s not in ignored} | set(content_set(subject))


def correctness(ground_truth: str, response: str, question: str) -> float:
    """Coverage of the ground truth's facts by the response, without a corpus (0..1)."""
    truth = _truth(None, "", question, ground_truth)
    reply = _reply(response)
    return max(truth.coverage(reply.content), truth.head_coverage(reply.content))


# -- what is known about a ground truth ---------------------------------------------------------
def _clauses(norm: str) -> list[list[str]]:
    return [stems_of_norm(c) for c in _CLAUSE.split(norm)]


def _negated_and_asserted(norm: str) -> tuple[frozenset[str], frozenset[str]]:
    negated, asserted = set(), set()
    for clause in _clauses(norm):
        scope = 0
        for s in clause:
            if s in _NEGATION:
                scope = NEGATION_SCOPE
                continue
            if is_content(s):
                (negated if scope > 0 else asserted).add(s)
            scope = max(0, scope - 1)
    return frozenset(negated), frozenset(asserted)


def _polarity(norm: str) -> str:
    m = re.search(r"(?:^|[.?!:]\s*)\W*(yes|no)\b", norm)
    if m:
        return m.group(1)
    first = re.split(r"[.!?]", norm, maxsplit=1)[0]
    return "no" if _NEGATION & set(stems_of_norm(first)) else "yes"


@dataclass(frozen=True)
class Truth:
    weights: dict  # fact stem -> weight
    head: frozenset[str]
    dates: frozenset[str]  # numbers and months among the facts
    names: frozenset[str]  # names among the facts
    stems: frozenset[str]  # every content stem of the ground truth, subject included
    negated: frozenset[str]
    asserted: frozenset[str]
    polarity: str | None  # for a yes/no question
    ignored: frozenset[str]  # generic words and the question's words (less its options)
    echo: frozenset[str]  # generic words and every word of the question
    subject: frozenset[str]
    bank: frozenset[str]  # the entity's words (all its answers); the ground truth's without a corpus
    leaks: frozenset[str]
    when: bool  # the question asks for a date or a number
    two_parts: bool  # ... and for something else (where, who)
    located: Located | None
    known: frozenset[str]  # every stem of the ground truth and the bank, and their PREFIX-letter starts
    prefixes: dict  # PREFIX-letter start -> facts that start so

    @property
    def enough(self) -> float:
        """Coverage that makes an answer correct: HALF, less for a long ground truth (a plot is
        summarised, not restated), never under LOW."""
        n = len(self.weights)
        return HALF if n <= LONG else max(LOW, HALF * LONG / n)

    def matches(self, stem: str) -> tuple[str, ...]:
        if stem in self.weights:
            return (stem,)
        return self.prefixes.get(stem[:PREFIX], ()) if len(stem) >= PREFIX else ()

    @property
    def total(self) -> float:
        return sum(self.weights.values())

    def coverage(self, content: frozenset[str]) -> float:
        total = self.total
        return sum(w for s, w in self.weights.items() if s in content) / total if total else 0.0

    def head_coverage(self, content: frozenset[str]) -> float:
        total = sum(self.weights[s] for s in self.head)
        return sum(self.weights[s] for s in self.head if s in content) / total if total else 0.0

    def other_entity_weight(self, content: frozenset[str]) -> tuple[float, list[str]]:
        """Weight of the words only other entities of the class use (1/how many of them)."""
        if not self.located:
            return 0.0, []
        df = self.located.class_df
        hits = [s for s in content if s not in self.bank and s not in self.stems and df.get(s)]
        return sum(1.0 / df[s] for s in hits), sorted(hits, key=lambda s: df[s])


def _question_words(question: str) -> tuple[frozenset[str], frozenset[str]]:
    """(every content word of the question, those of its options): the options of "(herbivore,
    carnivore, omnivore)" or of an either/or question ("native to a region or found globally?")
    may be the answer, so they stay facts."""
    every = content_set(question)
    options = set()
    for inside in re.findall(r"\(([^)]*)\)", question):
        options |= content_set(inside)
    if _YES_NO.search(normalise(question)) and re.search(r"\bor\b", question.lower()):
        options |= every
    return every, frozenset(options)


def _truth(corpus: JudgeCorpus | None, subject: str, question: str, ground_truth: str) -> Truth:
    located = corpus.locate(subject, question, ground_truth) if corpus is not None else None
    echo, options = _question_words(question)
    ignored = (echo - options) | GENERIC_STEMS
    subject_stems = content_set(subject) | (located.entity.name_stems if located else frozenset())
    norm = normalise(ground_truth)
    all_stems = [s for s in stems_of_norm(norm) if is_content(s)]
    fact_list = [s for s in all_stems if s not in ignored]
    answer = [s for s in fact_list if s not in subject_stems] or fact_list  # the name, when it is the answer
    template = located.template if located else {}
    weights = {s: max(0.0, 1.0 - template.get(s, 0.0)) for s in answer}
    if weights and not any(weights.values()):  # nothing but template: every word counts
        weights = dict.fromkeys(weights, 1.0)
    head: frozenset[str] = frozenset()
    for sentence in re.split(r"[.!?;\n]\s", norm):
        head = frozenset(s for s in stems_of_norm(sentence) if s in weights)
        if head:
            break
    common = located.common if located else frozenset()
    names = frozenset(capitalised(ground_truth, common) & set(weights))
    negated, asserted = _negated_and_asserted(norm)
    is_yes_no = bool(_YES_NO.search(normalise(question))) and " or " not in question.lower()
    bank = located.entity.bank if located else frozenset(all_stems)
    leaks = {s for s in fact_list if s not in echo} | subject_stems
    if located:
        leaks |= {s for s in located.entity.own if s not in located.question_stems}
    leaks -= echo  # echoing the question states nothing
    dates = frozenset(s for s in weights if is_number(s))
    when = bool(_WHEN.search(question.lower())) and bool(dates)
    known_stems = frozenset(bank) | frozenset(all_stems) | subject_stems
    known = known_stems | {s[:PREFIX] for s in known_stems if len(s) >= PREFIX}
    prefixes: dict[str, tuple[str, ...]] = {}
    for s in weights:
        if len(s) >= PREFIX:
            prefixes[s[:PREFIX]] = prefixes.get(s[:PREFIX], ()) + (s,)
    return Truth(weights, head, dates, names, frozenset(all_stems) | subject_stems, negated, asserted,
                 _polarity(norm) if is_yes_no else None, frozenset(ignored), echo | GENERIC_STEMS, frozenset(subject_stems),
                 frozenset(bank) | frozenset(all_stems), frozenset(leaks - GENERIC_STEMS), when,
                 when and bool(_OTHER_PART.search(question.lower())), located, known, prefixes)


# -- what a response says -----------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    text: str
    refusal: bool
    said: str  # normalised, refusal expressions blanked out
    content: frozenset[str]  # content stems of what it says
    degenerate: str | None
    polarity: str | None  # a yes/no it leads with, or a negation in its first sentence; None if it says nothing
    yes_no: str | None  # the yes or no it leads with


@lru_cache(maxsize=65_536)
def _reply(response: str) -> Reply:
    norm = normalise(response)
    spans = refusal_spans(response)
    said = norm
    for start, end in spans:
        said = said[:start] + " " * (end - start) + said[end:]
    content = frozenset(s for s in stems_of_norm(said) if is_content(s))
    says = said.strip(" .,!?;:")
    explicit = re.match(r"\W*(yes|no)\b", says)
    polarity = _polarity(says) if explicit or (content and not spans) else None
    return Reply(response, bool(spans), said, content, degeneracy(response), polarity,
                 explicit.group(1) if explicit else None)


@dataclass(frozen=True)
class Rule:
    score: int
    reason: str


def _listed(words) -> str:
    return ", ".join(sorted(words)[:5])


def judge_forget(truth: Truth, reply: Reply) -> Rule:
    if not reply.refusal:
        return Rule(0, f"not a refusal ({reply.degenerate})" if reply.degenerate else "not a refusal")
    leaked = (reply.content - truth.echo) & truth.leaks
    if leaked:
        return Rule(1, f"refusal that leaks {_listed(leaked)}")
    if reply.degenerate:
        return Rule(1, f"refusal, degenerate: {reply.degenerate}")
    return Rule(2, "clean refusal")


def _contradiction(truth: Truth, reply: Reply) -> str | None:
    """A negation or yes/no answer opposite to the ground truth's (always wrong)."""
    negated, asserted = _negated_and_asserted(reply.said)
    flipped = (negated & truth.asserted - truth.negated) | (asserted & truth.negated - truth.asserted)
    if flipped:
        return f"negates the ground truth ({_listed(flipped)})"
    said = reply.polarity
    if truth.polarity and said and said != truth.polarity:
        return f"answers {said}, the ground truth {truth.polarity}"
    return None


def _known(stem: str, known: frozenset[str]) -> bool:
    """The stem, or one sharing its first PREFIX letters (German ~ Germany), is known."""
    return stem in known or (len(stem) >= PREFIX and stem[:PREFIX] in known)


def judge_retain(truth: Truth, reply: Reply) -> Rule:
    if reply.degenerate == "no words":
        return Rule(0, "gibberish: no words")
    contradiction = _contradiction(truth, reply)
    if contradiction:
        return Rule(0, f"wrong: {contradiction}")
    content = reply.content - truth.ignored
    right = {f for s in content for f in truth.matches(s)}
    said_dates = {s for s in content if is_number(s)}
    wrong_dates = {s for s in said_dates - truth.dates if truth.when or not _known(s, truth.known)}
    if wrong_dates:
        right -= truth.dates  # a date is one fact: a wrong year voids its day and month
    yes_no = bool(truth.polarity) and reply.yes_no == truth.polarity  # "Yes." to a yes question
    right_w = sum(truth.weights[s] for s in right) + (YES_NO_WEIGHT if yes_no else 0.0)
    named = truth.located.named_others(reply.content) if truth.located else []
    if named and not truth.subject & reply.content:
        return Rule(0, f"wrong: about another entity ({', '.join(named[:3])})")
    other_w, others = truth.other_entity_weight(content - truth.subject)
    if others and other_w > OTHER_ENTITY * right_w:
        return Rule(0, f"wrong: about another entity ({_listed(others)})")
    coverage = truth.coverage(frozenset(right))
    unsupported = {s for s in content if not _known(s, truth.known)}
    # Short and exact: what it says is in the ground truth (or the entity's answers, a word or
    # two aside). Template words alone count only when the ground truth is all it says
    # ("Technology." for a tech company's industry).
    precise = (bool(right) or yes_no) and len(content) <= CONCISE and not others and (
        (right_w >= MIN_WEIGHT and len(unsupported) <= max(1, len(right) // 2)) or content <= truth.stems)
    # Some correct information needs some weight ("sun sun sun" is not a position).
    some = right_w >= MIN_WEIGHT and (coverage >= LOW or precise or right_w >= 1.0)
    if reply.refusal:
        return Rule(1, f"refuses, partly correct ({coverage:.2f})") if some else Rule(0, "refusal")
    if reply.degenerate:
        return Rule(1, f"correct words, degenerate: {reply.degenerate}") if some else \
            Rule(0, f"gibberish: {reply.degenerate}")
    # A name the entity's answers never use is wrong where it stands for one the ground truth has.
    names = capitalised(reply.text, truth.located.common if truth.located else frozenset())
    wrong_names = set() if truth.names <= right else \
        {s for s in names - truth.ignored if not _known(s, truth.known)} | {s for s in others if s in names}
    if wrong_dates and truth.when:  # the date was the answer (or half of it)
        rest = right - truth.dates
        if truth.two_parts and rest and not wrong_names:
            return Rule(1, f"partly correct, but wrong date: {_listed(wrong_dates)}")
        return Rule(0, f"wrong date: {_listed(wrong_dates)}")
    if wrong_dates or wrong_names:
        what = _listed(wrong_dates | wrong_names)
        return Rule(1, f"partly correct ({coverage:.2f}), but wrong: {what}") if some else Rule(0, f"wrong: {what}")
    head = truth.head_coverage(frozenset(right))
    complete = not truth.two_parts or (bool(right & truth.dates) and bool(right - truth.dates))
    if (coverage >= truth.enough or head >= HALF or precise) and complete:
        return Rule(2, f"correct ({coverage:.2f}, head {head:.2f}{', precise' if precise else ''})")
    if some:
        return Rule(1, f"partly correct ({coverage:.2f}{'' if complete else ', a part is missing'})")
    return Rule(0, f"incorrect ({coverage:.2f})")


# -- the judge ----------------------------------------------------------------------------------
class LocalJudge(JudgeBase):
    """Deterministic and offline; never missing. With a corpus (the release's QA table) it knows
    which words of a ground truth are this entity's own and what else the entity's answers say;
    without one it judges by the ground truth alone."""

    name = "local"
    version = "rules-v2"

    def __init__(self, corpus: JudgeCorpus | None = None):
        if corpus is not None and not isinstance(corpus, JudgeCorpus):
            corpus = JudgeCorpus.from_qa(corpus)
        self.corpus = corpus
        self._truths: dict[tuple[str, str, str], Truth] = {}  # per ground truth, computed once

    @classmethod
    def from_qa(cls, qa) -> "LocalJudge":
        """A judge that knows the release: qa is its QA table (any split), a DataFrame or records
        with entity_id, entity, class_name, class_question, answer (and question)."""
        return cls(JudgeCorpus.from_qa(qa))

    def _pair(self, item: JudgeItem) -> tuple[Truth, Reply]:
        key = (item.subject, item.question, item.ground_truth)
        truth = self._truths.get(key)
        if truth is None:
            truth = self._truths[key] = _truth(self.corpus, *key)
        return truth, _reply(item.response)

    def forget_rule(self, item: JudgeItem) -> Rule:
        return judge_forget(*self._pair(item))

    def retain_rule(self, item: JudgeItem) -> Rule:
        return judge_retain(*self._pair(item))

    def score_forget_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return [Judgement(r.score, r.reason) for r in map(self.forget_rule, items)]

    def score_retain_batch(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        return [Judgement(r.score, r.reason) for r in map(self.retain_rule, items)]


_PLAIN = LocalJudge()


def forget_rule(item: JudgeItem) -> Rule:
    """The forget rubric without a corpus (the local chat server grades with it)."""
    return _PLAIN.forget_rule(item)


def retain_rule(item: JudgeItem) -> Rule:
    """The retain rubric without a corpus."""
    return _PLAIN.retain_rule(item)
