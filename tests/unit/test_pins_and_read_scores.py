"""Pinned inputs (serve_batch.pins) and reading only what _SUCCESS lists (tagging.scores)."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tagging
from serve_batch import pins
from tagging.readers import plan_units
from tagging.scores import ScoresNotReady, committed_files, finished_dates


def test_changes_name_a_rewritten_a_missing_and_a_new_file(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "in" / name).write_text("id,text\n1,x\n")
    planned = pins.identities(plan_units([str(tmp_path / "in")]))
    assert pins.changes([str(tmp_path / "in")], planned) == []
    (tmp_path / "in" / "a.csv").write_text("id,text\n1,y\n")  # same size, new mtime
    os.utime(tmp_path / "in" / "a.csv", ns=(1, 1))
    (tmp_path / "in" / "b.csv").unlink()
    (tmp_path / "in" / "c.csv").write_text("id,text\n")
    got = pins.changes([str(tmp_path / "in")], planned)
    assert any(c.endswith("a.csv changed (mtime_ns " + str(planned[str(tmp_path / "in" / "a.csv")]["mtime_ns"]) + " -> 1)") for c in got), got
    assert any(c.endswith("b.csv is gone") for c in got) and any(c.endswith("c.csv is new (not in the plan)") for c in got)


def test_s3_identity_has_the_etag(s3_server):
    bucket = s3_server.bucket()
    s3_server.client().put_object(Bucket=bucket[5:], Key="in/a.csv", Body=b"id,text\n1,x\n")
    ident = pins.file_identity(f"{bucket}/in/a.csv")
    assert ident["size"] == 12 and ident["etag"].strip('"')
    s3_server.client().put_object(Bucket=bucket[5:], Key="in/a.csv", Body=b"id,text\n1,y\n")
    assert pins.changes([f"{bucket}/in/a.csv"], {f"{bucket}/in/a.csv": ident})[0].count("etag") == 1


def _date(out, date, files, success=True):
    d = out / f"date={date}"
    d.mkdir(parents=True)
    entries = []
    for name, ids in files.items():
        pq.write_table(pa.table({"id": ids}), d / name)
        entries.append({"path": name, "rows": len(ids), "sha256": "x"})
    if success:
        (d / "_SUCCESS").write_text(json.dumps({"files": entries, "rejects": []}))


def test_read_scores_reads_exactly_the_manifest(tmp_path):
    out = tmp_path / "out"
    _date(out, "2026-01-01", {"part-a.parquet": ["1", "2"]})
    pq.write_table(pa.table({"id": ["9"]}), out / "date=2026-01-01" / "part-stray.parquet")  # not in the manifest
    _date(out, "2026-01-02", {"part-a.parquet": ["3"]}, success=False)  # a run still going
    assert finished_dates(str(out)) == ["2026-01-01"]
    assert tagging.read_scores(str(out), "2026-01-01", verify=True).column("id").to_pylist() == ["1", "2"]
    everything = tagging.read_scores(str(out))
    assert everything.column("id").to_pylist() == ["1", "2"] and set(everything.column("date").to_pylist()) == {"2026-01-01"}
    with pytest.raises(ScoresNotReady, match="2026-01-02 is not complete"):
        tagging.read_scores(str(out), "2026-01-02")
    assert committed_files(str(out), "2026-01-01") == [str(out / "date=2026-01-01" / "part-a.parquet")]


def test_read_scores_cli_lists_and_writes(tmp_path):
    from typer.testing import CliRunner

    from tagging.cli import app

    out = tmp_path / "out"
    _date(out, "2026-01-01", {"part-a.parquet": ["1", "2"]})
    r = CliRunner().invoke(app, ["read-scores", str(out), "--list-files"])
    assert r.exit_code == 0 and r.stdout.split() == [str(out / "date=2026-01-01" / "part-a.parquet")]
    r = CliRunner().invoke(app, ["read-scores", str(out), "--date", "2026-01-01"])
    assert r.exit_code == 0 and [json.loads(x)["id"] for x in r.stdout.splitlines()] == ["1", "2"]
    r = CliRunner().invoke(app, ["read-scores", str(out), "--date", "2026-01-01", "--to", str(tmp_path / "t.parquet")])
    assert r.exit_code == 0 and pq.read_table(tmp_path / "t.parquet").num_rows == 2
    r = CliRunner().invoke(app, ["read-scores", str(out), "--date", "2026-01-03"])
    assert r.exit_code == 1 and "not complete" in r.output


def test_an_s3_unit_is_read_at_its_planned_etag_or_not_at_all(s3_server, tmp_path):
    """pyarrow's S3 reads are unconditional ranged GETs: after a replace they return the new
    object's bytes. A unit pinned to its ETag reads with If-Match instead: every row of the
    planned object, or an error, and the check after the read names the file."""
    from serve_batch.stages import read_item, work_items
    from tagging.config import DataConfig

    bucket = s3_server.bucket()
    n = 400
    pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": [f"text {i}" for i in range(n)]}),
                   tmp_path / "a.parquet", row_group_size=100)
    s3_server.client().upload_file(str(tmp_path / "a.parquet"), bucket[5:], "in/a.parquet")
    units = plan_units([f"{bucket}/in/a.parquet"])
    items = work_items(units, pins.identities(units))
    assert items[0]["version"] == json.loads(items[0]["identity"])["etag"] != ""

    def ids(item):
        return [r.id for _, first, recs in read_item(item, DataConfig()) if first >= 0 for r in recs]

    assert [i for item in items for i in ids(item)] == [str(i) for i in range(n)]
    assert all(pins.changed_since_plan(item) is None for item in items)
    pq.write_table(pa.table({"id": [f"new-{i}" for i in range(n)], "text": ["x"] * n}), tmp_path / "b.parquet", row_group_size=100)
    s3_server.client().upload_file(str(tmp_path / "b.parquet"), bucket[5:], "in/a.parquet")  # replaced under the same key
    assert ids({**items[1], "version": ""})[0] == "new-100"  # unpinned: the other version, silently
    with pytest.raises(OSError, match="PreconditionFailed"):
        ids(items[1])
    assert pins.changed_since_plan(items[1]).startswith(f"{bucket}/in/a.parquet changed (etag ")
    # Text files read pinned too: byte ranges of JSON Lines (seek + stream) and a gzipped file (decompressed).
    import gzip

    lines = "".join(json.dumps({"id": str(i), "text": f"some text {i}"}) + "\n" for i in range(n)).encode()
    s3_server.client().put_object(Bucket=bucket[5:], Key="in/b.jsonl", Body=lines)
    s3_server.client().put_object(Bucket=bucket[5:], Key="in/c.jsonl.gz", Body=gzip.compress(lines))
    units = plan_units([f"{bucket}/in/b.jsonl", f"{bucket}/in/c.jsonl.gz"], text_unit_bytes=4000)
    items = work_items(units, pins.identities(units))
    assert len(items) > 3 and all(item["version"] for item in items)
    assert [i for item in items for i in ids(item)] == [str(i) for i in range(n)] * 2


def test_require_upstream_success_waits_for_or_requires_the_input_folders_success(tmp_path, untrained_artifact, capsys):
    import threading

    from typer.testing import CliRunner

    from jobs.score_nightly import main as nightly
    from serve_batch.layout import ScoreError
    from tagging.cli import app

    folder = tmp_path / "in" / "dt=2026-01-01"
    folder.mkdir(parents=True)
    (folder / "a.csv").write_text("id,text\n1,x\n")
    for given in (str(folder), str(folder / "a.csv"), str(folder / "*.csv")):  # a folder, a file in it, a glob
        assert pins.upstream_folders([given]) == [str(folder)]
        with pytest.raises(ScoreError, match=f"upstream not finished: {folder} has no _SUCCESS.*--upstream-wait"):
            pins.wait_for_upstream([given])
    threading.Timer(0.3, (folder / "_SUCCESS").touch).start()
    pins.wait_for_upstream([str(folder)], wait_s=30, poll_s=0.05)  # returns once the upstream job has finished
    (folder / "_SUCCESS").unlink()
    args = ["--model", str(untrained_artifact(1).path), "--input", str(folder), "--output", str(tmp_path / "out"),
            "--date", "2026-01-01", "--require-upstream-success", "--upstream-wait", "0.2"]
    r = CliRunner().invoke(app, ["score", *args])
    assert r.exit_code == 1 and f"error: upstream not finished: {folder} has no _SUCCESS after waiting 0.2 s" in r.output
    assert nightly(args) == 1 and f"{folder} has no _SUCCESS" in capsys.readouterr().err  # the job entrypoint: the same
    assert not (tmp_path / "out").exists()  # nothing planned or started


def test_the_readme_duckdb_one_liner_reads_exactly_the_manifest(tmp_path):
    """The README's DuckDB line, run as it is (the `duckdb` CLI of the test extra): only the
    files _SUCCESS lists, and for an unfinished date no row at all."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("duckdb -c ") and "--list-files" in x)
    out = tmp_path / "out"
    _date(out, "2026-01-01", {"part-a.parquet": ["1", "2"], "part-b.parquet": ["3"]})
    pq.write_table(pa.table({"id": ["9"]}), out / "date=2026-01-01" / "part-stray.parquet")  # not in the manifest
    _date(out, "2026-01-02", {"part-a.parquet": ["4"]}, success=False)  # a run still going
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def count(date):
        cmd = line.replace("OUT", str(out)).replace("2026-11-21", date)
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=120)
        found = re.findall(r"│\s*(\d+)\s*│", r.stdout)
        return int(found[-1]) if r.returncode == 0 and found else (r.returncode, r.stderr[-300:])

    assert count("2026-01-01") == 3
    assert count("2026-01-02")[0] != 0  # nothing listed: DuckDB refuses an empty list, no row is read
