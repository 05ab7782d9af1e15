"""The in-process training job, without Ray (tests, quick experiments): files -> artifact.

Same data path (tolerant readers, prepare), the same epochs (tagging.training), thresholds and
artifact as `tagging train` (tagging.dist.training); the members train in this process instead
of in Ray Train workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from tagging.artifact import Artifact
from tagging.config import TrainConfig
from tagging.dataset import Prepared, prepare
from tagging.readers import Reject, check_columns, plan_units, read_unit
from tagging.training import finalize_artifact, fit_in_process, split_inputs

logger = logging.getLogger(__name__)


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


def train_local(data: Sequence[str], out: str, cfg: TrainConfig, model_version: str = "local", cv_thresholds: bool = False) -> Artifact:
    """Train in-process and write the artifact `tagging train` writes (ONNX included) to ``out``.

    Thresholds follow the config's fallback rule (``threshold_min_support``); ``cv_thresholds``
    chooses the policy by 5-fold cross-validation over the validation rows, as `tagging train`
    does (~10 s more a model).
    """
    p = prepare_local(data, cfg)
    vocab, inputs, truncated = split_inputs(cfg, p)
    rows = (*p.texts_and_targets("train"), *p.texts_and_targets("val"))
    states = [fit_in_process(inputs.member(k), *rows).state() for k in range(cfg.model.ensemble)]
    policy = None if cv_thresholds else {"min_support": cfg.threshold_min_support, "shrink": 0.0, "source": "local: threshold_min_support"}
    return finalize_artifact(cfg, p, vocab, states, out, model_version, list(data), truncated, {"name": model_version, "mode": "local"},
                             threshold_policy=policy)
