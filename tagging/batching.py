"""Texts -> padded id batches: length bucketing, padding to few shapes, batched prediction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tagging.vocab import CharVocab

# Batches are padded up to a multiple of this many characters. PyTorch's CPU convolutions
# (oneDNN) build a kernel per input shape; with a new length in every batch that set-up cost
# dominated a step (1 thread, batch 16: 80 -> 150 samples/s with the padding). The max-pool
# ignores padding, so scores do not change.
SHAPE_MULTIPLE = 32


@dataclass
class Batch:
    ids: torch.Tensor  # int64 [batch, length], 0 = PAD
    y: torch.Tensor | None  # float32 [batch, labels]


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


def exact_length_order(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split row positions into batches of rows of one length each (at most ``batch_size``),
    shortest first, ties by position: batches without padding, for an ``unpadded`` model."""
    order = np.argsort(lengths, kind="stable")
    cuts = np.flatnonzero(np.diff(lengths[order])) + 1
    return [part[i : i + batch_size] for part in np.split(order, cuts) for i in range(0, len(part), batch_size)]


def encode_batch(texts: Sequence[str], vocab: CharVocab, max_length: int, multiple: int = SHAPE_MULTIPLE) -> torch.Tensor:
    """int64 [len(texts), width] ids, width the longest text (at most ``max_length``) rounded up to ``multiple``."""
    ids, _ = vocab.encode(texts, max_length)
    width = ids.shape[1]
    padded = min(max_length, -(-width // multiple) * multiple)
    if padded > width:
        ids = np.pad(ids, ((0, 0), (0, padded - width)))
    return torch.from_numpy(ids)


@torch.no_grad()
def predict_probs(model: nn.Module, batches: Iterable[Batch], device: torch.device | str = "cpu") -> np.ndarray:
    """Sigmoid probabilities float32 [rows, labels] in batch order."""
    model.eval()
    out = [torch.sigmoid(model(b.ids.to(device)).float()).cpu().numpy() for b in batches]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_texts(model: nn.Module, texts: Sequence[str], vocab: CharVocab, max_length: int, batch_size: int = 256,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Probabilities float32 [len(texts), labels] for texts in their given order (length-bucketed internally)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    batches = bucket_order(lengths, batch_size, None)
    order = np.concatenate(batches) if len(texts) else np.zeros(0, dtype=np.int64)
    probs = predict_probs(model, (Batch(encode_batch([texts[i] for i in idx], vocab, max_length), None) for idx in batches), device)
    out = np.empty_like(probs)
    out[order] = probs
    return out
