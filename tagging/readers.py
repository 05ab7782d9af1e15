"""Tolerant file readers and row validation, shared by training and batch scoring.

Ray Data's built-in readers fail a whole file (or block) on one malformed JSON line, invalid
UTF-8 or a column whose type changes. Every input row must be accounted for, so files are
parsed here record by record: each record becomes either a valid row or a reject with a
reason and its source (``file:line`` or ``file:row``). The Ray shell only distributes
``ReadUnit``s (a file, or one Parquet row group) over Ray Data.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tagging.config import DataConfig
from tagging.labels import TagIndex, TagParseError, parse_tags, read_labels_file
from tagging.text import join_fields, normalize

FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
RAW_CHARS = 200  # rejects keep this many characters of the raw record

# Reject reasons (stable strings: they appear in rejects files and summaries).
MALFORMED = "malformed_record"
INVALID_UTF8 = "invalid_utf8"
MISSING_ID = "missing_id"
DUPLICATE_ID = "duplicate_id"
NULL_TEXT = "null_text"
EMPTY_TEXT = "empty_text"
NON_STRING_TEXT = "non_string_text"
TEXT_TOO_LONG = "text_too_long"
BAD_TAGS = "unparseable_tags"


class InputError(ValueError):
    """An input cannot be used at all (missing file or column, unknown format)."""


@dataclass(frozen=True, order=True)
class ReadUnit:
    """One unit of reading work: a whole file, or one row group of a Parquet file."""

    path: str
    fmt: str
    part: int = 0  # Parquet row group; 0 for other formats
    file_index: int = 0  # position of the file in the sorted input listing

    @property
    def name(self) -> str:
        return f"{self.file_index:05d}-{self.part:05d}"


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local path or any pyarrow filesystem URI."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(uri)


def file_exists(uri: str) -> bool:
    """Whether a local path or pyarrow filesystem URI names a file that can be reached from here
    (an unknown scheme or a filesystem without credentials counts as not there)."""
    try:
        fs, path = resolve_filesystem(uri)
        return fs.get_file_info(path).type == pafs.FileType.File
    except (OSError, ValueError):
        return False


def read_text(uri: str) -> str:
    """A small UTF-8 text file (a labels or tags file) from a local path or any pyarrow URI."""
    fs, path = resolve_filesystem(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri}: no such file")
    with fs.open_input_stream(path) as stream:
        return stream.read().decode("utf-8")


def load_labels_file(uri: str) -> list[str]:
    """The label space of a labels file (path or URI): one tag a line, sorted."""
    return read_labels_file(read_text(uri))


def load_tag_index(uri: str | None) -> TagIndex:
    """Aliases and parents from a tags file (path or URI); an empty index without one."""
    if not uri:
        return TagIndex()
    try:
        records = json.loads(read_text(uri))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{uri}: not a JSON tags file ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(records, list):
        raise ValueError(f"{uri}: a tags file is a JSON array of {{tag, aliases, parents}}")
    return TagIndex.from_records(records)


def load_label_inputs(cfg: DataConfig) -> tuple[TagIndex, list[str] | None]:
    """What training reads besides the data: the tags file's index (empty without one) and the
    labels file's label space (None without one: labels then come from tag frequency)."""
    return load_tag_index(cfg.tags_file), (load_labels_file(cfg.labels_file) if cfg.labels_file else None)


def detect_format(path: str) -> str:
    lower = path.lower()
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    raise InputError(f"{path}: unknown file format (expected one of {', '.join(sorted(FORMATS))})")


def list_files(uris: Sequence[str]) -> list[tuple[pafs.FileSystem, str]]:
    """Expand files, directories (recursively) and globs into a sorted, de-duplicated list.

    Hidden files and names starting with '_' (e.g. _SUCCESS, _rejects) are skipped in directories.
    """
    import fnmatch
    import posixpath

    found: dict[str, pafs.FileSystem] = {}
    for uri in uris:
        fs, path = resolve_filesystem(uri)
        if any(ch in path for ch in "*?["):
            base = path
            while any(ch in base for ch in "*?["):
                base = posixpath.dirname(base)
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            matches = [i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)]
            if not matches:
                raise InputError(f"{uri}: no file matches")
            for m in matches:
                found[m] = fs
            continue
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{uri}: no such file or directory")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = [
                i.path
                for i in infos
                if i.type == pafs.FileType.File
                and not any(p.startswith((".", "_")) for p in posixpath.relpath(i.path, path).split("/"))
            ]
            files = [f for f in files if any(f.lower().endswith(e) for e in FORMATS)]
            if not files:
                raise InputError(f"{uri}: directory holds no readable file")
            for f in files:
                found[f] = fs
        else:
            found[path] = fs
    return [(found[p], p) for p in sorted(found)]


def plan_units(uris: Sequence[str]) -> list[ReadUnit]:
    """Read units for the inputs, in a deterministic order. Paths keep their URI scheme."""
    units = []
    for index, (fs, path) in enumerate(list_files(uris)):
        fmt = detect_format(path)
        full = _with_scheme(uris, fs, path)
        if fmt == "parquet":
            with fs.open_input_file(path) as f:
                groups = pq.ParquetFile(f).num_row_groups
            units.extend(ReadUnit(full, fmt, g, index) for g in range(max(groups, 1)))
        else:
            units.append(ReadUnit(full, fmt, 0, index))
    return units


def _with_scheme(uris: Sequence[str], fs: pafs.FileSystem, path: str) -> str:
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    scheme = next((u.split("://", 1)[0] for u in uris if "://" in u), "")
    return f"{scheme}://{path}" if scheme else path


def input_columns(unit: ReadUnit) -> set[str] | None:
    """Columns a unit's file offers, cheaply (header / schema / first records); None if unknown."""
    fs, path = resolve_filesystem(unit.path)
    if unit.fmt == "parquet":
        with fs.open_input_file(path) as f:
            return set(pq.ParquetFile(f).schema_arrow.names)
    if unit.fmt == "csv":
        with fs.open_input_stream(path) as f:
            head = f.read(1 << 16).decode("utf-8", errors="replace")
        first = next(csv.reader(io.StringIO(head)), None)
        return set(first or [])
    if unit.fmt == "jsonl":
        keys: set[str] = set()
        with fs.open_input_stream(path) as f:
            for i, line in enumerate(io.BufferedReader(f)):
                if i >= 200:
                    break
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(rec, dict):
                    keys |= set(rec)
        return keys
    return None  # a JSON array is checked record by record


def check_columns(units: Sequence[ReadUnit], cfg: DataConfig, need_tags: bool) -> None:
    """Fail before any work if a file lacks a required column; the message names both."""
    for unit in units:
        if unit.part:
            continue
        cols = input_columns(unit)
        if cols is None:
            continue
        required = [cfg.id_column]
        if cfg.text_column not in cols:
            required.append(cfg.title_column)
        if need_tags:
            required.append(cfg.tags_column)
        missing = [c for c in required if c not in cols]
        if missing:
            what = "text column " + repr(cfg.text_column) + " or " if cfg.title_column in missing else ""
            raise InputError(f"{unit.path}: missing required column(s) {', '.join(map(repr, missing))} ({what}found {sorted(cols)})")


# ----------------------------------------------------------------------------- parsing


@dataclass
class RawRecord:
    """A record as read: ``record`` is None when the line itself could not be parsed.

    ``raw`` (what a reject keeps of the record) may be None for a parsed record: it is then
    made from ``record`` only if the record is rejected (``raw_text``), not for every row.
    """

    source: str
    raw: str | None
    record: dict | None
    error: str | None = None

    def raw_text(self) -> str:
        return self.raw if self.raw is not None else _short(self.record)


def iter_records(unit: ReadUnit, start: int = 0, stop: int | None = None) -> Iterator[RawRecord]:
    """The records ``start..stop-1`` of a unit (all by default), in file order; unparseable
    lines come back with an error. Parquet slices its row group; other formats skip ahead."""
    if unit.fmt == "parquet":
        yield from _parquet_records(unit, start, stop)
        return
    yield from itertools.islice(_text_records(unit), start, stop)


def _parquet_records(unit: ReadUnit, start: int, stop: int | None) -> Iterator[RawRecord]:
    fs, path = resolve_filesystem(unit.path)
    with fs.open_input_file(path) as f:
        table = pq.ParquetFile(f).read_row_group(unit.part)
    stop = table.num_rows if stop is None else min(stop, table.num_rows)
    table = table.slice(start, max(stop - start, 0))
    offset = _row_group_offset(fs, path, unit.part) + start
    for i, rec in enumerate(table.to_pylist()):
        yield RawRecord(f"{unit.path}:row {offset + i + 1}", None, rec)


def _text_records(unit: ReadUnit) -> Iterator[RawRecord]:
    fs, path = resolve_filesystem(unit.path)
    name = unit.path
    if unit.fmt == "jsonl":
        with fs.open_input_stream(path) as f:
            for lineno, line in enumerate(io.BufferedReader(f, 1 << 20), start=1):
                if not line.strip():
                    continue
                source = f"{name}:{lineno}"
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    yield RawRecord(source, line.decode("utf-8", "replace")[:RAW_CHARS], None, INVALID_UTF8)
                    continue
                try:
                    rec = json.loads(text)
                except json.JSONDecodeError:
                    yield RawRecord(source, text[:RAW_CHARS], None, MALFORMED)
                    continue
                if not isinstance(rec, dict):
                    yield RawRecord(source, text[:RAW_CHARS], None, MALFORMED)
                    continue
                yield RawRecord(source, text[:RAW_CHARS], rec)
    elif unit.fmt == "json":
        with fs.open_input_stream(path) as f:
            data = f.read()
        try:
            records = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{name}: not a valid JSON array ({exc})") from None
        if not isinstance(records, list):
            raise InputError(f"{name}: a .json file must hold a JSON array of records (use .jsonl for JSON Lines)")
        for i, rec in enumerate(records, start=1):
            raw = json.dumps(rec, ensure_ascii=False)[:RAW_CHARS]
            yield RawRecord(f"{name}:record {i}", raw, rec if isinstance(rec, dict) else None, None if isinstance(rec, dict) else MALFORMED)
    elif unit.fmt == "csv":
        with fs.open_input_stream(path) as f:
            wrapper = io.TextIOWrapper(io.BufferedReader(f), encoding="utf-8", errors="surrogateescape", newline="")
            reader = csv.reader(wrapper)
            header = next(reader, None)
            if header is None:
                return
            for rowno, row in enumerate(reader, start=1):
                source = f"{name}:row {rowno}"
                raw = ",".join(row)
                if not row or all(not c for c in row):
                    continue
                if _has_surrogates(raw):
                    yield RawRecord(source, raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:RAW_CHARS], None, INVALID_UTF8)
                elif len(row) != len(header):
                    yield RawRecord(source, raw[:RAW_CHARS], None, MALFORMED)
                else:
                    yield RawRecord(source, raw[:RAW_CHARS], {k: (v if v != "" else None) for k, v in zip(header, row)})
    else:  # pragma: no cover - plan_units only makes known formats
        raise InputError(f"{name}: unknown format {unit.fmt}")


