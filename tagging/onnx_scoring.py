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
from tagging.batching import bucket_order, exact_length_order
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

    ``threads`` is ONNX Runtime's intra-op thread count (the caller's CPUs). Where the artifact
    has the variant's ``unpadded`` graph (``Artifact.unpadded_variant``), rows are run in batches
    of one exact length each (at most ``batch_size``, no padding) through that cheaper graph;
    otherwise (and for an empty text) ``batch_size`` rows of similar length run together
    (length-bucketed: padding stays small) through the masked graph. The scores are the same.
    ``model_path`` (and ``unpadded_path``) override the artifact's files (quantize checks models
    before storing them). Texts are normalized already (as the readers and ``Artifact.normalize``
    return them).
    """

    def __init__(self, art: Artifact, precision: str = "fp32", threads: int = 1,
                 batch_size: int = DEFAULT_BATCH_SIZE, providers: Sequence[str] | None = None,
                 model_path: str | Path | None = None, unpadded_path: str | Path | None = None) -> None:
        self.art = art
        self.batch_size = int(batch_size)
        self.labels = list(art.labels.labels)
        self.threads, self.providers = threads, providers
        art.vocab.table()  # build the code point table once, not on the first batch
        self.masked_path = model_path or art.onnx_variant(precision)
        self.unpadded_path = unpadded_path if model_path else art.unpadded_variant(precision)
        self.unpadded = session(self.unpadded_path, threads=threads, providers=providers) if self.unpadded_path else None
        self._masked = None if self.unpadded else session(self.masked_path, threads=threads, providers=providers)

    @property
    def masked(self):
        """The session of the masked graph (any batch); opened on first use where an unpadded one exists."""
        if self._masked is None:
            self._masked = session(self.masked_path, threads=self.threads, providers=self.providers)
        return self._masked

    def encode_batches(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(row positions, ids int64 [batch, length]) per batch, shortest first: of one exact
        length each with an unpadded graph, else length buckets."""
        lengths = np.fromiter((min(len(t), self.art.max_length) for t in texts), dtype=np.int64, count=len(texts))
        batches = exact_length_order(lengths, self.batch_size) if self.unpadded else bucket_order(lengths, self.batch_size, None)
        return [(idx, self.art.vocab.encode([texts[i] for i in idx], self.art.max_length)[0]) for idx in batches]

    def run_ids(self, ids: np.ndarray) -> np.ndarray:
        """Probabilities float32 [batch, labels] for encoded ids: the unpadded graph where no id is
        PAD (no padding, and no NUL character inside a text, which encodes as PAD), else the masked one."""
        fast = self.unpadded is not None and ids.shape[1] > 0 and bool((ids != PAD_ID).all())
        return sigmoid((self.unpadded if fast else self.masked).run(["logits"], {"ids": ids})[0])

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
