"""Multi-label metrics with a stable schema (the same for training, evaluation and reports)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def evaluate(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """``{"overall": {...}, "per_class": {tag: {...}}}``; y_true/y_pred: bool [rows, labels]."""
    y_true = np.asarray(y_true).astype(bool)
    y_pred = np.asarray(y_pred).astype(bool)
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    overall = {
        "precision": float(p),
        "recall": float(r),
        "f1": float(f),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "num_samples": int(y_true.shape[0]),
    }
    pc, rc, fc, sc = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    per_class = {
        tag: {"precision": float(pc[i]), "recall": float(rc[i]), "f1": float(fc[i]), "support": int(sc[i])}
        for i, tag in enumerate(labels)
    }
    return {"overall": overall, "per_class": per_class}
