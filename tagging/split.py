"""Deterministic multi-label split by iterative stratification (iterative-stratification)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit


def split_ids(
    ids: Sequence[str], y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, str]:
    """Assign each id to "train", "val" or "test", stratified on the multi-hot ``y``.

    Rows are first sorted by id, so the result depends only on (ids, labels, seed), never on
    the order rows arrived in.
    """
    ids = np.asarray(ids, dtype=object)
    order = np.argsort(ids.astype(str), kind="stable")
    ids, y = ids[order], np.asarray(y)[order]
    if len(ids) < 10:
        raise ValueError(f"too few labeled rows to split ({len(ids)}); need at least 10")
    outer = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
    rest, test = next(outer.split(np.zeros(len(ids)), y))
    inner = MultilabelStratifiedShuffleSplit(
        n_splits=1, test_size=val_fraction / (1 - test_fraction), random_state=seed + 1
    )
    train_rel, val_rel = next(inner.split(np.zeros(len(rest)), y[rest]))
    out = {str(i): "test" for i in ids[test]}
    out.update({str(i): "val" for i in ids[rest[val_rel]]})
    out.update({str(i): "train" for i in ids[rest[train_rel]]})
    return out
