"""Ray Data shell: distribute ReadUnits, parse + validate + normalize each with the core."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pandas as pd

from tagging.config import DataConfig
from tagging.readers import ReadUnit, Reject, read_unit

OUTPUT_BATCH = 4096
COLUMNS = ["unit", "seq", "ok", "id", "text", "tags", "source", "length", "reason", "raw"]


def unit_rows(unit: ReadUnit, cfg: DataConfig, need_tags: bool, batch: int = OUTPUT_BATCH) -> Iterator[pd.DataFrame]:
    """Frames of up to ``batch`` records of one unit (valid rows and rejects alike)."""
    import json

    buf: list[tuple] = []
    for seq, item in enumerate(read_unit(unit, cfg, need_tags)):
        if isinstance(item, Reject):
            buf.append((unit.name, seq, False, item.id, None, None, item.source, 0, item.reason, item.raw))
        else:
            tags = json.dumps(list(item.tags)) if item.tags is not None else None
            buf.append((unit.name, seq, True, item.id, item.text, tags, item.source, item.length, None, None))
        if len(buf) >= batch:
            yield pd.DataFrame(buf, columns=COLUMNS)
            buf = []
    if buf:
        yield pd.DataFrame(buf, columns=COLUMNS)


class _ReadUnits:
    """map_batches UDF: one input row = one ReadUnit; yields frames of parsed records."""

    def __init__(self, cfg: DataConfig, need_tags: bool) -> None:
        self.cfg, self.need_tags = cfg, need_tags

    def __call__(self, batch: pd.DataFrame) -> Iterator[pd.DataFrame]:
        for rec in batch.to_dict("records"):
            unit = ReadUnit.from_dict(rec)
            yield from unit_rows(unit, self.cfg, self.need_tags)


def read_dataset(units: Sequence[ReadUnit], cfg: DataConfig, need_tags: bool, num_cpus: float = 0.25):
    """A Ray Dataset of every record of ``units``: valid rows (ok) and rejects (not ok)."""
    import ray

    items = [u.to_dict() for u in units]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    fn = _ReadUnits(cfg, need_tags)
    return ds.map_batches(fn, batch_size=1, batch_format="pandas", num_cpus=num_cpus)


def collect_training_rows(units: Sequence[ReadUnit], cfg: DataConfig, num_cpus: float = 0.25) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read training files with Ray Data; returns (valid rows, rejects) as pandas frames.

    Training sets of a char-CNN (short texts) fit in driver memory; the labels, split and
    vocabulary need a global view anyway.
    """
    import json

    df = read_dataset(units, cfg, need_tags=True, num_cpus=num_cpus).to_pandas()
    ok = df["ok"].astype(bool)
    rows = df.loc[ok, ["id", "text", "tags", "source", "length", "unit", "seq"]].copy()
    rows["tags"] = [tuple(json.loads(t)) for t in rows["tags"]]
    rejects = df.loc[~ok, ["id", "reason", "source", "raw"]].copy()
    return rows.reset_index(drop=True), rejects.reset_index(drop=True)
