"""Length-bucketed batching: group texts of similar length so padding work stays small."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

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


def iter_bucketed(
    chunks: Iterator[dict], batch_size: int, rng: np.random.Generator | None = None
) -> Iterator[dict]:
    """Re-batch a stream of column dicts (each a chunk of many rows) into length buckets.

    Each chunk must hold a ``length`` column; every other column is indexed alike.
    """
    for chunk in chunks:
        lengths = np.asarray(chunk["length"])
        for idx in bucket_order(lengths, batch_size, rng):
            yield {k: _take(v, idx) for k, v in chunk.items()}


def _take(values: Sequence | np.ndarray, idx: np.ndarray):
    if isinstance(values, np.ndarray):
        return values[idx]
    return [values[i] for i in idx]
