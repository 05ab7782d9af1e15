"""ONNX Runtime scoring of normalized texts, and the Arrow tables the job writes (Ray-free).

Used by the scoring actors, by ``bench-score``'s ceiling loop and by ``quantize``, so all of
them run exactly the same encode -> session -> sigmoid -> thresholds code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tagging.artifact import Artifact
from tagging.batching import bucket_order
from tagging.export import session, sigmoid
from tagging.thresholds import apply_thresholds

DEFAULT_BATCH_SIZE = 64  # 1-thread fp32 ONNX Runtime: 2,861 docs/s at 64 vs 2,518 at 256 (activations stay in cache)

SCORED_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("scores", pa.map_(pa.string(), pa.float32())),
    pa.field("model_version", pa.string()),
    pa.field("truncated", pa.bool_()),
    pa.field("source", pa.string()),
])
REJECTS_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("source", pa.string()),
    pa.field("raw", pa.string()),
])


@dataclass
class Scores:
    probs: np.ndarray  # float32 [rows, labels], rows in input order
    tags: np.ndarray  # bool [rows, labels]: apply_thresholds(probs, artifact thresholds)
    truncated: np.ndarray  # bool [rows]: text longer than the artifact's max_length


class OnnxScorer:
    """One ONNX Runtime session over an artifact's model (fp32 or its accepted int8 variant).

    ``threads`` is ONNX Runtime's intra-op thread count (the caller's CPUs); ``batch_size``
    rows of similar length are run together (length-bucketed: padding stays small).
    ``model_path`` overrides the artifact's file (quantize checks a model before storing it).
    """

    def __init__(self, art: Artifact, precision: str = "fp32", threads: int = 1,
                 batch_size: int = DEFAULT_BATCH_SIZE, providers: Sequence[str] | None = None,
                 model_path: str | Path | None = None) -> None:
        self.art = art
        self.precision = precision
        self.batch_size = int(batch_size)
        self.max_length = art.max_length
        self.labels = list(art.labels.labels)
        self.thresholds = art.thresholds
        self.vocab = art.vocab
        self.vocab.table()  # build the code point table once, not on the first batch
        self.session = session(model_path or art.onnx_variant(precision), threads=threads, providers=providers)

    def encode_batches(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(row positions, ids int64 [batch, length]) per length bucket, shortest first."""
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        out = []
        for idx in bucket_order(lengths, self.batch_size, None):
            ids, _ = self.vocab.encode([texts[i] for i in idx], self.max_length)
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
        probs = self.probs(texts)
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        return Scores(probs, apply_thresholds(probs, self.thresholds), lengths > self.max_length)


def scored_table(ids: pa.Array, sources: pa.Array, s: Scores, labels: Sequence[str], model_version: str,
                 top_k: int | None = None) -> pa.Table:
    """Output rows: id, tags (list), scores (map tag -> probability: every tag, or the top k), ...

    Built column-wise from numpy (no Python loop over rows).
    """
    n, k = s.probs.shape
    label_arr = pa.array(list(labels), pa.string())
    rows, cols = np.nonzero(s.tags)
    tag_offsets = np.concatenate([[0], np.cumsum(s.tags.sum(1))]).astype(np.int32)
    tags = pa.ListArray.from_arrays(pa.array(tag_offsets), label_arr.take(pa.array(cols, pa.int32())))
    if top_k is None or top_k >= k:
        keys_idx = np.tile(np.arange(k, dtype=np.int32), n)
        values = s.probs.reshape(-1)
        width = k
    else:
        width = max(int(top_k), 0)
        order = np.argsort(-s.probs, axis=1, kind="stable")[:, :width]
        keys_idx = order.reshape(-1).astype(np.int32)
        values = np.take_along_axis(s.probs, order, axis=1).reshape(-1)
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32) if width else np.zeros(n + 1, np.int32))
    scores = pa.MapArray.from_arrays(offsets, label_arr.take(pa.array(keys_idx)), pa.array(values, pa.float32()))
    version = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([model_version])).cast(pa.string())
    return pa.Table.from_arrays(
        [ids, tags, scores, version, pa.array(s.truncated, pa.bool_()), sources], schema=SCORED_SCHEMA)
