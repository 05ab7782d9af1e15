"""Decision thresholds: fit on validation scores only, applied by one function everywhere."""

from __future__ import annotations

import numpy as np

GRID = np.round(np.arange(0.05, 0.951, 0.01), 4)


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """tagging.metrics.weighted_f1, imported on first use: scikit-learn takes ~1.6 s to import and
    processes that only apply thresholds (batch-scoring actors) never need it."""
    from tagging.metrics import weighted_f1 as f1

    return f1(y_true, y_pred)


def apply_thresholds(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """THE one place scores become tags: bool [rows, labels] = probs >= per-class threshold."""
    return np.asarray(probs) >= np.asarray(thresholds, dtype=np.float32)[None, :]


def fit_global_threshold(y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray = GRID) -> float:
    """The single threshold that maximizes weighted F1 (ties: the lowest)."""
    scores = [weighted_f1(y_true, probs >= t) for t in grid]
    return float(grid[int(np.argmax(scores))])


def fit_class_thresholds(y_true: np.ndarray, probs: np.ndarray, grid: np.ndarray = GRID) -> np.ndarray:
    """Per class, the threshold that maximizes that class's F1 (ties: the value closest to 0.5)."""
    y_true = np.asarray(y_true).astype(bool)
    out = np.empty(y_true.shape[1], dtype=np.float64)
    preds = probs[:, :, None] >= grid[None, None, :]  # [rows, labels, grid]
    tp = (preds & y_true[:, :, None]).sum(0)
    fp = (preds & ~y_true[:, :, None]).sum(0)
    fn = (~preds & y_true[:, :, None]).sum(0)
    f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    for j in range(y_true.shape[1]):
        best = np.flatnonzero(f1[j] >= f1[j].max() - 1e-12)
        out[j] = grid[best[np.argmin(np.abs(grid[best] - 0.5))]]
    return out


def fit_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    min_support: int = 5,
    shrink: float = 0.0,
    grid: np.ndarray = GRID,
) -> tuple[np.ndarray, float]:
    """Per-class thresholds with a fallback; returns (thresholds [labels], global threshold).

    Classes with fewer than ``min_support`` validation positives take the global threshold;
    ``shrink`` in [0, 1] pulls every per-class threshold toward the global one
    (0 = pure per-class, 1 = global only).
    """
    y_true = np.asarray(y_true).astype(bool)
    global_t = fit_global_threshold(y_true, probs, grid)
    per_class = fit_class_thresholds(y_true, probs, grid)
    support = y_true.sum(0)
    out = np.where(support >= min_support, (1 - shrink) * per_class + shrink * global_t, global_t)
    return np.round(out, 4), global_t


def cv_policy_score(y_true: np.ndarray, probs: np.ndarray, min_support: int, shrink: float, folds: int = 5,
                    seed: int = 0) -> float:
    """Weighted F1 of a threshold policy estimated by K-fold cross-validation over validation rows.

    Thresholds are fit on K-1 folds and applied to the held-out fold; the held-out predictions
    of all folds are pooled into one weighted F1. This keeps the choice of policy honest when
    some classes have only a handful of validation positives.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    y_true = np.asarray(y_true).astype(bool)
    pred = np.zeros_like(y_true)
    kfold = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held_idx in kfold.split(np.zeros(len(y_true)), y_true.astype(int)):
        th, _ = fit_thresholds(y_true[fit_idx], probs[fit_idx], min_support=min_support, shrink=shrink)
        pred[held_idx] = apply_thresholds(probs[held_idx], th)
    return weighted_f1(y_true, pred)


POLICY_GRID = {"min_support": (0, 3, 5, 10), "shrink": (0.0, 0.25, 0.5, 0.75, 1.0)}


def select_policy(y_true: np.ndarray, probs: np.ndarray, grid: dict = POLICY_GRID, folds: int = 5, seed: int = 0) -> dict:
    """The threshold policy with the best cross-validated weighted F1 on validation rows.

    Ties prefer more shrinkage toward the global threshold (the simpler policy). `tagging tune`
    runs the same search as a Ray Tune stage; `tagging train` runs it in-process.
    """
    scores = [
        {"min_support": m, "shrink": s, "cv_f1": cv_policy_score(y_true, probs, m, s, folds, seed)}
        for m in grid["min_support"] for s in grid["shrink"]
    ]
    best = sorted(scores, key=lambda r: (-round(r["cv_f1"], 10), -r["shrink"], r["min_support"]))[0]
    return {**best, "folds": folds}
