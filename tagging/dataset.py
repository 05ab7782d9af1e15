"""Turn validated rows into a labeled, de-duplicated, split training set (pure pandas).

Input rows come from ``tagging.readers`` (through Ray Data in production, directly in unit
tests). Every row ends in exactly one bucket: used (train/val/test), rejected (with its
reason), or unlabeled (no tag in the label space), and the counts add up.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tagging.config import DataConfig
from tagging.labels import LabelSpace, TagIndex, labels_from_frequency
from tagging.readers import DUPLICATE_ID
from tagging.split import split_ids

ROW_COLUMNS = ["id", "text", "tags", "source", "length", "unit", "seq"]
REJECT_COLUMNS = ["id", "reason", "source", "raw"]


@dataclass
class Prepared:
    """The labeled training set and the accounting of every input row."""

    rows: pd.DataFrame  # id, text, tags (tuple), y (float32 array), split, length; sorted by id
    labels: LabelSpace
    rejects: pd.DataFrame  # id, reason, source, raw
    counts: dict = field(default_factory=dict)
    data_hash: str = ""
    unlabeled: pd.DataFrame | None = None  # id, text, length of the valid rows without a label-space tag, by id

    def unlabeled_texts(self) -> list[str]:
        return [] if self.unlabeled is None else self.unlabeled["text"].tolist()

    def split(self, name: str) -> pd.DataFrame:
        return self.rows[self.rows["split"] == name]

    def texts_and_targets(self, name: str) -> tuple[list[str], np.ndarray]:
        """A split's texts and float32 targets [rows, labels]."""
        df = self.split(name)
        y = np.stack(df["y"].to_numpy()) if len(df) else np.zeros((0, len(self.labels)))
        return df["text"].tolist(), y.astype(np.float32, copy=False)


def choose_labels(tag_lists: list[tuple[str, ...]], cfg: DataConfig, fixed: list[str] | None) -> LabelSpace:
    if fixed is not None:
        return LabelSpace(tuple(sorted(set(fixed))))
    labels = labels_from_frequency(tag_lists, cfg.min_tag_freq)
    if not labels:
        raise ValueError(f"no tag occurs in at least min_tag_freq={cfg.min_tag_freq} rows")
    return LabelSpace(tuple(labels))


def prepare(
    rows: pd.DataFrame,
    rejects: pd.DataFrame,
    cfg: DataConfig,
    seed: int,
    tag_index: TagIndex | None = None,
    fixed_labels: list[str] | None = None,
) -> Prepared:
    """Deduplicate ids (first by input order wins), map tags, choose labels, split by id."""
    rows_read = len(rows) + len(rejects)
    rows = rows.sort_values(["unit", "seq"], kind="stable").reset_index(drop=True)
    dup = rows["id"].duplicated(keep="first")
    dup_rejects = pd.DataFrame(
        {"id": rows.loc[dup, "id"], "reason": DUPLICATE_ID, "source": rows.loc[dup, "source"],
         "raw": rows.loc[dup, "text"].str.slice(0, 200)}
    )
    rows = rows.loc[~dup].copy()
    index = tag_index or TagIndex()
    rows["tags"] = [tuple(index.canonical(t, cfg.expand_parents)) for t in rows["tags"]]
    labels = choose_labels(list(rows["tags"]), cfg, fixed_labels)
    y = labels.encode(list(rows["tags"]))
    labeled = y.sum(1) > 0
    unlabeled = int((~labeled).sum())
    unlabeled_rows = rows.loc[~labeled, ["id", "text", "length"]].sort_values("id", kind="stable").reset_index(drop=True)
    rows = rows.loc[labeled].copy()
    y = y[labeled]
    rows["y"] = list(y)
    rows = rows.sort_values("id", kind="stable").reset_index(drop=True)
    y = np.stack(rows["y"].to_numpy()) if len(rows) else np.zeros((0, len(labels)), np.float32)
    assignment = split_ids(rows["id"].tolist(), y, cfg.val_fraction, cfg.test_fraction, seed)
    rows["split"] = rows["id"].map(assignment)
    all_rejects = pd.concat([rejects[REJECT_COLUMNS], dup_rejects[REJECT_COLUMNS]], ignore_index=True)
    all_rejects = all_rejects.sort_values(["source"], kind="stable").reset_index(drop=True)
    split_counts = Counter(rows["split"])
    counts = {
        "rows_read": rows_read,
        "rows_used": int(len(rows)),
        "rows_rejected": int(len(all_rejects)),
        "rows_unlabeled": unlabeled,
        "train": split_counts.get("train", 0),
        "val": split_counts.get("val", 0),
        "test": split_counts.get("test", 0),
        "rejects_by_reason": dict(sorted(Counter(r.split(":", 1)[0] for r in all_rejects["reason"]).items())),
    }
    assert counts["rows_used"] + counts["rows_rejected"] + counts["rows_unlabeled"] == rows_read
    return Prepared(rows[["id", "text", "tags", "y", "split", "length"]], labels, all_rejects, counts, data_hash(rows), unlabeled_rows)


def data_hash(rows: pd.DataFrame) -> str:
    """sha256 over (id, text, tags) of the used rows in id order: identifies the training data."""
    h = hashlib.sha256()
    for rid, text, tags in zip(rows["id"], rows["text"], rows["tags"]):
        h.update(f"{rid}\x1f{text}\x1f{','.join(tags)}\x1e".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def summary_line(counts: dict) -> str:
    """One line a person reads: read = used + rejected + unlabeled."""
    return (
        f"rows read {counts['rows_read']} = used {counts['rows_used']} "
        f"(train {counts['train']}, val {counts['val']}, test {counts['test']}) + rejected {counts['rows_rejected']} "
        f"+ without a tag in the label space {counts['rows_unlabeled']}"
        + (f"; rejects by reason {counts['rejects_by_reason']}" if counts["rejects_by_reason"] else "")
    )
