"""Unit tests of serve_batch's Ray-free parts: layout and commits, receipts, duplicate pass,
Arrow output tables, the read UDF, fault hook, CLI surface."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serve_batch import faults
from serve_batch.dedup import dedup_pass, find_duplicates
from serve_batch.job import Committer, ScoreOptions, _same_run, actor_wait_s
from serve_batch.layout import COMMITS, REJECTS, OutputLayout, ScoreError, check_date, part_name, unit_of
from serve_batch.scorer import SCORED_SCHEMA, scored_table
from tagging.onnx_scoring import Scores
from serve_batch.stages import RECEIPT_SCHEMA, read_item, work_items
from tagging.config import DataConfig
from tagging.readers import ReadUnit, plan_units


# ----------------------------------------------------------------------------- names, dates


def test_part_names_are_deterministic_and_parse_back():
    name = part_name("00003-00002", 8192)
    assert name == "part-00003-00002-0000008192.parquet"
    assert unit_of(name) == "00003-00002"
    assert unit_of("dup-" + name) == "00003-00002"
    assert unit_of("/x/_rejects/" + name) == "00003-00002"
    assert unit_of("summary.json") is None and unit_of("_SUCCESS") is None


def test_check_date():
    assert check_date("2026-01-31") == "2026-01-31"
    with pytest.raises(ScoreError, match="YYYY-MM-DD"):
        check_date("31/01/2026")


# ----------------------------------------------------------------------------- layout


def test_layout_commit_resume_and_discard(tmp_path):
    lay = OutputLayout(str(tmp_path / "out"), "2026-01-02")
    assert lay.dir.endswith("/out/date=2026-01-02")
    lay.mkdirs(lay.path(COMMITS))
    lay.mkdirs(lay.path(REJECTS))
    stage = lay.staging("a1")
    lay.mkdirs(stage)
    for unit in ("00000-00000", "00001-00000"):
        pq.write_table(pa.table({"id": ["x"]}), f"{stage}/scored-{part_name(unit, 0)}")
    lay.commit_unit("00000-00000", [(f"{stage}/scored-{part_name('00000-00000', 0)}", lay.path(part_name("00000-00000", 0)))],
                    {"unit": "00000-00000", "files": [part_name("00000-00000", 0)]})
    # A kill between the moves and the marker leaves files of an uncommitted unit behind.
    lay.fs.move(f"{stage}/scored-{part_name('00001-00000', 0)}", lay.path(part_name("00001-00000", 0)))
    (tmp_path / "out/date=2026-01-02/_commits/00001-00000.json.tmp-dead").write_text("{")
    assert set(lay.committed()) == {"00000-00000"}
    deleted = lay.discard_uncommitted(lay.committed())
    assert deleted == 1
    names = sorted(p.name for p in (tmp_path / "out/date=2026-01-02").iterdir())
    assert names == ["_commits", "_rejects", part_name("00000-00000", 0)]
    assert os.listdir(tmp_path / "out/date=2026-01-02/_commits") == ["00000-00000.json"]


def test_layout_on_a_non_local_filesystem():
    """Object-store-like filesystems: move instead of rename; the same commit protocol (the lease is serve_batch.lease's)."""
    import fsspec
    import pyarrow.fs as pafs

    fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory")))
    lay = OutputLayout("/bucket/scores", "2026-01-02", filesystem=fs)
    assert not lay.local
    for sub in (COMMITS, REJECTS, lay.staging("a1")):
        lay.mkdirs(lay.path(sub) if not sub.startswith("/") else sub)
    staged = f"{lay.staging('a1')}/scored-{part_name('00000-00000', 0)}"
    pq.write_table(pa.table({"id": ["x"]}), staged, filesystem=fs)
    lay.commit_unit("00000-00000", [(staged, lay.path(part_name("00000-00000", 0)))], {"unit": "00000-00000"})
    lay.write_json(lay.path("_run.json"), {"a": 1})
    assert set(lay.committed()) == {"00000-00000"} and lay.read_json(lay.path("_run.json")) == {"a": 1}
    assert lay.discard_uncommitted(["00000-00000"]) == 0 and not lay.exists(lay.path("_staging"))
    assert pq.read_table(lay.path(part_name("00000-00000", 0)), filesystem=fs).num_rows == 1
    lay.clear()
    assert lay.list() == []


def test_same_run_compares_model_inputs_and_output_options():
    base = {"schema": 1, "model_sha": "a", "precision": "fp32", "top_k": None, "units": [{"name": "u", "size": 1}]}
    assert _same_run(base, dict(base, created_at="later"))
    assert not _same_run(base, dict(base, model_sha="b"))
    assert not _same_run(base, dict(base, top_k=3))
    assert not _same_run(base, dict(base, units=[{"name": "u", "size": 2}]))


# ----------------------------------------------------------------------------- receipts -> commits


def _receipt(unit, start, stop, rows=0, rejects=0, total=-1, scored=None, rej=None):
    return {"unit": unit, "start": start, "ranges": [start, stop] if start >= 0 else [], "rows": rows,
            "rejects": rejects, "scored_file": scored, "rejects_file": rej, "total": total}


def _committer(tmp_path, units):
    lay = OutputLayout(str(tmp_path), "2026-01-02")
    for sub in (COMMITS, REJECTS):
        lay.mkdirs(lay.path(sub))
    stage = lay.staging("a1")
    lay.mkdirs(stage)
    plan = [ReadUnit(f"/in/{u}.csv", "csv", 0, i) for i, u in enumerate(units)]
    return lay, stage, Committer(lay, plan, "a1", stage, faults.FaultPlan())


def _stage(stage, name, n):
    pq.write_table(pa.table({"id": [str(i) for i in range(n)]}), f"{stage}/{name}")
    return name


def test_committer_commits_when_ranges_cover_all_records(tmp_path):
    lay, stage, c = _committer(tmp_path, ["00000-00000"])
    u = "00000-00000"
    # END first, fragments out of order; the unit commits only when 0..total-1 are all covered.
    c.add(pa.Table.from_pylist([_receipt(u, -1, -1, total=10)], schema=RECEIPT_SCHEMA))
    c.add(pa.Table.from_pylist([_receipt(u, 6, 10, rows=4, scored=_stage(stage, f"scored-{part_name(u, 6)}", 4))],
                               schema=RECEIPT_SCHEMA))
    assert not c.committed
    c.add(pa.Table.from_pylist([_receipt(u, 0, 6, rows=5, rejects=1, scored=_stage(stage, f"scored-{part_name(u, 0)}", 5),
                                         rej=_stage(stage, f"rejects-{part_name(u, 0)}", 1))], schema=RECEIPT_SCHEMA))
    marker = json.loads((tmp_path / f"date=2026-01-02/_commits/{u}.json").read_text())
    assert marker["records"] == 10 and marker["rows"] == 9 and marker["rejects"] == 1
    assert marker["files"] == [part_name(u, 0), part_name(u, 6)]
    assert (tmp_path / "date=2026-01-02" / part_name(u, 6)).is_file()
    assert (tmp_path / "date=2026-01-02/_rejects" / part_name(u, 0)).is_file()
    assert c.unfinished() == [] and c.rows == 9


def test_committer_refuses_overlapping_fragments(tmp_path):
    lay, stage, c = _committer(tmp_path, ["00000-00000", "00001-00000"])
    u = "00000-00000"
    a = _receipt(u, 0, 6, rows=6, scored=_stage(stage, f"scored-{part_name(u, 0)}", 6))
    c.add(pa.Table.from_pylist([a, a], schema=RECEIPT_SCHEMA))  # an identical repeat is harmless
    c.add(pa.Table.from_pylist([_receipt(u, 3, 8, rows=5, total=8, scored=_stage(stage, f"scored-{part_name(u, 3)}", 5))],
                               schema=RECEIPT_SCHEMA))
    assert not c.committed  # overlap: rescored next round
    assert [x.name for x in c.unfinished()] == ["00000-00000", "00001-00000"]


def test_committer_checks_row_counts_of_staged_files(tmp_path):
    lay, stage, c = _committer(tmp_path, ["00000-00000"])
    u = "00000-00000"
    c.add(pa.Table.from_pylist([_receipt(u, 0, 4, rows=4, total=4, scored=_stage(stage, f"scored-{part_name(u, 0)}", 3))],
                               schema=RECEIPT_SCHEMA))
    assert not c.committed


def test_committer_commits_an_empty_unit(tmp_path):
    lay, stage, c = _committer(tmp_path, ["00000-00000"])
    c.add(pa.Table.from_pylist([_receipt("00000-00000", -1, -1, total=0)], schema=RECEIPT_SCHEMA))
    assert list(c.committed) == ["00000-00000"]


def _parts(lay, spec):
    lay.mkdirs()
    files = []
    for name, ids in spec:
        path = lay.path(name)
        n = len(ids)
        pq.write_table(pa.table({"id": ids, "tags": pa.array([[]] * n, pa.list_(pa.string())),
                                 "truncated": [False] * n, "source": [f"{name}:{i + 1}" for i in range(n)]}), path)
        files.append(path)
    return files


def test_dedup_first_occurrence_in_input_order_wins_and_is_idempotent(tmp_path):
    lay = OutputLayout(str(tmp_path), "2026-01-02")
    lay.mkdirs(lay.path(REJECTS))
    files = _parts(lay, [("part-00000-00000-0000000000.parquet", ["a", "b", "c", "b"]),
                         ("part-00001-00000-0000000000.parquet", ["d", "a", "e"]),
                         ("part-00002-00000-0000000000.parquet", ["c", "f", "a"])])
    dups = find_duplicates(lay, files)
    assert {k: sorted(v) for k, v in dups.items()} == {0: [(3, 0, 1)], 1: [(1, 0, 0)], 2: [(0, 0, 2), (2, 0, 0)]}
    for pass_ids in (1, 3, 5):  # searched in passes over hash partitions: the same answer
        assert {k: sorted(v) for k, v in find_duplicates(lay, files, pass_ids=pass_ids).items()} == dups

    def boom():
        raise KeyboardInterrupt  # a kill after the dup file, before the part rewrite

    with pytest.raises(KeyboardInterrupt):
        dedup_pass(lay, files, before_rewrite=boom)
    assert dedup_pass(lay, files) == 4  # the rerun: same answer from the files as they are
    assert dedup_pass(lay, files) == 0
    kept = [pq.read_table(f).column("id").to_pylist() for f in files]
    assert kept == [["a", "b", "c"], ["d", "e"], ["f"]]
    dup = pq.read_table(lay.path(REJECTS, "dup-part-00002-00000-0000000000.parquet")).to_pylist()
    assert [(r["id"], r["reason"], r["source"]) for r in dup] == [
        ("c", "duplicate_id", "part-00002-00000-0000000000.parquet:1"),
        ("a", "duplicate_id", "part-00002-00000-0000000000.parquet:3")]
    assert "part-00000-00000-0000000000.parquet:3" in dup[0]["raw"]


def test_dedup_confirms_hash_matches_on_the_ids(tmp_path, monkeypatch):
    import pandas as pd

    lay = OutputLayout(str(tmp_path), "2026-01-02")
    files = _parts(lay, [("part-00000-00000-0000000000.parquet", ["a", "b", "a"])])
    monkeypatch.setattr(pd.util, "hash_array", lambda arr, categorize=False: np.zeros(len(arr), np.uint64))
    assert {k: sorted(v) for k, v in find_duplicates(lay, files).items()} == {0: [(2, 0, 0)]}


# ----------------------------------------------------------------------------- output tables


def test_scored_table_tags_and_scores():
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.3, 0.2]], dtype=np.float32)
    tags = probs >= np.array([0.5, 0.5, 0.5])
    s = Scores(probs, tags, np.array([False, True]))
    t = scored_table(pa.array(["x", "y"]), pa.array(["f:1", "f:2"]), s, ["a", "b", "c"], "v1")
    assert t.schema == SCORED_SCHEMA
    rows = t.to_pylist()
    assert rows[0]["tags"] == ["a", "c"] and rows[1]["tags"] == []
    assert dict(rows[0]["scores"]) == pytest.approx({"a": 0.9, "b": 0.2, "c": 0.6})
    assert rows[1]["truncated"] and rows[0]["model_version"] == "v1"
    top = scored_table(pa.array(["x", "y"]), pa.array(["f:1", "f:2"]), s, ["a", "b", "c"], "v1", top_k=2).to_pylist()
    assert [k for k, _ in top[0]["scores"]] == ["a", "c"] and [k for k, _ in top[1]["scores"]] == ["b", "c"]


