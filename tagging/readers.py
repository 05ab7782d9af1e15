"""Tolerant file readers and row validation, shared by training and batch scoring.

Ray Data's built-in readers fail a whole file (or block) on one malformed JSON line, invalid
UTF-8 or a column whose type changes. Every input row must be accounted for, so files are
parsed here record by record: each record becomes either a valid row or a reject with a
reason and its source (``file:line``, ``file:row N`` or ``file:byte N``). The Ray shell only
distributes ``ReadUnit``s over Ray Data.

Units (docs/inputs.md has the table):

* Parquet: a row group, or -- when it has more than ``parquet_unit_rows`` rows -- equal row
  ranges of it. A unit streams its row group once with ``ParquetFile.iter_batches`` and only
  the columns validation needs; the rows before its range are decoded and dropped (a 1M-row
  group in 16 units decodes 7.5M extra rows of two columns: ~3 s, ~1.5% of scoring it).
* JSON Lines and CSV, uncompressed, over ``text_unit_bytes``: byte ranges cut like Hadoop's
  TextInputFormat: a range owns the lines that *start* inside it. A CSV in which a quote is
  open at a line end (quoted multi-line fields, or a stray quote) is one unit (a plan-time scan
  finds it; logged).
* Compressed files (.gz, .bz2, .zst, .lz4 by extension) and .json arrays: one unit per file.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import NamedTuple

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tagging.config import DataConfig
from tagging.labels import TagIndex, TagParseError, parse_tags, read_labels_file
from tagging.text import join_fields, normalize

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd", ".lz4": "lz4"}
RAW_CHARS = 200  # rejects keep this many characters of the raw record
PARQUET_UNIT_ROWS = 65_536  # a row group over this many rows is cut into equal row ranges of at most this many
TEXT_UNIT_BYTES = 4 << 20  # an uncompressed JSON Lines / CSV file over this size is cut into equal byte ranges
MIN_UNIT_ROWS = 4096  # plan_units(min_units=...) cuts no smaller Parquet ranges than this
MIN_UNIT_BYTES = 256 << 10  # ... and no smaller text byte ranges than this
MAX_RANGES_PER_GROUP = 16  # ... nor more ranges of one row group than this (unless parquet_unit_rows needs more)
PARQUET_BATCH_ROWS = 4096  # rows decoded at a time: a Parquet reader's memory is bounded by this, not the row group
JSON_ARRAY_MAX_BYTES = 128 << 20  # a .json array is parsed whole in memory: bigger ones are refused (use JSON Lines)
CSV_RECORD_MAX_BYTES = 64 << 20  # a CSV record spanning lines past this is an unterminated quote (one line: any size)
CSV_DELIMITERS = (",", ";", "\t", "|")  # what delimiter "auto" chooses from (the one the header line holds most)

log = logging.getLogger(__name__)

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
    """One unit of reading work, committed as a whole: a file, a Parquet row group or a row range
    of one, or a byte range of a text file. Plain fields only (``to_dict`` / ``from_dict``): units
    travel to Ray workers and into run records."""

    path: str
    fmt: str
    part: int = 0  # Parquet row group; 0 for other formats
    file_index: int = 0  # position of the file in the sorted input listing
    start: int = 0  # Parquet: first row of the range within the row group; text: first byte of the range
    stop: int = -1  # Parquet: the row after the range; text: the byte after it; -1: to the end (a whole unit)
    version: str = ""  # the object version to read (an S3 ETag: tagging.stores.open_version); "": what is there

    @property
    def name(self) -> str:
        """Unique within a plan and sorted in input order (file, row group, range)."""
        base = f"{self.file_index:05d}-{self.part:05d}"
        return base if self.whole else f"{base}-{self.start:012d}"

    @property
    def whole(self) -> bool:
        """The whole file (or row group), not a range of it."""
        return self.start == 0 and self.stop == -1

    @property
    def compression(self) -> str | None:
        return compression_of(self.path)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReadUnit":
        return cls(**{f.name: (d[f.name] if f.type == "str" else int(d[f.name])) for f in fields(cls) if f.name in d})


def resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for a local path or any pyarrow filesystem URI (gs:// on the
    emulator named by STORAGE_EMULATOR_HOST when it is set: tagging.stores.emulated_gcs)."""
    if uri.startswith("gs://"):
        from tagging.stores import emulated_gcs

        fs = emulated_gcs()
        if fs is not None:
            return fs, uri[len("gs://"):].split("?", 1)[0].rstrip("/")
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


