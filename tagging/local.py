"""The in-process training job, without Ray (tests, quick experiments): files -> artifact.

Same data path (tolerant readers, prepare), the same epochs (tagging.training), thresholds and
artifact as `tagging train` (tagging.dist.training); the members train in this process instead
of in Ray Train workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from tagging.artifact import Artifact, save_artifact
from tagging.augment import alias_table_for
from tagging.batching import predict_texts
from tagging.config import TrainConfig
from tagging.dataset import Prepared, prepare
from tagging.metrics import evaluate
from tagging.model import assemble, count_parameters
from tagging.readers import Reject, check_columns, plan_units, read_unit
from tagging.thresholds import apply_thresholds, fit_thresholds
from tagging.training import fit_in_process, merged_history
from tagging.vocab import CharVocab


def read_rows_local(data: Sequence[str], cfg: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Valid rows and rejects of labeled files, read in this process."""
    units = plan_units(data)
    check_columns(units, cfg.data, need_tags=True)
    rows, rejects = [], []
    for unit in units:
        for seq, item in enumerate(read_unit(unit, cfg.data, True)):
            if isinstance(item, Reject):
                rejects.append({"id": item.id, "reason": item.reason, "source": item.source, "raw": item.raw})
            else:
                rows.append({"id": item.id, "text": item.text, "tags": item.tags, "source": item.source,
                             "length": item.length, "unit": unit.name, "seq": seq})
    return (pd.DataFrame(rows, columns=["id", "text", "tags", "source", "length", "unit", "seq"]),
            pd.DataFrame(rejects, columns=["id", "reason", "source", "raw"]))


def prepare_local(data: Sequence[str], cfg: TrainConfig) -> Prepared:
    from tagging.readers import load_label_inputs

    rows, rejects = read_rows_local(data, cfg)
    return prepare(rows, rejects, cfg.data, cfg.seed, *load_label_inputs(cfg.data))


def train_local(data: Sequence[str], out: str, cfg: TrainConfig, model_version: str = "local") -> Artifact:
    """Train in-process and write a full artifact (ONNX included) to ``out``."""
    p = prepare_local(data, cfg)
    tr, va, te = p.split("train"), p.split("val"), p.split("test")
    vocab = CharVocab.fit(tr["text"])
    yt, yv, ye = (np.stack(d["y"].to_numpy()) for d in (tr, va, te))
    aliases = alias_table_for(cfg, p.labels)
    fits = [fit_in_process(tr["text"].tolist(), yt, va["text"].tolist(), yv, vocab, replace(cfg, seed=cfg.seed + k), aliases)
            for k in range(cfg.model.ensemble)]
    model = assemble(vocab.size, yt.shape[1], cfg.model, [m.state_dict() for m, _, _ in fits])
    history = merged_history([{"history": h} for _, h, _ in fits])
    stopper = fits[0][2]
    pv = predict_texts(model, va["text"].tolist(), vocab, cfg.model.max_length)
    thresholds, global_t = fit_thresholds(yv, pv, cfg.threshold_min_support)
    pt = predict_texts(model, te["text"].tolist(), vocab, cfg.model.max_length)
    metrics = evaluate(ye, apply_thresholds(pt, thresholds), p.labels.labels)
    metrics["split"] = "test"
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return save_artifact(
        out, config=cfg, labels=p.labels, vocab=vocab, state_dict=state, model=model, thresholds=thresholds,
        global_threshold=global_t, metrics=metrics, splits=dict(zip(p.rows["id"], p.rows["split"])),
        history=history, data_hash=p.data_hash, model_version=model_version, parity_texts=va["text"].tolist()[:256],
        extra={"run": {"name": model_version, "mode": "local", "best_epoch": stopper.best_epoch},
               "data": {"inputs": list(data), **p.counts}, "parameters": count_parameters(model)},
    )
