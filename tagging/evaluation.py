"""Predict and evaluate from an artifact in-process with PyTorch (Ray-free).

``Predictor`` is the one in-process model of an artifact: `tagging predict`, `tagging evaluate`,
the report, its behavioral checks and `tagging explain` use it. Batch scoring runs the same
artifact through ONNX Runtime instead (tagging.onnx_scoring.OnnxScorer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagging.artifact import Artifact, load_artifact
from tagging.metrics import evaluate
from tagging.thresholds import apply_thresholds


class Predictor:
    """An artifact's PyTorch model, loaded once: texts -> probabilities -> tags."""

    def __init__(self, artifact: Artifact | str | Path) -> None:
        self.art = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        self.model = self.art.load_model()
        self.labels = list(self.art.labels.labels)

    def probs(self, texts: Sequence[str], normalized: bool = False) -> np.ndarray:
        """float32 [rows, labels]; raw texts are normalized first, unless ``normalized=True``
        (texts that went through the readers, e.g. ``Artifact.labeled_rows``)."""
        from tagging.batching import predict_texts  # the training code's batched torch prediction

        clean = list(texts) if normalized else self.art.normalize(texts)
        return predict_texts(self.model, clean, self.art.vocab, self.art.max_length)

    def predict(self, texts: Sequence[str], normalized: bool = False) -> np.ndarray:
        """bool [rows, labels]: the artifact's thresholds applied to ``probs``."""
        return apply_thresholds(self.probs(texts, normalized), self.art.thresholds)

    def tags(self, texts: Sequence[str], normalized: bool = False) -> list[list[str]]:
        """The predicted tags of each text, in label order."""
        return [self.art.labels.decode(row) for row in self.predict(texts, normalized)]


def evaluate_files(model_dir: str | Path, data: Sequence[str]) -> dict:
    """metrics.json for labeled files, using the artifact's labels, normalization and thresholds.

    Rows without any tag in the label space are left out and counted; rejected rows are counted.
    """
    predictor = Predictor(model_dir)
    art = predictor.art
    rows = art.labeled_rows(data)
    metrics = evaluate(rows.y, predictor.predict(rows.texts, normalized=True), art.labels.labels)
    acc = rows.accounting
    metrics["accounting"] = {"rows_read": acc["rows_read"], "rows_evaluated": acc["rows_used"],
                             "rows_rejected": acc["rows_rejected"], "rows_unlabeled": acc["rows_unlabeled"]}
    metrics["model_version"] = art.model_version
    return metrics


def predict_texts_from_artifact(model_dir: str | Path, texts: Sequence[str], top: int = 5) -> list[dict]:
    """For each text: predicted tags (thresholded) with probabilities, and the top-k scores."""
    predictor = Predictor(model_dir)
    labels = predictor.art.labels
    probs = predictor.probs(texts)
    out = []
    for text, p, m in zip(texts, probs, apply_thresholds(probs, predictor.art.thresholds)):
        order = np.argsort(-p)[:top]
        out.append({
            "text": text,
            "tags": {t: round(float(v), 4) for t, v in zip(labels.decode(m), p[m])},
            "top": {labels.labels[i]: round(float(p[i]), 4) for i in order},
        })
    return out
