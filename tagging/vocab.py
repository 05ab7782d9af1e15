"""Character vocabulary and encoding: text -> int64 ids, 0 = PAD, 1 = UNK."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

PAD_ID = 0
UNK_ID = 1


@dataclass(frozen=True)
class CharVocab:
    """Characters ordered by (descending count, char); ids start at 2 after PAD and UNK."""

    chars: tuple[str, ...]

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None) -> "CharVocab":
        return cls.from_counts(count_chars(texts), min_count=min_count, max_size=max_size)

    @classmethod
    def from_counts(cls, counts: Counter, min_count: int = 1, max_size: int | None = None) -> "CharVocab":
        items = sorted(((c, n) for c, n in counts.items() if n >= min_count), key=lambda cn: (-cn[1], cn[0]))
        if max_size is not None:
            items = items[:max_size]
        return cls(chars=tuple(c for c, _ in items))

    @property
    def size(self) -> int:
        """Embedding rows needed: PAD + UNK + chars."""
        return len(self.chars) + 2

    def __getstate__(self) -> dict:
        return {"chars": self.chars}  # the lookup table is rebuilt, not shipped to Ray workers

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "chars", state["chars"])

    def table(self) -> np.ndarray:
        """Dense code point -> id table (int64 [0x110000]); code point 0 maps to PAD."""
        table = getattr(self, "_table", None)
        if table is None:
            table = np.full(0x110000, UNK_ID, dtype=np.int64)
            table[0] = PAD_ID
            for i, c in enumerate(self.chars):
                table[ord(c)] = i + 2
            object.__setattr__(self, "_table", table)  # cache on the frozen instance
        return table

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Encode texts to ids, vectorized through a UTF-32 view of the texts.

        Returns ``ids``: int64 [len(texts), L] with L = min(max_length, longest text), 0 = PAD,
        and ``lengths``: int64 [len(texts)], the untruncated character counts (a length over
        max_length means the text was truncated).
        """
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        width = max(1, int(min(max_length, lengths.max(initial=1))))
        if len(texts) == 0:
            return np.zeros((0, width), dtype=np.int64), lengths
        codes = np.array(texts, dtype=f"<U{width}").view(np.uint32).reshape(len(texts), width)
        return self.table()[codes], lengths
    def to_json(self) -> dict:
        return {"pad_id": PAD_ID, "unk_id": UNK_ID, "chars": list(self.chars)}

    @classmethod
    def from_json(cls, data: dict) -> "CharVocab":
        if data.get("pad_id") != PAD_ID or data.get("unk_id") != UNK_ID:
            raise ValueError("vocabulary uses different PAD/UNK ids than this version of tagging")
        return cls(chars=tuple(data["chars"]))


def count_chars(texts: Iterable[str]) -> Counter:
    """Character counts over texts (mergeable across shards with ``+``)."""
    counts: Counter = Counter()
    for t in texts:
        counts.update(t)
    return counts
