"""Evaluate and predict from an artifact, Ray-free (in-process PyTorch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tagging.artifact import load_artifact
from tagging.labels import TagIndex
from tagging.metrics import evaluate
from tagging.readers import Row, check_columns, file_exists, load_tag_index, plan_units, read_unit
from tagging.text import normalize
from tagging.thresholds import apply_thresholds
from tagging.train_loop import predict_texts


def evaluate_files(model_dir: str, data: Sequence[str]) -> dict:
    """metrics.json for labeled files, using the artifact's labels, normalization and thresholds.

    Rows without any tag in the label space are left out and counted; rejected rows are counted.
    """
    art = load_artifact(model_dir)
    cfg = art.config.data
    units = plan_units(data)
    check_columns(units, cfg, need_tags=True)
    index = load_tag_index(cfg.tags_file) if cfg.tags_file and file_exists(cfg.tags_file) else TagIndex()
    rows, rejected, seen = [], 0, set()
    for unit in units:
        for item in read_unit(unit, cfg, need_tags=True):
            if isinstance(item, Row) and item.id not in seen:
                seen.add(item.id)
                rows.append(item)
            else:
                rejected += 1
    tags = [index.canonical(r.tags, cfg.expand_parents) for r in rows]
    y = art.labels.encode(tags)
    keep = y.sum(1) > 0
    texts = [r.text for r, k in zip(rows, keep) if k]
    probs = predict_texts(art.load_model(), texts, art.vocab, art.max_length)
    metrics = evaluate(y[keep], apply_thresholds(probs, art.thresholds), art.labels.labels)
    metrics["accounting"] = {"rows_read": len(rows) + rejected, "rows_evaluated": int(keep.sum()),
                             "rows_rejected": rejected, "rows_unlabeled": int((~keep).sum())}
    metrics["model_version"] = art.model_version
    return metrics


def predict_texts_from_artifact(model_dir: str, texts: Sequence[str], top: int = 5) -> list[dict]:
    """For each text: predicted tags (thresholded) with probabilities, and the top-k scores."""
    art = load_artifact(model_dir)
    cfg = art.config.data
    clean = [normalize(t, lowercase=cfg.lowercase, remove_stopwords=cfg.remove_stopwords) for t in texts]
    probs = predict_texts(art.load_model(), clean, art.vocab, art.max_length)
    mask = apply_thresholds(probs, art.thresholds)
    out = []
    for text, p, m in zip(texts, probs, mask):
        order = np.argsort(-p)[:top]
        out.append({
            "text": text,
            "tags": {art.labels.labels[i]: round(float(p[i]), 4) for i in np.flatnonzero(m)},
            "top": {art.labels.labels[i]: round(float(p[i]), 4) for i in order},
        })
    return out
