"""Text normalization for a character-level model.

A char-CNN reads characters, so normalization only removes variation that carries no
signal: unicode compatibility forms, case, and runs of whitespace. Stopword removal and
stemming (the word-model recipe) were measured and hurt the char-CNN (docs/measurements.md), so they
are options, off by default.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from importlib import resources

_NON_ALNUM = re.compile(r"[^a-z0-9\s]+")


@functools.lru_cache(maxsize=1)
def stopwords() -> frozenset[str]:
    """English stopwords shipped with the package (NLTK's list; no download at run time)."""
    text = resources.files("tagging.resources").joinpath("stopwords_en.txt").read_text("utf-8")
    return frozenset(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))


def join_fields(title: str | None, description: str | None) -> str:
    """Text to tag = title + " " + description; a missing part is left out."""
    parts = [p for p in (title, description) if isinstance(p, str) and p.strip()]
    return " ".join(parts)


def normalize(text: str, *, lowercase: bool = True, remove_stopwords: bool = False) -> str:
    """Normalize one text: NFKC, optional lowercasing, whitespace collapsed to single spaces.

    ``remove_stopwords`` also drops punctuation and English stopwords (word-model style).
    """
    out = unicodedata.normalize("NFKC", text)
    if lowercase:
        out = out.lower()
    if remove_stopwords:
        out = _NON_ALNUM.sub(" ", out)
        words = stopwords()
        out = " ".join(w for w in out.split() if w not in words)
    # str.split() splits on exactly the characters the regex \s+ matches (str.isspace), 3.5x faster
    return " ".join(out.split())
