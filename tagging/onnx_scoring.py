"""ONNX Runtime scoring of an artifact's model on normalized texts (Ray-free).

Used by the batch-scoring actors (serve_batch.stages), by ``bench-score``'s ceiling loop and by
``quantize``'s gate, so all of them run exactly the same encode -> session -> sigmoid ->
thresholds code. In-process PyTorch prediction is tagging.evaluation.Predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagging.artifact import Artifact
from tagging.batching import bucket_order
from tagging.export import session, sigmoid
from tagging.thresholds import apply_thresholds
from tagging.vocab import PAD_ID, UNK_ID

DEFAULT_BATCH_SIZE = 64  # 1-thread fp32 ONNX Runtime: 2,861 docs/s at 64 vs 2,518 at 256 (activations stay in cache)


@dataclass
class Scores:
    probs: np.ndarray  # float32 [rows, labels], rows in input order
    tags: np.ndarray  # bool [rows, labels]: apply_thresholds(probs, artifact thresholds)
    truncated: np.ndarray  # bool [rows]: text longer than the artifact's max_length
    chars: int = 0  # characters the model read (at most max_length per text)
    oov_chars: int = 0  # ... of which outside the vocabulary (UNK): the drift check's input


class OnnxScorer:
    """One ONNX Runtime session over an artifact's model (fp32 or its accepted int8 variant).

    ``threads`` is ONNX Runtime's intra-op thread count (the caller's CPUs); ``batch_size``
    rows of similar length are run together (length-bucketed: padding stays small).
    ``model_path`` overrides the artifact's file (quantize checks a model before storing it).
    Texts are normalized already (as the readers and ``Artifact.normalize`` return them).
    """

    def __init__(self, art: Artifact, precision: str = "fp32", threads: int = 1,
                 batch_size: int = DEFAULT_BATCH_SIZE, providers: Sequence[str] | None = None,
                 model_path: str | Path | None = None) -> None:
        self.art = art
        self.batch_size = int(batch_size)
        self.labels = list(art.labels.labels)
        art.vocab.table()  # build the code point table once, not on the first batch
        self.session = session(model_path or art.onnx_variant(precision), threads=threads, providers=providers)

    def encode_batches(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(row positions, ids int64 [batch, length]) per length bucket, shortest first."""
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        out = []
        for idx in bucket_order(lengths, self.batch_size, None):
            ids, _ = self.art.vocab.encode([texts[i] for i in idx], self.art.max_length)
            out.append((idx, ids))
        return out

    def run_ids(self, ids: np.ndarray) -> np.ndarray:
        """Probabilities float32 [batch, labels] for encoded ids."""
        return sigmoid(self.session.run(["logits"], {"ids": ids})[0])

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities float32 [rows, labels] for normalized texts, in their given order."""
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for idx, ids in self.encode_batches(texts):
            out[idx] = self.run_ids(ids)
        return out

    def score(self, texts: Sequence[str]) -> Scores:
        """Probabilities, tags, truncation, and how many characters read were out of the vocabulary."""
        probs = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        chars = oov = 0
        for idx, ids in self.encode_batches(texts):
            probs[idx] = self.run_ids(ids)
            chars += int(np.count_nonzero(ids != PAD_ID))
            oov += int(np.count_nonzero(ids == UNK_ID))
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        return Scores(probs, apply_thresholds(probs, self.art.thresholds), lengths > self.art.max_length, chars, oov)
