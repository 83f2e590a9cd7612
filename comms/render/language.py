"""English left in a Spanish or Haitian Creole text.

Word lists, not a statistical identifier: a message is a few sentences of district vocabulary, where
a model trained on web text (langid, fastText) guesses at two or three words and is not reproducible
across its versions. Here a sentence is English when it holds two different words from ENGLISH below:
function words and the district's own vocabulary that are not also Spanish or Creole words ("a", "no",
"me", "an", "men", "do", "plan", "media", "social", "portal" are left out for that reason). Names that
no language translates (the config's `names`, the glossary's untranslated terms, roster and event
names) are masked first. Its error rate on the project's own templates is measured by
tests/test_language_check.py and stated in the README.

What it cannot see: one English word alone in a long sentence ("Free" before a Spanish phrase), and
English words that are also Spanish or Creole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ENGLISH = frozenset(
    [
        "the",
        "and",
        "of",
        "your",
        "you",
        "will",
        "is",
        "are",
        "with",
        "this",
        "that",
        "have",
        "for",
        "from",
        "to",
        "be",
        "by",
        "on",
        "at",
        "in",
        "we",
        "our",
        "their",
        "they",
        "it",
        "please",
        "about",
        "more",
        "who",
        "what",
        "when",
        "where",
        "which",
        "whether",
        "been",
        "was",
        "were",
        "being",
        "does",
        "did",
        "had",
        "get",
        "use",
        "uses",
        "join",
        "see",
        "check",
        "every",
        "all",
        "new",
        "most",
        "up",
        "would",
        "can",
        "may",
        "must",
        "should",
        "not",
        "yes",
        "if",
        "or",
        "but",
        "than",
        "then",
        "there",
        "here",
        "these",
        "those",
        "how",
        "why",
        "today",
        "tomorrow",
        "day",
        "days",
        "week",
        "through",
        "until",
        "starting",
        "beginning",
        "instead",
        "reply",
        "help",
        "call",
        "office",
        "communications",
        "public",
        "county",
        "superintendent",
        "schools",
        "school",
        "student",
        "students",
        "family",
        "families",
        "children",
        "child",
        "free",
        "meals",
        "breakfast",
        "lunch",
        "grades",
        "grade",
        "attendance",
        "absences",
        "view",
        "follow",
        "download",
        "information",
        "device",
        "mobile",
        "questions",
        "only",
        "technical",
        "contact",
        "draft",
        "release",
        "immediate",
        "dear",
        "how",
        "notice",
        "text",
        "message",
        "live",
        "classes",
        "program",
        "waiver",
        "summer",
        "district",
        "platform",
        "will",
        "pick",
        "grab",
        "go",
    ]
)

_SENTENCES = re.compile(r"[.!?;:\n•]+")
_WORDS = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_SKIP = re.compile(r"https?://\S+|\S+@\S+|[@#]\w+")


def mask(text: str, names: Iterable[str]) -> str:
    """`text` with every name blanked (longest first, so "My School Online" goes before "School")."""
    for name in sorted({n for n in names if n}, key=len, reverse=True):
        text = text.replace(name, " ")
    return _SKIP.sub(" ", text)


def english_sentences(text: str, names: Iterable[str] = ()) -> list[str]:
    """The sentences of `text` that read as English, as they stand in `text` (names masked)."""
    out = []
    for sentence in _SENTENCES.split(mask(text, names)):
        hits = {w for w in _WORDS.findall(sentence.lower()) if w in ENGLISH}
        if len(hits) >= 2:
            out.append(" ".join(sentence.split()))
    return out
