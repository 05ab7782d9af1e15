"""Training-time augmentation for the char-CNN (Ray-free, pure functions of their inputs).

Concatenation: a training text joined with a random other one, labelled with the union of
their tags. The model max-pools each filter over positions, so the features of "A B" are
(up to the few windows across the join) the element-wise max of the features of A and B: the
augmented row asks every n-gram detector to keep its evidence when other text is around it,
which is what a multi-label tagger must do. Measured on the real data (3 seeds each, see
docs/measurements.md): validation weighted F1 0.686 -> 0.726, test 0.644 -> 0.667 with one extra
concatenated row per training row and epoch. Word dropout, random crops and character noise
did not help there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def concat_pairs(texts: Sequence[str], y: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """``rate`` x len(texts) extra rows (on average): text i + " " + a random text j, tags i | j.

    The integer part of ``rate`` gives that many extra rows per text, the fraction one more
    for a random subset. Returns only the extra rows (texts, float32 targets).
    """
    n = len(texts)
    if n == 0 or rate <= 0:
        return [], np.zeros((0,) + tuple(np.shape(y)[1:]), dtype=np.float32)
    whole, frac = int(rate), rate - int(rate)
    first = np.concatenate([np.tile(np.arange(n), whole), np.flatnonzero(rng.random(n) < frac)]).astype(np.int64)
    second = rng.integers(0, n, len(first))
    extra = [f"{texts[i]} {texts[j]}" for i, j in zip(first, second)]
    y = np.asarray(y, dtype=np.float32)
    return extra, np.maximum(y[first], y[second])


def with_concat(texts: Sequence[str], y: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """The rows followed by their ``concat_pairs`` (the identity for ``rate`` 0)."""
    extra, ey = concat_pairs(texts, y, rate, rng)
    if not extra:
        return list(texts), np.asarray(y, dtype=np.float32)
    return list(texts) + extra, np.concatenate([np.asarray(y, dtype=np.float32), ey])


def alias_table(index, labels, normalize_fn) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """(surface forms, label positions) for every tag of a tags file that reaches the label space.

    A tag's surface forms are its name (dashes as spaces) and its aliases, normalized like the
    training texts; its labels are the tag and all its ancestors that are in the label space (in
    the real data a child tag's parent is always tagged too). Sorted by tag: deterministic.
    """
    pos = {tag: i for i, tag in enumerate(labels.labels)}
    forms: dict[str, set[str]] = {}
    for alias, tag in index.alias_to_tag.items():
        forms.setdefault(tag, set()).update({tag.replace("-", " "), alias})
    out = []
    for tag in sorted(forms):
        hits = tuple(sorted(pos[t] for t in index.canonical([tag], expand_parents=True) if t in pos))
        clean = tuple(sorted({f for f in (normalize_fn(x) for x in forms[tag]) if f}))
        if hits and clean:
            out.append((clean, hits))
    return out


def alias_examples(table: Sequence[tuple[Sequence[str], Sequence[int]]], num_labels: int, rng: np.random.Generator,
                   rank: int = 0, world: int = 1) -> tuple[list[str], np.ndarray]:
    """One short example per tag of ``table`` (this rank's share: entries ``rank::world``): a
    random surface form, labelled with the tag's labels. Teaches the names the tags file knows
    ("tf.js", "pyg", "yolo") that the training rows may never spell out."""
    mine = list(table)[rank::world]
    texts = [forms[int(rng.integers(len(forms)))] for forms, _ in mine]
    y = np.zeros((len(mine), num_labels), dtype=np.float32)
    for row, (_, hits) in enumerate(mine):
        y[row, list(hits)] = 1.0
    return texts, y


def alias_table_for(cfg, labels) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """``alias_table`` of a TrainConfig's tags file (empty unless ``cfg.alias_examples``, which
    defaults to on when a tags file is given)."""
    if not cfg.alias_examples:
        return []
    from tagging.readers import load_tag_index
    from tagging.text import normalize

    index = load_tag_index(cfg.data.tags_file)
    d = cfg.data
    return alias_table(index, labels, lambda t: normalize(t, lowercase=d.lowercase, remove_stopwords=d.remove_stopwords))