# ----------------------------------------------------------------------------- read UDF


def test_read_item_yields_every_record_in_chunks_then_the_count(tmp_path):
    from tagging.readers import Reject
    from tagging.synth import JSONL_EXTRA_RAW_LINES, generate_corpus, write_corpus

    df = generate_corpus(60, seed=2, bad_fraction=0.2)
    write_corpus(df, str(tmp_path / "x.jsonl"))
    units = plan_units([str(tmp_path / "x.jsonl")])
    (item,) = work_items(units)
    assert (item["start"], item["stop"], item["total"]) == (0, -1, -1)  # a small text file is one whole item
    out = list(read_item(item, DataConfig(), chunk=25))
    n = 60 + JSONL_EXTRA_RAW_LINES
    assert [first for _, first, _ in out] == list(range(0, n, 25)) + [-1]
    assert out[-1] == (units[0].name, -1, n)  # the record count comes last
    recs = [r for _, first, chunk in out if first >= 0 for r in chunk]
    assert len(recs) == n
    rejects = {r.reason for r in recs if isinstance(r, Reject)}
    assert {"null_text", "empty_text", "missing_id", "malformed_record", "invalid_utf8", "text_too_long",
            "non_string_text"} <= rejects
    assert all(r.text == r.text.strip() and r.text == r.text.lower() for r in recs if not isinstance(r, Reject))


