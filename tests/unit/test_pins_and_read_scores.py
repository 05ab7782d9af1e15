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
