"""Reading scored dates safely: only what a date's ``_SUCCESS`` manifest lists (Ray-free).

``OUTPUT/date=D/_SUCCESS`` (written last by `tagging score`) names every committed part file
of the date with its rows and sha256. A date without it is unfinished (or being redone) and
contributes nothing; part files not in the manifest (a unit committed by a run still going,
a duplicate not yet moved out) are never read. Plain ``pyarrow.dataset.dataset(OUTPUT)`` does
not know this and can see half a night.
"""

from __future__ import annotations

import json
import posixpath

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tagging.readers import resolve_filesystem

SUCCESS = "_SUCCESS"


class ScoresNotReady(LookupError, ValueError):
    """The date has no _SUCCESS (not scored yet, or a run is scoring it now)."""


def success_manifest(output: str, date: str) -> dict:
    """The parsed _SUCCESS of OUTPUT/date=D; ScoresNotReady if there is none."""
    fs, base = resolve_filesystem(output)
    path = f"{base.rstrip('/')}/date={date}/{SUCCESS}"
    try:
        with fs.open_input_stream(path) as f:
            raw = f.read()
    except (FileNotFoundError, OSError):
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise ScoresNotReady(f"{output}: date {date} is not complete (no {SUCCESS})") from None
        raise
    if not raw.strip():
        raise ValueError(f"{path}: an empty _SUCCESS (written by an older tagging): no manifest to read")
    return json.loads(raw)


def committed_files(output: str, date: str, rejects: bool = False) -> list[str]:
    """Full paths (on the output's filesystem) of exactly the files _SUCCESS lists."""
    _, base = resolve_filesystem(output)
    manifest = success_manifest(output, date)
    root = f"{base.rstrip('/')}/date={date}"
    return [posixpath.join(root, e["path"]) for e in manifest["rejects" if rejects else "files"]]


def finished_dates(output: str) -> list[str]:
    """Dates under OUTPUT that have a _SUCCESS, sorted."""
    fs, base = resolve_filesystem(output)
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    dates = [i.base_name[len("date="):] for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith("date=")]
    return sorted(d for d in dates if fs.get_file_info(f"{base.rstrip('/')}/date={d}/{SUCCESS}").type == pafs.FileType.File)


def read_summary(output: str, date: str) -> dict | None:
    """summary.json of a finished date (None when it has none)."""
    fs, base = resolve_filesystem(output)
    try:
        with fs.open_input_stream(f"{base.rstrip('/')}/date={date}/summary.json") as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        return None


def previous_summaries(output: str, date: str, last: int) -> list[dict]:
    """summary.json of the ``last`` finished dates before ``date`` under OUTPUT, oldest first."""
    dates = [d for d in finished_dates(output) if d < date][-last:] if last > 0 else []
    return [s for s in (read_summary(output, d) for d in dates) if s]


def read_scores(output: str, date: str | None = None, rejects: bool = False, columns: list[str] | None = None,
                verify: bool = False, as_dataset: bool = False):
    """Scored rows (or ``rejects``) of one finished date, or of every finished date when ``date`` is
    None (with a ``date`` column added), reading only the files each _SUCCESS lists.

    An Arrow table, or with ``as_dataset`` a Ray Dataset over the same files (read lazily by Ray
    Data, for dates too big for one process; Ray is imported only then). A given ``date`` that is
    not finished raises ScoresNotReady. ``verify`` (Arrow only) also checks each file's row count
    against the manifest (sha256 is in the manifest for external checks)."""
    fs, base = resolve_filesystem(output)
    entries = [(d, f"{base.rstrip('/')}/date={d}/{e['path']}", e["rows"])
               for d in ([date] if date is not None else finished_dates(output))
               for e in success_manifest(output, d)["rejects" if rejects else "files"]]
    if as_dataset:
        return _dataset(fs, base, [path for _, path, _ in entries], columns, with_date=date is None)
    tables = []
    for d, path, rows in entries:
        t = pq.read_table(path, filesystem=fs, columns=columns)
        if verify and t.num_rows != rows:
            raise ValueError(f"{path}: {t.num_rows} rows, _SUCCESS says {rows}")
        if date is None:
            t = t.append_column("date", pa.array([d] * t.num_rows, pa.string()))
        tables.append(t)
    return pa.concat_tables(tables) if tables else pa.table({})


def nights_table(summaries: list[dict]) -> str:
    """The nights side by side (one column per date, oldest first) as a Markdown table: model,
    accounting, rejects by reason, throughput, input-quality shares, each tag's rate (``!`` after
    a rate flagged as drift against training or the previous nights), the drift flags."""
    def drift(s: dict) -> dict:
        return s.get("drift") or {}

    def share(s: dict, part: str) -> str:
        d = drift(s).get(part)
        return f"{d['share']:.2%}" + (" !" if d["flagged"] else "") if d else ""

    def rate(s: dict, tag: str) -> str:
        v = s.get("tags", {}).get(tag)
        if v is None:
            return ""
        flagged = any(tag in (drift(s).get(p) or {}).get("flagged", []) for p in ("vs_training", "vs_previous"))
        return f"{v['rate']:.2%}" + (" !" if flagged else "")

    reasons = sorted({r for s in summaries for r in s.get("rejects_by_reason", {})})
    tags = sorted({t for s in summaries for t in s.get("tags", {})})
    rows = [("model", lambda s: str(s.get("model", {}).get("version", ""))),
            *[(k.replace("_", " "), lambda s, k=k: f"{s.get(k, 0):,}") for k in ("rows_read", "rows_scored", "rows_rejected")],
            *[(f"rejected: {r}", lambda s, r=r: f"{s.get('rejects_by_reason', {}).get(r, 0):,}") for r in reasons],
            ("docs/s", lambda s: f"{s['throughput_docs_per_s']:,.0f}" if s.get("throughput_docs_per_s") else ""),
            ("truncated", lambda s: share(s, "truncated")), ("chars out of vocabulary", lambda s: share(s, "oov_chars")),
            *[(f"tag {t}", lambda s, t=t: rate(s, t)) for t in tags],
            ("drift flagged", lambda s: ", ".join(drift(s).get("flagged", [])) or "none")]
    lines = ["| | " + " | ".join(s["date"] for s in summaries) + " |", "|---" * (len(summaries) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(cell(s) for s in summaries) + " |" for name, cell in rows]
    return "\n".join(lines) + "\n"


def _dataset(fs: pafs.FileSystem, base: str, paths: list[str], columns: list[str] | None, with_date: bool):
    """A Ray Dataset of exactly ``paths``; ``with_date``: the ``date`` column from their date=D folders."""
    import ray.data
    from ray.data.datasource import Partitioning

    if not paths:
        return ray.data.from_items([])
    partitioning = Partitioning("hive", base_dir=base) if with_date else None
    if with_date and columns is not None:
        columns = [*columns, "date"]  # a partition column is read only if selected
    return ray.data.read_parquet(paths, filesystem=fs, columns=columns, partitioning=partitioning)
