"""Length-bucketed batching: group texts of similar length so padding work stays small."""

from __future__ import annotations

import numpy as np


def bucket_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Split row positions into batches of similar length.

    Rows are sorted by length (stable, ties by position) and cut into batches of
    ``batch_size``; with ``rng`` the batch order is shuffled (training), without it the
    batches come shortest first (scoring, evaluation). Returns index arrays into ``lengths``.
    """
    order = np.argsort(lengths, kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches

