"""The two Ray Data stages of `tagging score`: read units, then score + stage fragments.

The read stage parses, validates and normalizes records with the core's ``read_unit`` (the
same code as training) and emits one record per input record — valid (kind ROW) or rejected
(kind REJECT) — plus one END record per unit carrying its record count. The scoring stage runs
in an actor pool; per unit present in its batch it scores the valid records, writes the
fragment's scored rows and rejects to the run's staging directory, and returns a small
*receipt* (unit, record ranges, counts, file names). Only receipts reach the driver.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from serve_batch.faults import FaultPlan, maybe_fault
from serve_batch.layout import part_name
from tagging.config import DataConfig
from tagging.readers import Reject, ReadUnit, read_unit, resolve_filesystem

ROW, REJECT, END = 0, 1, 2
RECORDS_PER_CHUNK = 8192

RECORD_SCHEMA = pa.schema([
    ("unit", pa.string()), ("seq", pa.int64()), ("kind", pa.int8()), ("id", pa.string()),
    ("text", pa.string()), ("source", pa.string()), ("reason", pa.string()), ("raw", pa.string()),
])
RECEIPT_SCHEMA = pa.schema([
    ("unit", pa.string()),
    ("start", pa.int64()),  # first record of the fragment (-1: no records in this receipt)
    ("ranges", pa.list_(pa.int64())),  # [start0, stop0, start1, stop1, ...] of records covered
    ("rows", pa.int64()),  # scored rows written
    ("rejects", pa.int64()),  # rejected records written
    ("scored_file", pa.string()),  # staging file names (null when empty)
    ("rejects_file", pa.string()),
    ("total", pa.int64()),  # the unit's record count when this batch held its END, else -1
])


def unit_to_item(unit: ReadUnit) -> dict:
    return {"path": unit.path, "fmt": unit.fmt, "part": unit.part, "file_index": unit.file_index}


def _chunk(unit: str, rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows)) if rows else [[] for _ in range(7)]
    return pa.Table.from_arrays(
        [pa.array([unit] * len(rows), pa.string())] + [pa.array(c, t.type) for c, t in zip(cols, list(RECORD_SCHEMA)[1:])],
        schema=RECORD_SCHEMA)


def read_units(batch: pa.Table, cfg: DataConfig, fault: FaultPlan | None = None) -> Iterator[pa.Table]:
    """map_batches UDF: each input row is a ReadUnit; yields its records in chunks, then END."""
    for item in batch.to_pylist():
        unit = ReadUnit(item["path"], item["fmt"], int(item["part"]), int(item["file_index"]))
        rows: list[tuple] = []
        seq = -1
        for seq, rec in enumerate(read_unit(unit, cfg, need_tags=False)):
            if isinstance(rec, Reject):
                rows.append((seq, REJECT, rec.id, None, rec.source, rec.reason, rec.raw))
            else:
                rows.append((seq, ROW, rec.id, rec.text, rec.source, None, None))
            if len(rows) >= RECORDS_PER_CHUNK:
                maybe_fault(fault, "read")
                yield _chunk(unit.name, rows)
                rows = []
        rows.append((seq + 1, END, None, None, None, None, None))
        maybe_fault(fault, "read")
        yield _chunk(unit.name, rows)


def _ranges(seq: np.ndarray) -> list[int]:
    """Sorted record numbers -> flattened [start, stop) runs."""
    if len(seq) == 0:
        return []
    breaks = np.flatnonzero(np.diff(seq) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [len(seq)]])
    return [int(v) for s, e in zip(starts, stops) for v in (seq[s], seq[e - 1] + 1)]


class ScoreStage:
    """Actor UDF: one ONNX Runtime session per actor, loaded once in __init__."""

    def __init__(self, model_dir: str, precision: str, threads: int, batch_size: int, top_k: int | None,
                 staging_uri: str, fault: FaultPlan | None = None) -> None:
        from serve_batch.scorer import OnnxScorer
        from tagging.artifact import load_artifact

        art = load_artifact(model_dir)
        self.scorer = OnnxScorer(art, precision, threads=threads, batch_size=batch_size)
        self.model_version = art.model_version
        self.top_k = top_k
        self.fs, self.staging = resolve_filesystem(staging_uri)
        self.fault = fault

    def __call__(self, batch: pa.Table) -> pa.Table:
        receipts = []
        units = batch.column("unit").combine_chunks().dictionary_encode()
        codes = units.indices.to_numpy(zero_copy_only=False)
        for code, unit in enumerate(units.dictionary.to_pylist()):
            receipts.append(self._fragment(unit, batch.take(pa.array(np.flatnonzero(codes == code)))))
        return pa.Table.from_pylist(receipts, schema=RECEIPT_SCHEMA)

    def _fragment(self, unit: str, t: pa.Table) -> dict:
        from serve_batch.scorer import REJECTS_SCHEMA, scored_table

        kind = t.column("kind").to_numpy()
        seq = t.column("seq").to_numpy()
        total = int(seq[kind == END][0]) if (kind == END).any() else -1
        data = np.flatnonzero(kind != END)
        data = data[np.argsort(seq[data], kind="stable")]
        receipt = {"unit": unit, "start": -1, "ranges": [], "rows": 0, "rejects": 0,
                   "scored_file": None, "rejects_file": None, "total": total}
        if len(data) == 0:
            return receipt
        t = t.take(pa.array(data))
        kind, seq = kind[data], seq[data]
        start = int(seq[0])
        name = part_name(unit, start)
        ok = np.flatnonzero(kind == ROW)
        if len(ok):
            rows = t.take(pa.array(ok))
            scores = self.scorer.score(rows.column("text").to_pylist())
            table = scored_table(rows.column("id").combine_chunks(), rows.column("source").combine_chunks(), scores,
                                 self.scorer.labels, self.model_version, self.top_k)
            pq.write_table(table, posixpath.join(self.staging, "scored-" + name), filesystem=self.fs)
            receipt.update(rows=len(ok), scored_file="scored-" + name)
        bad = np.flatnonzero(kind == REJECT)
        if len(bad):
            rej = t.take(pa.array(bad)).select(["id", "reason", "source", "raw"]).cast(REJECTS_SCHEMA)
            pq.write_table(rej, posixpath.join(self.staging, "rejects-" + name), filesystem=self.fs)
            receipt.update(rejects=len(bad), rejects_file="rejects-" + name)
        receipt.update(start=start, ranges=_ranges(seq))
        maybe_fault(self.fault, "score")
        return receipt