def row_group_rows(unit: ReadUnit) -> int:
    """Records in a Parquet unit (its row group), from the file's footer."""
    fs, path = resolve_filesystem(unit.path)
    with fs.open_input_file(path) as f:
        return pq.ParquetFile(f).metadata.row_group(unit.part).num_rows


def _row_group_offset(fs: pafs.FileSystem, path: str, group: int) -> int:
    if group == 0:
        return 0
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    return sum(meta.row_group(g).num_rows for g in range(group))


_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


def _has_surrogates(text: str) -> bool:
    return _SURROGATE_ESCAPES.search(text) is not None  # a regex scan: ~40x faster than a Python loop


def _short(rec: dict) -> str:
    try:
        return json.dumps(rec, ensure_ascii=False, default=str)[:RAW_CHARS]
    except (TypeError, ValueError):
        return str(rec)[:RAW_CHARS]


# ----------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Row:
    """A valid row: ``text`` is normalized; ``tags`` is None when tags were not asked for."""

    id: str
    text: str
    tags: tuple[str, ...] | None
    source: str
    length: int  # characters of the normalized text


@dataclass(frozen=True)
class Reject:
    id: str | None
    reason: str
    source: str
    raw: str


def _id_string(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            value = int(value)
    if isinstance(value, (np.integer,)):
        value = int(value)
    out = str(value).strip()
    return out or None


def validate_record(rec: RawRecord, cfg: DataConfig, need_tags: bool) -> Row | Reject:
    """Check one record; a valid one comes back normalized, a bad one with its reason."""
    if rec.record is None:
        return Reject(None, rec.error or MALFORMED, rec.source, rec.raw_text())
    r = rec.record
    row_id = _id_string(r.get(cfg.id_column))
    if row_id is None:
        return Reject(None, MISSING_ID, rec.source, rec.raw_text())
    if cfg.text_column in r:
        text = r.get(cfg.text_column)
    elif cfg.title_column in r:
        title, desc = r.get(cfg.title_column), r.get(cfg.description_column)
        if title is not None and not isinstance(title, str) or desc is not None and not isinstance(desc, str):
            return Reject(row_id, NON_STRING_TEXT, rec.source, rec.raw_text())
        text = join_fields(title, desc) if (title or desc) else None
    else:
        text = None
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return Reject(row_id, NULL_TEXT, rec.source, rec.raw_text())
    if not isinstance(text, str):
        return Reject(row_id, NON_STRING_TEXT, rec.source, rec.raw_text())
    if len(text) > cfg.max_text_chars:
        return Reject(row_id, TEXT_TOO_LONG, rec.source, rec.raw_text())
    if _has_surrogates(text):
        return Reject(row_id, INVALID_UTF8, rec.source, rec.raw_text())
    clean = normalize(text, lowercase=cfg.lowercase, remove_stopwords=cfg.remove_stopwords)
    if not clean:
        return Reject(row_id, EMPTY_TEXT, rec.source, rec.raw_text())
    tags = None
    if need_tags:
        try:
            tags = tuple(parse_tags(r.get(cfg.tags_column), cfg.tags_delimiter))
        except TagParseError as exc:
            return Reject(row_id, f"{BAD_TAGS}: {exc}", rec.source, rec.raw_text())
    return Row(row_id, clean, tags, rec.source, len(clean))


def read_unit(unit: ReadUnit, cfg: DataConfig, need_tags: bool, start: int = 0,
              stop: int | None = None) -> Iterator[Row | Reject]:
    """Valid rows and rejects of one unit's records ``start..stop-1`` (all by default), in file
    order (duplicate ids are found later, globally)."""
    for rec in iter_records(unit, start, stop):
        yield validate_record(rec, cfg, need_tags)


def reason_kind(reason: str) -> str:
    """The stable reason code of a reject (before any ': detail')."""
    return reason.split(":", 1)[0]