def compression_of(path: str) -> str | None:
    """The codec of a compressed file by its extension (``x.jsonl.gz`` -> gzip), else None."""
    lower = path.lower()
    return next((codec for ext, codec in COMPRESSIONS.items() if lower.endswith(ext)), None)


def _strip_compression(path: str) -> str:
    lower = path.lower()
    for ext in COMPRESSIONS:
        if lower.endswith(ext):
            return lower[: -len(ext)]
    return lower


def detect_format(path: str) -> str:
    lower = _strip_compression(path)
    for ext, fmt in FORMATS.items():
        if lower.endswith(ext):
            return fmt
    known = ", ".join(sorted(FORMATS)) + " (each also " + "/".join(sorted(COMPRESSIONS)) + " compressed)"
    raise InputError(f"{path}: unknown file format (expected one of {known})")


def _readable(path: str) -> bool:
    try:
        detect_format(path)
        return True
    except InputError:
        return False


def _beside_data(rel: str) -> bool:
    """Files data tools leave beside data: _SUCCESS, _committed_*, _temporary/, .crc, hidden files."""
    return any(p.startswith((".", "_")) for p in rel.split("/")) or rel.lower().endswith(".crc")


def list_files(uris: Sequence[str]) -> list[tuple[pafs.FileSystem, str]]:
    """Expand files, directories (recursively, Hive partition folders included) and globs into a
    sorted, de-duplicated list.

    In directories, files beside the data are skipped (``_SUCCESS``, ``_committed_*``,
    ``_temporary/``, ``*.crc``, names starting with '.' or '_' at any level), and so are files
    of an unknown format; the log says how many.
    """
    import fnmatch
    import posixpath

    found: dict[str, pafs.FileSystem] = {}
    beside = unknown = 0
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
            files = []
            for i in infos:
                if i.type != pafs.FileType.File:
                    continue
                if _beside_data(posixpath.relpath(i.path, path)):
                    beside += 1
                elif not _readable(i.path):
                    unknown += 1
                else:
                    files.append(i.path)
            if not files:
                raise InputError(f"{uri}: directory holds no readable file")
            for f in files:
                found[f] = fs
        else:
            found[path] = fs
    if beside or unknown:
        log.info(f"inputs: skipped {beside} file(s) beside the data (_SUCCESS, _committed_*, _temporary/, .crc, "
                 f"hidden) and {unknown} of an unknown format; reading {len(found)}")
    return [(found[p], p) for p in sorted(found)]


