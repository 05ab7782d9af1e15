"""Duplicate ids across the whole date: first occurrence (by unit order, then record) wins.

Runs after every unit is committed and before summary.json / _SUCCESS. It reads only the
``id`` column of the committed part files, in input order, and hashes each id to 64 bits;
equal hashes are confirmed on the ids themselves, so a hash collision never drops a row. For
each part file holding a later duplicate, the duplicates are first written to
``_rejects/dup-<part>`` (reason ``duplicate_id``, source = their own file:line, raw = where
the kept row came from), then the part file is rewritten without them; both writes go through
staging and an atomic move.

Resume: removing later occurrences never changes which occurrence is first, so a rerun after a
kill recomputes the same answer from the files as they are; a part file already rewritten has
nothing left to move, one whose rewrite did not happen is rewritten (its dup file is replaced
with identical content). Granularity: one part file. Memory: about 40 bytes per id on the
driver (hash, file, row, sort order), not the ids themselves, for at most ``PASS_IDS`` ids at a
time: a bigger date is searched in passes over hash partitions (``find_duplicates``).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serve_batch.layout import REJECTS, STAGING, OutputLayout
from serve_batch.scorer import REJECTS_SCHEMA, STATISTICS
from tagging.readers import DUPLICATE_ID, RAW_CHARS


def part_files_in_order(layout: OutputLayout, unit_order: Sequence[str], markers: dict[str, dict]) -> list[str]:
    """Committed part files (full paths) in input order: unit plan order, then first record."""
    out = []
    for unit in unit_order:
        out.extend(layout.path(name) for name in sorted(markers[unit]["files"]))
    return out


def _read_column(layout: OutputLayout, path: str, column: str) -> pa.ChunkedArray:
    return pq.read_table(path, columns=[column], filesystem=layout.fs).column(column)


PASS_IDS = 4_000_000  # ids hashed per pass: the search's driver memory is bounded by this, not by the date


def find_duplicates(layout: OutputLayout, files: Sequence[str], pass_ids: int = PASS_IDS) -> dict[int, list[tuple[int, int, int]]]:
    """{file number: [(row, first file number, first row), ...]} for every later occurrence of an id.

    Over ``pass_ids`` ids in all, the search runs in passes over hash partitions (equal ids
    hash alike, so each pass is complete for its ids): each pass reads the id columns again and
    keeps only its partition, so the driver holds ~``pass_ids`` x 40 bytes whatever the count."""
    counts = [_num_rows(layout, path) for path in files]
    passes = max(1, -(-sum(counts) // max(1, pass_ids)))
    out: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for p in range(passes):
        for fi, rows in _find_in_partition(layout, files, p, passes).items():
            out[fi].extend(rows)
    return dict(out)


def _num_rows(layout: OutputLayout, path: str) -> int:
    with layout.fs.open_input_file(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _find_in_partition(layout: OutputLayout, files: Sequence[str], part: int, parts: int) -> dict[int, list[tuple[int, int, int]]]:
    hashes, file_no, row_no = [], [], []
    for i, path in enumerate(files):
        ids = _read_column(layout, path, "id").to_numpy()
        h = pd.util.hash_array(np.asarray(ids, dtype=object), categorize=False)
        rows = np.arange(len(ids), dtype=np.int32)
        if parts > 1:
            keep = h % np.uint64(parts) == np.uint64(part)
            h, rows = h[keep], rows[keep]
        hashes.append(h)
        file_no.append(np.full(len(h), i, dtype=np.int32))
        row_no.append(rows)
    if not hashes:
        return {}
    h = np.concatenate(hashes)
    del hashes
    order = np.argsort(h, kind="stable")  # stable: within a hash, input order
    hs = h[order]
    same = np.flatnonzero(hs[1:] == hs[:-1])
    if len(same) == 0:
        return {}
    f, r = np.concatenate(file_no), np.concatenate(row_no)
    # Candidate groups (equal hash): confirm with the real ids, read only from the files involved.
    members = np.unique(np.concatenate([same, same + 1]))
    cand = order[members]
    wanted: dict[int, list[int]] = defaultdict(list)
    for g in cand:
        wanted[int(f[g])].append(int(r[g]))
    ids_of: dict[tuple[int, int], str] = {}
    for fi, rows in wanted.items():
        col = _read_column(layout, files[fi], "id").take(pa.array(rows)).to_pylist()
        ids_of.update({(fi, row): v for row, v in zip(rows, col)})
    first_seen: dict[str, tuple[int, int]] = {}
    out: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for g in cand:  # hash order, and input order within one hash: the first seen is the first
        key = (int(f[g]), int(r[g]))
        rid = ids_of[key]
        if rid in first_seen:
            out[key[0]].append((key[1], *first_seen[rid]))
        else:
            first_seen[rid] = key
    return dict(out)


def dedup_pass(layout: OutputLayout, files: Sequence[str], stage: str | None = None,
               before_rewrite: Callable[[], None] | None = None) -> int:
    """Move every later duplicate id into _rejects; returns the number of rows moved.
    ``stage`` is the run's own staging folder (default ``_staging/dedup``)."""
    dups = find_duplicates(layout, files)
    if not dups:
        return 0
    stage = stage or layout.path(STAGING, "dedup")
    layout.mkdirs(stage)
    sources: dict[int, list] = {}
    for fi in sorted({first for rows in dups.values() for _, first, _ in rows}):
        sources[fi] = _read_column(layout, files[fi], "source").to_pylist()
    moved = 0
    for fi in sorted(dups):
        path = files[fi]
        name = posixpath.basename(path)
        table = pq.read_table(path, filesystem=layout.fs)
        rows = sorted(dups[fi])
        drop = np.array([row for row, _, _ in rows], dtype=np.int64)
        picked = table.take(pa.array(drop))
        raw = [f"duplicate id; kept the record at {sources[ff][fr]}"[:RAW_CHARS] for _, ff, fr in rows]
        rejects = pa.Table.from_arrays(
            [picked.column("id").cast(pa.string()), pa.array([DUPLICATE_ID] * len(rows), pa.string()),
             picked.column("source"), pa.array(raw, pa.string())], schema=REJECTS_SCHEMA)
        dup_name = f"dup-{name}"
        pq.write_table(rejects, posixpath.join(stage, dup_name), filesystem=layout.fs)
        layout.fs.move(posixpath.join(stage, dup_name), layout.path(REJECTS, dup_name))
        if before_rewrite is not None:
            before_rewrite()
        keep = np.ones(table.num_rows, dtype=bool)
        keep[drop] = False
        pq.write_table(table.filter(pa.array(keep)), posixpath.join(stage, name), filesystem=layout.fs, write_statistics=STATISTICS)
        layout.fs.move(posixpath.join(stage, name), path)
        moved += len(rows)
    layout.delete(stage)
    return moved


def count_reasons(layout: OutputLayout, paths: Sequence[str]) -> dict[str, int]:
    """Rejected records by reason code over rejects files."""
    from tagging.readers import reason_kind

    counts: dict[str, int] = defaultdict(int)
    for path in paths:
        vc = pc.value_counts(_read_column(layout, path, "reason").combine_chunks())
        for item in vc.to_pylist():
            counts[reason_kind(item["values"])] += int(item["counts"])
    return dict(sorted(counts.items()))
