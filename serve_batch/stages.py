"""The Ray Data stage of `tagging score`: read a unit, score it, stage fragments.

Each work item is one ReadUnit (``tagging.readers``): a Parquet row group or a row range of
one (at most ``unit_rows`` rows, cut at plan time from the footer), a byte range of a big
JSON Lines / CSV file, or a whole file. A scoring actor reads its item once, streaming, with
the core's ``read_unit`` (the same parse, validation and normalization as training), scores
the valid records ``chunk`` at a time, writes each fragment's scored rows and rejects to the
run's staging directory, and returns a small *receipt* per fragment (unit, record ranges,
counts, file names, the unit's record count when known). Right after reading a unit the actor
compares its file with the identity planned for it (``serve_batch.pins``; an S3 unit is also read
at its planned ETag): a changed file is reported in the receipt and the driver never commits
that unit. Only receipts reach the driver.
Reading inside the actor keeps the texts out of the object store: no read tasks, no
inter-stage blocks, so nearly all the CPU goes to ONNX Runtime. Memory per actor follows the
fragment (``chunk`` records), not the unit.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket

import pyarrow as pa
import pyarrow.parquet as pq

from serve_batch.faults import FaultPlan, maybe_fault
from serve_batch.layout import part_name
from serve_batch.pins import changed_since_plan
from tagging.config import DataConfig
from tagging.readers import Reject, ReadUnit, read_unit, resolve_filesystem, unit_records

RECORDS_PER_CHUNK = 16_384  # records per fragment: bounds an actor's memory; one staged file each

RECEIPT_SCHEMA = pa.schema([
    ("unit", pa.string()),
    ("start", pa.int64()),  # first record of the fragment (-1: no records in this receipt)
    ("ranges", pa.list_(pa.int64())),  # [start0, stop0, start1, stop1, ...] of records covered
    ("rows", pa.int64()),  # scored rows written
    ("rejects", pa.int64()),  # rejected records written
    ("scored_file", pa.string()),  # staging file names (null when empty)
    ("rejects_file", pa.string()),
    ("total", pa.int64()),  # the unit's record count when known to this receipt, else -1
    ("chars", pa.int64()),  # characters the model read for the rows scored (drift: out-of-vocabulary share)
    ("oov_chars", pa.int64()),  # ... of which outside the vocabulary
    ("changed", pa.string()),  # the unit's input file is not as planned (never committed); else null
    ("actor", pa.string()),  # the actor that scored it (host:pid): how the work spread, in the summary
])


def work_items(units: list[ReadUnit], inputs: dict[str, dict] | None = None) -> list[dict]:
    """One work item per unit, in unit order: the unit's fields and ``total``, its record count
    when the plan knows it (Parquet), else -1 (known once the unit is read). With ``inputs`` (the
    planned identity of each file, serve_batch.pins), an item also carries its file's
    ``identity`` (checked after the read) and ``version`` (an S3 ETag the read must match)."""
    items = []
    for unit in units:
        total = unit_records(unit)
        ident = (inputs or {}).get(unit.path)
        pin = {"identity": json.dumps(ident, sort_keys=True), "version": ident.get("etag") or ""} if ident else {}
        items.append({**unit.to_dict(), "total": -1 if total is None else total, **pin})
    return items


def read_item(item: dict, cfg: DataConfig, chunk: int = RECORDS_PER_CHUNK):
    """(unit name, first record, [Row | Reject]) chunks of a work item, then (name, -1, total)."""
    unit = ReadUnit.from_dict(item)
    recs: list = []
    seq = first = 0
    for rec in read_unit(unit, cfg, need_tags=False):
        recs.append(rec)
        seq += 1
        if len(recs) >= chunk:
            yield unit.name, first, recs
            recs, first = [], seq
    if recs:
        yield unit.name, first, recs
    # the plan's count when it has one (Parquet footer): a unit that read otherwise never adds up
    yield unit.name, -1, int(item["total"]) if int(item["total"]) >= 0 else seq


def pinned_scorer(model_dir: str, model_sha: str, precision: str, threads: int, batch_size: int):
    """The scorer of exactly the planned artifact: ``model_sha`` is the manifest's sha256 at plan
    time and ``load_artifact`` checks every file against that manifest. Anything else (the
    manifest rewritten by `tagging quantize`, a model copied over the directory) is refused."""
    from serve_batch.layout import ScoreError
    from tagging.artifact import load_artifact
    from tagging.onnx_scoring import OnnxScorer

    art = load_artifact(model_dir)
    if art.sha != model_sha:
        raise ScoreError(f"{model_dir}: the model changed since the run was planned (manifest sha256 "
                         f"{art.sha[:12]}..., planned {model_sha[:12]}...); this actor refuses to score with it")
    scorer = OnnxScorer(art, precision, threads=threads, batch_size=batch_size)
    if art.sha != model_sha:  # rewritten while the session loaded
        raise ScoreError(f"{model_dir}: the model changed while this actor loaded it; refusing")
    return scorer


class ScoreStage:
    """Actor UDF: one ONNX Runtime session per actor, loaded once in __init__."""

    def __init__(self, model_dir: str, model_sha: str, precision: str, threads: int, batch_size: int,
                 top_k: int | None, staging_uri: str, cfg: DataConfig, fault: FaultPlan | None = None,
                 chunk: int = RECORDS_PER_CHUNK, model_version: str | None = None) -> None:
        self.scorer = pinned_scorer(model_dir, model_sha, precision, threads, batch_size)
        art = self.scorer.art
        # the registry version (models:/NAME/3) when the run was planned from the registry, else the artifact's own
        self.model_version = model_version or art.model_version
        self.top_k = top_k
        self.fs, self.staging = resolve_filesystem(staging_uri)
        self.cfg = cfg
        self.fault = fault
        self.chunk = chunk
        self.actor = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        receipts = []
        for item in batch.to_pylist():
            mine, total, unit = [], -1, ReadUnit.from_dict(item).name
            try:
                for unit, first, recs in read_item(item, self.cfg, self.chunk):
                    if first < 0:
                        total = recs
                        continue
                    maybe_fault(self.fault, "read")
                    mine.append(self._fragment(unit, first, recs))
            except Exception:
                if not changed_since_plan(item):  # a read refused because the file was replaced is reported below
                    raise
            changed = changed_since_plan(item)  # right after the read: this unit saw only the planned file
            if not mine or changed:  # an item without records (an empty file or row group), or a refused one
                mine.append({"unit": unit, "start": -1, "ranges": [], "rows": 0, "rejects": 0,
                             "scored_file": None, "rejects_file": None, "total": -1})
            mine[-1].update(total=total, changed=changed)
            receipts += [{**r, "actor": self.actor} for r in mine]
        return pa.Table.from_pylist(receipts, schema=RECEIPT_SCHEMA)

    def _fragment(self, unit: str, start: int, recs: list) -> dict:
        """Score and stage records ``start..start+len(recs)-1`` of ``unit``; returns the receipt."""
        from serve_batch.scorer import REJECTS_SCHEMA, STATISTICS, scored_table

        name = part_name(unit, start)
        receipt = {"unit": unit, "start": start, "ranges": [start, start + len(recs)], "rows": 0, "rejects": 0,
                   "scored_file": None, "rejects_file": None, "total": -1}
        rows = [r for r in recs if not isinstance(r, Reject)]
        if rows:
            scores = self.scorer.score([r.text for r in rows])
            table = scored_table(pa.array([r.id for r in rows], pa.string()), pa.array([r.source for r in rows], pa.string()),
                                 scores, self.scorer.labels, self.model_version, self.top_k)
            pq.write_table(table, posixpath.join(self.staging, "scored-" + name), filesystem=self.fs, write_statistics=STATISTICS)
            receipt.update(rows=len(rows), scored_file="scored-" + name, chars=scores.chars, oov_chars=scores.oov_chars)
        bad = [r for r in recs if isinstance(r, Reject)]
        if bad:
            rej = pa.Table.from_pylist([{"id": r.id, "reason": r.reason, "source": r.source, "raw": r.raw} for r in bad],
                                       schema=REJECTS_SCHEMA)
            pq.write_table(rej, posixpath.join(self.staging, "rejects-" + name), filesystem=self.fs)
            receipt.update(rejects=len(bad), rejects_file="rejects-" + name)
        maybe_fault(self.fault, "score")
        return receipt