def test_parquet_row_groups_are_cut_into_row_ranges_that_cover_them_exactly(tmp_path):
    from tagging.readers import read_unit

    n = 1000
    pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": [f"text {i}" for i in range(n)],
                             "other": [b"x" * 50] * n}), tmp_path / "x.parquet", row_group_size=600)
    units = plan_units([str(tmp_path / "x.parquet")], parquet_unit_rows=256)
    items = work_items(units)
    # 600 rows: 3 equal ranges of 200; 400 rows: 2 of 200 (equal ranges keep actors evenly loaded)
    assert [(i["part"], i["start"], i["stop"], i["total"]) for i in items] == [
        (0, 0, 200, 200), (0, 200, 400, 200), (0, 400, 600, 200), (1, 0, 200, 200), (1, 200, 400, 200)]
    assert len({u.name for u in units}) == 5 and [u.name for u in units] == sorted(u.name for u in units)
    ids, sources = [], []
    for item in items:
        for _, first, chunk in read_item(item, DataConfig(), chunk=64):
            if first >= 0:
                ids += [r.id for r in chunk]
                sources += [r.source for r in chunk]
    assert ids == [str(i) for i in range(n)]  # every record once, in file order
    assert sources[600].endswith(":row 601")  # sources count rows across row groups
    whole = [r.id for u in plan_units([str(tmp_path / "x.parquet")]) for r in read_unit(u, DataConfig(), need_tags=False)]
    assert whole == ids