def split_range(total: int, limit: int) -> list[tuple[int, int]]:
    """``0..total`` in equal consecutive ranges of at most ``limit``; [(0, -1)] (whole) if it fits."""
    if total <= limit:
        return [(0, -1)]
    k = -(-total // limit)
    cuts = [total * i // k for i in range(k + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def plan_units(uris: Sequence[str], parquet_unit_rows: int = PARQUET_UNIT_ROWS,
               text_unit_bytes: int = TEXT_UNIT_BYTES, min_units: int = 0) -> list[ReadUnit]:
    """Read units of the inputs, in a deterministic order (a function of the files and the
    limits). Paths keep their URI scheme.

    ``min_units`` > 0 cuts smaller units where the inputs would make fewer (parallelism: a few
    big files still keep many actors busy), never below ``MIN_UNIT_ROWS`` rows / ``MIN_UNIT_BYTES``
    bytes nor into more than ``MAX_RANGES_PER_GROUP`` ranges of one row group (each range decodes
    the group's rows before it); ``parquet_unit_rows`` / ``text_unit_bytes`` stay upper bounds."""
    files = []  # (full path, fs, path, fmt, codec, row group sizes or None, size)
    for index, (fs, path) in enumerate(list_files(uris)):
        fmt = detect_format(path)
        full = _with_scheme(uris, fs, path)
        codec = compression_of(path)
        groups, size = None, 0
        if fmt == "parquet":
            if codec:
                raise InputError(f"{full}: a compressed Parquet file (Parquet compresses inside; read it as .parquet)")
            with fs.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
            groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        else:
            size = fs.get_file_info(path).size or 0
            if fmt == "json" and codec is None and size > JSON_ARRAY_MAX_BYTES:
                raise InputError(_json_too_big(full, size))
        files.append((index, full, fs, path, fmt, codec, groups, size))
    rows_limit, bytes_limit = parquet_unit_rows, text_unit_bytes
    if min_units > 0:
        rows = sum(sum(f[6]) for f in files if f[6] is not None)
        splittable = sum(f[7] for f in files if f[6] is None and f[5] is None and f[4] in ("jsonl", "csv"))
        rows_limit = min(rows_limit, max(MIN_UNIT_ROWS, -(-rows // min_units)))
        bytes_limit = min(bytes_limit, max(MIN_UNIT_BYTES, -(-splittable // min_units)))
    units = []
    for index, full, fs, path, fmt, codec, groups, size in files:
        if groups is not None:
            if not groups:
                units.append(ReadUnit(full, fmt, 0, index))
            for g, n in enumerate(groups):
                limit = max(rows_limit, min(parquet_unit_rows, -(-n // MAX_RANGES_PER_GROUP)))
                units.extend(ReadUnit(full, fmt, g, index, a, b) for a, b in split_range(n, limit))
            continue
        ranges = split_range(size, bytes_limit) if codec is None and fmt in ("jsonl", "csv") else [(0, -1)]
        if len(ranges) > 1 and fmt == "csv" and csv_quote_open_at_line_end(fs, path):
            log.info(f"{full}: a quote is open at a line end (quoted multi-line fields or a stray quote): "
                     f"read as one unit, not split into {len(ranges)} byte ranges")
            ranges = [(0, -1)]
        ranges[-1] = (ranges[-1][0], -1)  # the last range reads to the end of the file
        units.extend(ReadUnit(full, fmt, 0, index, a, b) for a, b in ranges)
    return units


def _json_too_big(path: str, size: int) -> str:
    return (f"{path}: a .json array of {size / 2**20:.0f} MiB or more is over the {JSON_ARRAY_MAX_BYTES >> 20} MiB "
            "limit of .json inputs (parsed whole in memory); write it as JSON Lines (.jsonl, one record a line, "
            "e.g. `jq -c '.[]' in.json > in.jsonl`), which is streamed and split")


def csv_quote_open_at_line_end(fs: pafs.FileSystem, path: str, chunk: int = 16 << 20) -> bool:
    """Whether an uncompressed CSV file has a newline inside quotes (RFC 4180 parity of '"'
    before it is odd): then lines are not records and the file cannot be cut at line
    boundaries. One sequential read of the file (numpy: ~1-2 GB/s)."""
    odd = 0
    with fs.open_input_stream(path) as f:
        while True:
            data = f.read(chunk)
            if not data:
                return False
            a = np.frombuffer(data, np.uint8)
            quotes, newlines = np.flatnonzero(a == 34), np.flatnonzero(a == 10)
            if ((np.searchsorted(quotes, newlines) + odd) & 1).any():
                return True
            odd = (odd + len(quotes)) & 1


def _with_scheme(uris: Sequence[str], fs: pafs.FileSystem, path: str) -> str:
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    scheme = next((u.split("://", 1)[0] for u in uris if "://" in u), "")
    return f"{scheme}://{path}" if scheme else path


def open_file(unit: ReadUnit):
    """The unit's file for random access, at ``unit.version`` where the store can pin one."""
    fs, path = resolve_filesystem(unit.path)
    if unit.version:
        from tagging.stores import open_version

        pinned = open_version(fs, path, unit.version)
        if pinned is not None:
            return pinned
    return fs.open_input_file(path)


def open_stream(unit_or_path: "ReadUnit | str"):
    """A sequential stream of a file's (decompressed) bytes (a unit's at its ``version``)."""
    path = unit_or_path.path if isinstance(unit_or_path, ReadUnit) else unit_or_path
    codec = compression_of(path)
    if isinstance(unit_or_path, ReadUnit) and unit_or_path.version:
        import pyarrow as pa

        f = open_file(unit_or_path)
        return pa.CompressedInputStream(f, codec) if codec else f
    fs, inner = resolve_filesystem(path)
    return fs.open_input_stream(inner, compression=codec)


def check_readable(unit: ReadUnit) -> None:
    """Fail early on an unreadable text file, or a .json file that is not an array."""
    try:
        with open_stream(unit) as f:
            head = f.read(1024)
    except OSError as exc:
        raise InputError(f"{unit.path}: unreadable ({str(exc).splitlines()[0]})") from None
    if unit.fmt == "json" and head.strip() and not head.lstrip().lstrip(b"\xef\xbb\xbf").startswith(b"["):
        raise InputError(f"{unit.path}: a .json file must hold a JSON array of records (use .jsonl for JSON Lines)")


def input_columns(unit: ReadUnit, cfg: DataConfig | None = None) -> set[str] | None:
    """Columns a unit's file offers, cheaply (header / schema / first records); None if unknown."""
    fs, path = resolve_filesystem(unit.path)
    if unit.fmt == "parquet":
        with fs.open_input_file(path) as f:
            return set(pq.ParquetFile(f).schema_arrow.names)
    if unit.fmt == "csv":
        header, _ = _csv_header(unit, (cfg or DataConfig()).csv_delimiter)
        return set(header or [])
    if unit.fmt == "jsonl":
        keys: set[str] = set()
        with open_stream(unit) as f:
            for i, line in enumerate(io.BufferedReader(f)):
                if i >= 200:
                    break
                try:
                    rec = json.loads(line.lstrip(b"\xef\xbb\xbf") if i == 0 else line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(rec, dict):
                    keys |= set(rec)
        return keys
    return None  # a JSON array is checked record by record


def check_columns(units: Sequence[ReadUnit], cfg: DataConfig, need_tags: bool) -> None:
    """Fail before any work if a file lacks a required column; the message names both."""
    seen: set[str] = set()
    for unit in units:
        if unit.path in seen:
            continue
        seen.add(unit.path)
        cols = input_columns(unit, cfg)
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


def iter_records(unit: ReadUnit, columns: Sequence[str] | None = None, csv_delimiter: str = "auto") -> Iterator[RawRecord]:
    """The records of a unit, in file order; unparseable ones come back with an error.
    ``columns``: the Parquet columns to read (those of the file among them; default all)."""
    if unit.fmt == "parquet":
        yield from _parquet_records(unit, columns)
    elif unit.fmt == "jsonl":
        yield from _jsonl_records(unit)
    elif unit.fmt == "json":
        yield from _json_records(unit)
    elif unit.fmt == "csv":
        yield from _csv_records(unit, csv_delimiter)
    else:  # pragma: no cover - plan_units only makes known formats
        raise InputError(f"{unit.path}: unknown format {unit.fmt}")


def _parquet_records(unit: ReadUnit, columns: Sequence[str] | None) -> Iterator[RawRecord]:
    for source, rec in _parquet_rows(unit, columns):
        yield RawRecord(source, None, rec)


def _parquet_rows(unit: ReadUnit, columns: Sequence[str] | None, batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[tuple[str, dict]]:
    """(source, record) of rows ``start..stop-1`` of the unit's row group, streamed once: batches
    of ``batch_rows`` rows of the wanted columns (rows before ``start`` are decoded and dropped)."""
    prefix = f"{unit.path}:row "
    with open_file(unit) as f:
        # buffer_size > 0: column chunks are read in 1 MiB pieces, not whole (memory follows the batch)
        pf = pq.ParquetFile(f, buffer_size=1 << 20)
        meta = pf.metadata
        if meta.num_row_groups == 0:
            return
        names = pf.schema_arrow.names
        cols = None if columns is None else [c for c in names if c in set(columns)]
        total = meta.row_group(unit.part).num_rows
        start, stop = unit.start, total if unit.stop < 0 else min(unit.stop, total)
        offset = sum(meta.row_group(g).num_rows for g in range(unit.part))
        seen = 0  # rows of the row group decoded so far
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[unit.part], columns=cols, use_threads=False):
            lo, hi = max(start - seen, 0), min(stop - seen, batch.num_rows)
            if hi > lo:
                for i, rec in enumerate(batch.slice(lo, hi - lo).to_pylist(), start=offset + seen + lo + 1):
                    yield prefix + str(i), rec
            seen += batch.num_rows
            if seen >= stop:
                break


def _lines(unit: ReadUnit) -> Iterator[tuple[int, int, bytes]]:
    """(line number or -1, byte offset, line) of the lines the unit owns, ends kept; a BOM at the
    start of the file is dropped. A whole unit numbers its lines from 1; a byte range [a, b) owns
    the lines that start inside it (as Hadoop's TextInputFormat): it reads on past b to finish
    its last line, and skips the line in progress at a (the previous range's)."""
    if unit.whole:
        with open_stream(unit) as f:
            offset = 0
            for lineno, line in enumerate(io.BufferedReader(f, 1 << 20), start=1):
                yield lineno, offset, (line[3:] if offset == 0 and line.startswith(b"\xef\xbb\xbf") else line)
                offset += len(line)
        return
    with open_file(unit) as raw:
        pos = max(unit.start - 1, 0)
        raw.seek(pos)
        f = io.BufferedReader(raw, 1 << 20)
        if unit.start > 0:
            pos += len(f.readline())  # the rest of the line holding byte start-1 belongs to the previous range
        while unit.stop < 0 or pos < unit.stop:
            line = f.readline()
            if not line:
                return
            yield -1, pos, (line[3:] if pos == 0 and line.startswith(b"\xef\xbb\xbf") else line)
            pos += len(line)


def _where(unit: ReadUnit, lineno: int, offset: int) -> str:
    return f"{unit.path}:{lineno}" if lineno >= 0 else f"{unit.path}:byte {offset}"


def _jsonl_records(unit: ReadUnit) -> Iterator[RawRecord]:
    for lineno, offset, line in _lines(unit):
        if not line.strip():
            continue
        source = _where(unit, lineno, offset)
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


def _json_records(unit: ReadUnit) -> Iterator[RawRecord]:
    name = unit.path
    with open_stream(unit) as f:
        data = f.read(JSON_ARRAY_MAX_BYTES + 1)
    if len(data) > JSON_ARRAY_MAX_BYTES:  # a compressed file (plan_units checks the others' sizes)
        raise InputError(_json_too_big(name, len(data)))
    try:
        records = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{name}: not a valid JSON array ({exc})") from None
    if not isinstance(records, list):
        raise InputError(f"{name}: a .json file must hold a JSON array of records (use .jsonl for JSON Lines)")
    for i, rec in enumerate(records, start=1):
        raw = json.dumps(rec, ensure_ascii=False)[:RAW_CHARS]
        yield RawRecord(f"{name}:record {i}", raw, rec if isinstance(rec, dict) else None, None if isinstance(rec, dict) else MALFORMED)


# --------------------------------------------------------------------- CSV


def csv_delimiter_of(path: str, header_line: str, option: str = "auto") -> str:
    """The delimiter: ``option`` unless "auto"; auto: tab for .tsv, else the one of
    CSV_DELIMITERS the header line holds most (',' if none)."""
    if option != "auto":
        return {"tab": "\t", "\\t": "\t"}.get(option, option)
    if _strip_compression(path).endswith(".tsv"):
        return "\t"
    counts = [(header_line.count(d), -i, d) for i, d in enumerate(CSV_DELIMITERS)]
    best = max(counts)
    return best[2] if best[0] > 0 else ","


class _RunawayRecord(Exception):
    """A record spanning lines grew past CSV_RECORD_MAX_BYTES: an unterminated quote."""


class _LineFeed:
    """Feeds a unit's lines to csv.reader, keeping those of the record being read (the reader
    reads one line at a time and ends a record at a line end, so they are exactly its lines)."""

    def __init__(self, lines: Iterator[tuple[int, int, bytes]]) -> None:
        self.lines, self.buf, self.size, self.eof = lines, [], 0, False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.size > CSV_RECORD_MAX_BYTES and len(self.buf) > 1:
            raise _RunawayRecord
        item = next(self.lines, None)
        if item is None:
            self.eof = True
            raise StopIteration
        self.buf.append(item)
        self.size += len(item[2])
        return item[2].decode("utf-8", "surrogateescape")

    def take(self) -> list[tuple[int, int, bytes]]:
        out, self.buf, self.size = self.buf, [], 0
        return out


def _unterminated(lines: list[tuple[int, int, bytes]], delimiter: str) -> bool:
    text = b"".join(line for _, _, line in lines).decode("utf-8", "surrogateescape")
    try:
        list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
        return False
    except csv.Error:
        return True


def _csv_rows(lines: Iterator[tuple[int, int, bytes]], delimiter: str) -> Iterator[tuple[list, list | None, str | None, int]]:
    """(its lines, fields or None, error, lines an unterminated quote took) of each CSV record. A quote still open at the end of
    the file (or after CSV_RECORD_MAX_BYTES of lines) would swallow every line after it: its
    first line becomes a malformed record naming the lines it took, and the lines after it are
    read again as records (counted, never merged)."""
    csv.field_size_limit(2**31 - 1)  # a field of any size; validation rejects long texts
    source: Iterator = lines
    while True:
        feed = _LineFeed(source)
        reader = csv.reader(feed, delimiter=delimiter)
        taken: list = []
        try:
            for row in reader:
                taken = feed.take()
                if feed.eof and len(taken) > 1 and _unterminated(taken, delimiter):
                    break
                yield taken, row, None, 0
            else:
                return
        except _RunawayRecord:
            taken = feed.take()
        except csv.Error as exc:
            yield feed.take() or [(-1, -1, b"")], None, f"{MALFORMED}: {exc}", 0
            continue
        yield taken[:1], None, f"{MALFORMED}: unterminated quote (the lines after it are read again)", len(taken)
        source = itertools.chain(taken[1:], source)


def _csv_header(unit: ReadUnit, option: str) -> tuple[list[str] | None, str]:
    """(header fields or None for an empty file, delimiter) from the file's first line."""
    whole = replace(unit, start=0, stop=-1)
    lines = _lines(whole)
    first = next(lines, None)
    if first is None:
        return None, ","
    delimiter = csv_delimiter_of(unit.path, first[2].decode("utf-8", "replace"), option)
    for _, row, _, _ in _csv_rows(itertools.chain([first], lines), delimiter):
        return [c.strip() for c in row] if row is not None else [], delimiter
    return None, delimiter  # pragma: no cover


def _csv_records(unit: ReadUnit, option: str) -> Iterator[RawRecord]:
    header, delimiter = _csv_header(unit, option)
    if header is None:
        return
    rows = _csv_rows(_lines(unit), delimiter)
    if unit.start == 0:
        next(rows, None)  # the header
    rowno = 0
    for taken, row, error, took in rows:
        first_no, offset, _ = taken[0]
        if error is not None:
            raw = b"".join(line for _, _, line in taken)[: RAW_CHARS * 4].decode("utf-8", "replace")[:RAW_CHARS]
            where = _where(unit, first_no, offset)
            if took > 1:  # the source names the lines the quote took (numbers, or the bytes of a range)
                where = (f"{unit.path}:lines {first_no}-{first_no + took - 1}" if first_no >= 0
                         else f"{where} (and the {took - 1} lines after it)")
            rowno += 1
            yield RawRecord(where, raw, None, error)
            continue
        if not row or all(not c for c in row):
            continue
        rowno += 1
        source = f"{unit.path}:row {rowno}" if unit.whole else f"{unit.path}:byte {offset}"
        raw = delimiter.join(row)
        if _has_surrogates(raw):
            yield RawRecord(source, raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:RAW_CHARS], None, INVALID_UTF8)
        elif len(row) != len(header):
            yield RawRecord(source, raw[:RAW_CHARS], None, MALFORMED)
        else:
            yield RawRecord(source, raw[:RAW_CHARS], {k: (v if v != "" else None) for k, v in zip(header, row)})


def unit_records(unit: ReadUnit) -> int | None:
    """Records in a unit when the plan knows them (Parquet, from the footer), else None."""
    if unit.fmt != "parquet":
        return None
    if unit.stop >= 0:
        return unit.stop - unit.start
    fs, path = resolve_filesystem(unit.path)
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    return meta.row_group(unit.part).num_rows - unit.start if meta.num_row_groups else 0


def needed_columns(cfg: DataConfig, need_tags: bool) -> list[str]:
    """The columns validation reads (Parquet reads only these)."""
    return [cfg.id_column, cfg.text_column, cfg.title_column, cfg.description_column] + ([cfg.tags_column] if need_tags else [])



_SURROGATE_ESCAPES = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


def _has_surrogates(text: str) -> bool:
    return _SURROGATE_ESCAPES.search(text) is not None  # a regex scan: ~40x faster than a Python loop


def _short(rec: dict) -> str:
    try:
        return json.dumps(rec, ensure_ascii=False, default=str)[:RAW_CHARS]
    except (TypeError, ValueError):
        return str(rec)[:RAW_CHARS]


# ----------------------------------------------------------------------------- validation


class Row(NamedTuple):
    """A valid row: ``text`` is normalized; ``tags`` is None when tags were not asked for.
    (A NamedTuple, not a dataclass: a scoring actor makes one per input row.)"""

    id: str
    text: str
    tags: tuple[str, ...] | None
    source: str
    length: int  # characters of the normalized text


class Reject(NamedTuple):
    id: str | None
    reason: str
    source: str
    raw: str


def _id_string(value: object) -> str | None:
    if type(value) is str:
        return value.strip() or None
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
    return _validate(rec.record, rec.source, cfg, need_tags, rec.raw_text)


def _validate(r: dict, source: str, cfg: DataConfig, need_tags: bool, raw_text) -> Row | Reject:
    """The checks of one parsed record ``r``; ``raw_text()`` is called for a reject only."""
    row_id = _id_string(r.get(cfg.id_column))
    if row_id is None:
        return Reject(None, MISSING_ID, source, raw_text())
    if cfg.text_column in r:
        text = r[cfg.text_column]
    elif cfg.title_column in r:
        title, desc = r.get(cfg.title_column), r.get(cfg.description_column)
        if title is not None and not isinstance(title, str) or desc is not None and not isinstance(desc, str):
            return Reject(row_id, NON_STRING_TEXT, source, raw_text())
        text = join_fields(title, desc) if (title or desc) else None
    else:
        text = None
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return Reject(row_id, NULL_TEXT, source, raw_text())
    if not isinstance(text, str):
        return Reject(row_id, NON_STRING_TEXT, source, raw_text())
    if len(text) > cfg.max_text_chars:
        return Reject(row_id, TEXT_TOO_LONG, source, raw_text())
    if _has_surrogates(text):
        return Reject(row_id, INVALID_UTF8, source, raw_text())
    clean = normalize(text, lowercase=cfg.lowercase, remove_stopwords=cfg.remove_stopwords)
    if not clean:
        return Reject(row_id, EMPTY_TEXT, source, raw_text())
    tags = None
    if need_tags:
        try:
            tags = tuple(parse_tags(r.get(cfg.tags_column), cfg.tags_delimiter))
        except TagParseError as exc:
            return Reject(row_id, f"{BAD_TAGS}: {exc}", source, raw_text())
    return Row(row_id, clean, tags, source, len(clean))


def read_unit(unit: ReadUnit, cfg: DataConfig, need_tags: bool) -> Iterator[Row | Reject]:
    """Valid rows and rejects of one unit's records, in file order (duplicate ids are found
    later, globally). Parquet records are checked as Arrow gives them, without a RawRecord each."""
    columns = needed_columns(cfg, need_tags)
    if unit.fmt == "parquet":
        for source, r in _parquet_rows(unit, columns):
            yield _validate(r, source, cfg, need_tags, lambda r=r: _short(r))
        return
    for rec in iter_records(unit, columns, cfg.csv_delimiter):
        yield validate_record(rec, cfg, need_tags)


def reason_kind(reason: str) -> str:
    """The stable reason code of a reject (before any ': detail')."""
    return reason.split(":", 1)[0]
