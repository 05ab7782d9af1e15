"""The output of one scoring date: layout, staging, atomic commits, resume state (Ray-free).

::

    OUTPUT/date=YYYY-MM-DD/
        part-{unit}-{start}.parquet        scored rows of one unit, records start.. (seq order)
        _rejects/part-{unit}-{start}.parquet   rejected records of the same fragment
        _rejects/dup-part-{unit}-{start}.parquet  later duplicate ids moved out of that part
        _commits/{unit}.json               commit marker: the unit's files and record count
        _run.json                          what this date is being scored with (model, inputs)
        _lease                             the run that owns the date now (serve_batch.lease)
        _staging/{attempt}/                fragments written by the scoring actors (unique per run)
        summary.json, then _SUCCESS        written last

``unit`` is ``ReadUnit.name`` (file index and Parquet row group), ``start`` the first record
(``seq``) of the fragment: names are a function of the input, never random. A unit is
committed by moving its staged files into place, then writing its marker; a unit without a
marker is not committed, and its files (if a kill interrupted the moves) are deleted before it
is redone. Moves are renames on a local filesystem (atomic); on object stores ``move`` is a
copy, which the marker makes safe. Names starting with ``_`` are skipped by Parquet dataset
readers (pyarrow, Spark, DuckDB), so ``OUTPUT/`` reads as a dataset partitioned by ``date``.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import uuid
from collections.abc import Iterable

import pyarrow.fs as pafs

from tagging.readers import resolve_filesystem

SUCCESS = "_SUCCESS"
SUMMARY = "summary.json"
RUN = "_run.json"
COMMITS = "_commits"
REJECTS = "_rejects"
STAGING = "_staging"
LEASE = "_lease"  # one run per date: serve_batch.lease


class ScoreError(ValueError):
    """A scoring run cannot start or finish; the message says why (one line)."""


def part_name(unit: str, start: int) -> str:
    """Deterministic name of the fragment of ``unit`` that begins at record ``start``."""
    return f"part-{unit}-{start:010d}.parquet"


def unit_of(name: str) -> str | None:
    """The unit of a part / rejects / dup file name, or None for any other name."""
    base = posixpath.basename(name)
    if base.startswith("dup-"):
        base = base[4:]
    if not (base.startswith("part-") and base.endswith(".parquet")):
        return None
    return base[len("part-") : -len(".parquet")].rsplit("-", 1)[0]


def check_date(date: str) -> str:
    try:
        return dt.date.fromisoformat(date).isoformat()
    except ValueError:
        raise ScoreError(f"--date {date!r}: expected YYYY-MM-DD") from None


class OutputLayout:
    """Paths and atomic operations for ``OUTPUT/date=D`` on any pyarrow filesystem."""

    def __init__(self, output: str, date: str, filesystem: pafs.FileSystem | None = None) -> None:
        self.uri = output
        self.date = check_date(date)
        self.fs, base = (filesystem, output) if filesystem is not None else resolve_filesystem(output)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.dir = f"{base.rstrip('/')}/date={self.date}"

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        return posixpath.join(self.dir, *parts)

    def uri_of(self, path: str) -> str:
        """A path of this filesystem as a URI other processes can resolve."""
        if self.local or "://" not in self.uri:
            return path
        return f"{self.uri.split('://', 1)[0]}://{path}"

    def staging(self, attempt: str) -> str:
        return self.path(STAGING, attempt)

    # ------------------------------------------------------------------ basic I/O
    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def mkdirs(self, path: str | None = None) -> None:
        self.fs.create_dir(path or self.dir, recursive=True)

    def list(self, path: str | None = None) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(path or self.dir, recursive=False, allow_not_found=True)
        return sorted(self.fs.get_file_info(sel), key=lambda i: i.path)

    def read_json(self, path: str) -> dict | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as exc:
            if not self.exists(path):
                return None
            raise ScoreError(f"{path}: unreadable ({exc})") from None

    def write_json(self, path: str, data: object) -> None:
        """Write to a temporary name in the same directory, then move into place (atomic locally)."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write((json.dumps(data, indent=1, default=str) + "\n").encode("utf-8"))
        self.fs.move(tmp, path)

    def delete(self, path: str) -> None:
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(path)

    # ------------------------------------------------------------------ run state
    def succeeded(self) -> bool:
        return self.exists(self.path(SUCCESS))

    def clear(self) -> None:
        """Remove everything of this date but its lease: _SUCCESS and the run record first, so a kill
        midway leaves a directory that the next run recognizes as not resumable and clears again."""
        for name in (SUCCESS, SUMMARY, RUN, COMMITS, REJECTS, STAGING):  # folders by name: a listing may miss
            self.delete(self.path(name))  # them (pyarrow lists a GCS folder only by its marker object)
        for info in self.list():
            if posixpath.basename(info.path) != LEASE:
                self.delete(info.path)

    def committed(self) -> dict[str, dict]:
        """Commit markers by unit name."""
        out = {}
        for info in self.list(self.path(COMMITS)):
            if info.path.endswith(".json") and info.type == pafs.FileType.File:
                marker = self.read_json(info.path)
                if marker and marker.get("unit"):
                    out[marker["unit"]] = marker
        return out

    def discard_uncommitted(self, committed: Iterable[str]) -> int:
        """Delete staging and every output file of a unit without a commit marker; returns files deleted."""
        keep = set(committed)
        self.delete(self.path(STAGING))
        deleted = 0
        for folder in (self.dir, self.path(REJECTS)):
            for info in self.list(folder):
                unit = unit_of(info.path)
                stray_tmp = ".tmp-" in posixpath.basename(info.path)
                if info.type == pafs.FileType.File and ((unit is not None and unit not in keep) or stray_tmp):
                    self.fs.delete_file(info.path)
                    deleted += 1
        for info in self.list(self.path(COMMITS)):
            if ".tmp-" in info.path:
                self.fs.delete_file(info.path)
        return deleted

    def commit_unit(self, unit: str, moves: list[tuple[str, str]], marker: dict, before_marker=None) -> None:
        """Move a unit's staged files into place, then write its marker (the commit point)."""
        for src, dst in moves:
            self.fs.move(src, dst)
        if before_marker is not None:
            before_marker()
        self.write_json(self.path(COMMITS, f"{unit}.json"), marker)