# ----------------------------------------------------------------------------- fault hook


def test_fault_plan_from_env():
    assert faults.FaultPlan.from_env({}).point is None
    plan = faults.FaultPlan.from_env({"SERVE_BATCH_FAULT": "commit@3", "SERVE_BATCH_FAULT_TARGET": "self"})
    assert (plan.point, plan.nth, plan.target) == ("commit", 3, "self")
    with pytest.raises(ValueError, match="unknown point"):
        faults.FaultPlan.from_env({"SERVE_BATCH_FAULT": "nowhere"})


def test_fault_fires_once_with_a_flag(tmp_path):
    plan = faults.FaultPlan("score", 1, "self", str(tmp_path / "flag"))
    faults.maybe_fault(plan, "commit")  # other point: nothing
    for expect_killed in (True, False):
        pid = os.fork()
        if pid == 0:  # child
            faults._hits.clear()
            faults.maybe_fault(plan, "score")
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) == expect_killed
        if expect_killed:
            assert os.WTERMSIG(status) == signal.SIGKILL


# ----------------------------------------------------------------------------- CLI surface (no Ray)


def test_score_help_lists_the_options():
    from typer.testing import CliRunner

    from tagging.cli import app

    result = CliRunner().invoke(app, ["score", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for opt in ("--model", "--input", "--output", "--date", "--actors", "--cpus-per-actor", "--batch-size",
                "--precision", "--top-k", "--overwrite", "--address"):
        assert opt in result.output
    for cmd in ("quantize", "bench-score"):
        assert CliRunner().invoke(app, [cmd, "--help"]).exit_code == 0


def test_score_bad_usage_and_bad_model_fail_cleanly(tmp_path):
    from typer.testing import CliRunner

    from tagging.cli import app

    assert CliRunner().invoke(app, ["score", "--model", "m"]).exit_code == 2
    res = CliRunner().invoke(app, ["score", "--model", str(tmp_path), "--input", "x.csv", "--output", str(tmp_path / "o")])
    assert res.exit_code == 1 and "not a model artifact" in res.output


def test_nightly_job_is_the_score_command_and_fails_with_one_line(tmp_path, capsys, monkeypatch):
    """`python -m jobs.score_nightly` runs `tagging score`: same options (`--input a b` too), one error line."""
    import serve_batch.job
    from jobs import score_nightly

    seen = {}

    def fake_run_score(opts):
        seen["opts"] = opts
        return {"status": "complete", "output": opts.output, "rows_read": 0}

    monkeypatch.setattr(serve_batch.job, "run_score", fake_run_score)
    code = score_nightly.main(["--model", "m", "--input", "a", "b", "--output", "o", "--date", "2026-01-01", "--precision", "int8",
                               "--actors", "3", "--cpus-per-actor", "0.5", "--batch-size", "16", "--top-k", "2", "--overwrite",
                               "--address", "auto"])
    out = capsys.readouterr().out.strip().splitlines()
    opts = seen["opts"]
    assert code == 0 and len(out) == 1 and json.loads(out[0])["status"] == "complete"
    assert (opts.inputs, opts.date, opts.precision, opts.actors, opts.cpus_per_actor, opts.batch_size, opts.top_k, opts.overwrite,
            opts.address) == (("a", "b"), "2026-01-01", "int8", 3, 0.5, 16, 2, True, "auto")
    monkeypatch.undo()
    code = score_nightly.main(["--model", str(tmp_path), "--input", "x.csv", "--output", str(tmp_path / "o"),
                               "--date", "2026-01-01"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: ") and "not a model artifact" in err[0]
    assert score_nightly.main(["--model", "m", "--input", "a", "--output", "o", "--precision", "int4"]) == 2


@pytest.mark.parametrize("scale", [1, 0])
def test_bench_refuses_a_scale_that_would_rerun_the_first_rows(tmp_path, scale):
    """--scale 1 used to rerun N rows into the first run's folders and die on inputs_changed:
    refused up front, before any artifact is read or row generated."""
    from serve_batch.bench import bench_layouts, bench_score

    for bench in (bench_score, lambda m, **kw: bench_layouts(m, ["csv"], **kw)):
        with pytest.raises(ValueError, match="--scale must be at least 2"):
            bench(str(tmp_path / "no-model"), scale=scale, work_dir=str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_actors_are_awaited_only_where_an_idle_one_matters():
    opts = ScoreOptions(model="m", inputs=("in",), output="out", date="2026-01-01")
    assert actor_wait_s(opts, {"a": {"size": 700 << 10}, "b": {"size": 400 << 10}}) == 600  # 1.1 MiB in all
    assert actor_wait_s(opts, {"a": {"size": 900 << 10}}) is None and actor_wait_s(opts, None) is None  # Ray's default
    assert actor_wait_s(ScoreOptions(model="m", inputs=("in",), output="out", date="2026-01-01", actor_start_s=5),
                        {"a": {"size": 1}}) == 5
