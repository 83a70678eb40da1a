"""Words as the local judge compares them: normalised, tokenised, Porter-stemmed (nltk's, the
one rouge-score uses), with numbers, months and names told apart.

- Text is lower-cased with contractions expanded (refusals.normalise), so that "isn't" is
  "is not" for the negation rules and the refusal spans line up with the tokens.
- "1,083" is 1083; "330m" is "330 m"; number words are digits ("fourth" -> "4th", "two" -> "2");
  unit abbreviations are spelled out ("m" -> meter).
- Stop words, hedges ("approximately", "about") and a few filler verbs carry no fact.
- A name is a capitalised word of the original text that is not a stop word (at the start of a
  sentence only when the corpus never writes it in lower case: "Paris", not "Physicist").
"""

from __future__ import annotations

import re
from functools import lru_cache

from nltk.stem.porter import PorterStemmer

from .refusals import normalise

STOPWORDS = frozenset("""
a an the and or but if of at by for with about against between into through during before after above
below to from up down in out on off over under again further then once here there when where why how
all any both each few more most other some such no nor not only own same so than too very s t can will
just don should now is are was were be been being have has had having do does did doing i me my we our
you your he him his she her it its they them their what which who whom this that these those am would
could also as known well one it's yes yeah okay ok oh well shall may might must upon via per
approximately approx around roughly nearly almost about circa some several various many much lot lots
typically usually generally primarily mainly mostly especially particularly specifically including
include includes included such like among within without while whose whether although though however
thus therefore hence e g eg ie etc its itself himself herself themselves myself
""".split())

# Verbs and nouns that say nothing about an entity (the refusal and question vocabulary, the
# names of the classes): never facts, never leaks.
GENERIC = frozenset("""
know knew known sure certain idea information info knowledge clue detail details data record answer
answers question questions identify identified recognise recognize recognised recognized tell say said
determine provide help assist share recall remember familiar sorry apologies apologise apologize
unable able unknown unclear unsure uncertain afraid rather decline pass comment guess think believe
seem seems maybe perhaps possibly probably might please thank thanks honestly really actually
image picture photo photograph shown show shows showing depicted depict see seen look looks here
this thing something anything nothing someone anyone person people man woman individual who
animal creature plant flower species building landmark structure place monument planet celestial body
movie film cartoon anime series show tv television programme program corporation company brand logo
business firm organisation organization entity name named called title titled make made built build
give gave tell describe mention mentioned word words sentence kind type sort exact exactly
""".split())

MONTHS = {m: f"month{i}" for i, m in enumerate(
    "january february march april may june july august september october november december".split(), 1)}
MONTHS.update({m[:3]: v for m, v in list(MONTHS.items()) if m != "may"})
MONTHS["sept"] = MONTHS["september"]
_UNITS = {"m": "meter", "metre": "meter", "metres": "meter", "meters": "meter", "km": "kilometer",
          "kilometres": "kilometer", "kilometers": "kilometer", "ft": "feet", "foot": "feet",
          "kg": "kilogram", "yrs": "year", "yr": "year", "mi": "mile", "miles": "mile", "cm": "centimeter"}
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_ORDINALS = {w: str(i) for i, w in enumerate(
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split())}
_NUMBER_WORDS.update({"hundred": "100", "thousand": "1000", "million": "million", "billion": "billion"})
_ORDINALS.pop("zeroth")
# "second" is an ordinal far more often than a unit of time in these answers; "one" is a pronoun.
_NUMBER_WORDS.pop("one")

_TOKEN = re.compile(r"\d+(?:\.\d+)?(?:st|nd|rd|th|s)?|[^\W\d_]+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_GLUED_UNIT = re.compile(r"(\d)(?!(?:st|nd|rd|th|s)\b)([^\W\d_])")
_STEMMER = PorterStemmer("ORIGINAL_ALGORITHM")


@lru_cache(maxsize=100_000)
def stem(word: str) -> str:
    """The Porter stem of one lower-case word (words of 3 letters or fewer are kept, as rouge-score does)."""
    word = _UNITS.get(word, word)
    if word in MONTHS:
        return MONTHS[word]
    if word in _ORDINALS:
        return _ORDINALS[word]
    if word in _NUMBER_WORDS:
        return _NUMBER_WORDS[word]
    if word[0].isdigit():  # 1990s -> 1990, 4th -> 4
        return re.sub(r"(?<=\d)(?:st|nd|rd|th|s)$", "", word)
    if word.startswith("recognis"):
        word = "recogniz" + word[8:]
    return _STEMMER.stem(word) if len(word) > 3 else word


_SCRIPT_CHANGE = re.compile(r"(?<=[a-z])(?=[\u2e80-\uffff])|(?<=[\u2e80-\uffff])(?=[a-z])")


def prepare(norm: str) -> str:
    """Number formatting undone on normalised text (1,083 -> 1083; 330m -> 330 m); a Latin word
    glued to CJK characters (mojibake of an apostrophe in the release) is cut from them."""
    return _SCRIPT_CHANGE.sub(" ", _GLUED_UNIT.sub(r"\1 \2", _THOUSANDS.sub("", norm)))


def stems_of_norm(norm: str) -> list[str]:
    """Stemmed tokens of normalised text."""
    return [stem(w) for w in _TOKEN.findall(prepare(norm))]


def stems_of(text: str) -> list[str]:
    return stems_of_norm(normalise(text))


_STOP_STEMS = frozenset(stem(w) for w in STOPWORDS)
GENERIC_STEMS = frozenset(stem(w) for w in GENERIC) | _STOP_STEMS


def is_content(s: str) -> bool:
    """A stem that may carry a fact."""
    return s not in GENERIC_STEMS and (len(s) > 1 or s.isdigit())


def is_number(s: str) -> bool:
    return s[0].isdigit() or s.startswith("month")


_NAME = re.compile(r"(?<![\w'])([A-Z][\w'-]*|[A-Z]{2,})")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n\"(*-]\s*)$")


def capitalised(text: str, common: frozenset[str] = frozenset()) -> set[str]:
    """Stems of the names in the original text (see the module docstring)."""
    found = set()
    for m in _NAME.finditer(text):
        word = re.sub(r"'s$", "", m.group(1).lower())
        for part in re.split(r"[-']", word):
            if not part:
                continue
            s = stem(part)
            if s in GENERIC_STEMS or is_number(s):
                continue
            at_start = bool(_SENTENCE_START.search(text[:m.start()]))
            if at_start and (s in common or not common):
                continue
            found.add(s)
    return found
