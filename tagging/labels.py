"""Label space: tag parsing, alias normalization, parent expansion, multi-hot encoding.

Label order is always sorted, so an index means the same tag in every run and artifact.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


class TagParseError(ValueError):
    """A row's tags value cannot be read as a list of tags."""


def parse_tags(value: object, delimiter: str = ",") -> list[str]:
    """Read a tags cell as a list of tag strings.

    Accepts a list/tuple/array of strings, a JSON list string ('["a", "b"]'), or a delimited
    string ("a,b"). Raises TagParseError for anything else (numbers, malformed JSON lists,
    non-string elements) so the row can be rejected with a reason.
    """
    if value is None:
        raise TagParseError("tags missing")
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                items = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise TagParseError(f"tags not a valid JSON list: {exc.msg}") from None
            if not isinstance(items, list):
                raise TagParseError("tags JSON is not a list")
        elif stripped.startswith("{"):
            raise TagParseError("tags given as a JSON object (expected a list)")
        elif stripped == "":
            items = []
        else:
            items = stripped.split(delimiter)
    else:
        raise TagParseError(f"tags of type {type(value).__name__} (expected list or string)")
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TagParseError(f"tag of type {type(item).__name__} (expected string)")
        tag = item.strip().lower()
        if tag:
            out.append(tag)
    return out


@dataclass(frozen=True)
class TagIndex:
    """Aliases and parents from a tags file (a JSON array of {tag, aliases, parents})."""

    alias_to_tag: Mapping[str, str] = field(default_factory=dict)
    parents: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[Mapping]) -> "TagIndex":
        alias_to_tag: dict[str, str] = {}
        parents: dict[str, tuple[str, ...]] = {}
        for rec in records:
            tag = str(rec["tag"]).strip().lower()
            alias_to_tag[tag] = tag
            for alias in rec.get("aliases", []) or []:
                alias_to_tag.setdefault(str(alias).strip().lower(), tag)
            parents[tag] = tuple(sorted(str(p).strip().lower() for p in rec.get("parents", []) or []))
        return cls(alias_to_tag=alias_to_tag, parents=parents)

    def canonical(self, tags: Iterable[str], expand_parents: bool = False) -> list[str]:
        """Map aliases to their tag and, optionally, add every ancestor; sorted and unique."""
        out: set[str] = set()
        stack = [self.alias_to_tag.get(t, t) for t in tags]
        while stack:
            tag = stack.pop()
            if tag in out:
                continue
            out.add(tag)
            if expand_parents:
                stack.extend(self.parents.get(tag, ()))
        return sorted(out)


def labels_from_frequency(tag_lists: Iterable[Sequence[str]], min_freq: int) -> list[str]:
    """Every tag that occurs in at least ``min_freq`` rows, sorted."""
    counts = Counter(t for tags in tag_lists for t in set(tags))
    return sorted(t for t, c in counts.items() if c >= min_freq)


def read_labels_file(text: str) -> list[str]:
    """A labels file: one tag a line; blank lines and '#' comments ignored; sorted, unique."""
    tags = {line.strip().lower() for line in text.splitlines()}
    return sorted(t for t in tags if t and not t.startswith("#"))


@dataclass(frozen=True)
class LabelSpace:
    """The ordered tags a model predicts (sorted; index i = output i)."""

    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if list(self.labels) != sorted(set(self.labels)):
            raise ValueError("labels must be sorted and unique")
        if not self.labels:
            raise ValueError("the label space is empty")

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, tag_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Multi-hot float32 [rows, num_labels]; tags outside the space are ignored."""
        index = {t: i for i, t in enumerate(self.labels)}
        y = np.zeros((len(tag_lists), len(self.labels)), dtype=np.float32)
        for row, tags in enumerate(tag_lists):
            for t in tags:
                i = index.get(t)
                if i is not None:
                    y[row, i] = 1.0
        return y

    def decode(self, mask_row: np.ndarray) -> list[str]:
        """Tags whose entry is true in a boolean [num_labels] row."""
        return [self.labels[i] for i in np.flatnonzero(mask_row)]
