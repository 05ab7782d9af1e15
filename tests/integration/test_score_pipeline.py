"""`tagging score` on a real local Ray (one per module, in-process): equality with predict, the
account of every input line, rerun / --overwrite, input errors, int8 + top-k, actor deaths."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import conftest_score as cs
from serve_batch.faults import FaultPlan
from serve_batch.job import ScoreOptions, run_score
from serve_batch.layout import ScoreError
from tagging.artifact import ArtifactError, load_artifact, update_manifest
from tagging.readers import InputError

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return cs.trained_artifact(tmp_path_factory.getbasetemp() / "score-artifact")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    old = ctx.execution_no_progress_timeout_s
    ctx.execution_no_progress_timeout_s = 120
    yield
    ctx.execution_no_progress_timeout_s = old
    if started:
        ray.shutdown()


def _opts(artifact, inputs, out, **kw) -> ScoreOptions:
    return ScoreOptions(model=str(artifact), inputs=tuple(map(str, inputs)), output=str(out), date=cs.DATE, **kw)


@pytest.fixture(scope="module")
def bad_run(artifact, ray_local, tmp_path_factory):
    """One scored date over Parquet (3 row groups) + JSON Lines + CSV with every kind of bad row."""
    base = tmp_path_factory.mktemp("bad")
    inputs = cs.write_bad_inputs(base / "in")
    summary = run_score(_opts(artifact, [inputs], base / "out"), log=lambda m: None)
    return inputs, base / "out" / f"date={cs.DATE}", summary


def test_every_line_is_scored_or_rejected_with_its_reason(artifact, bad_run):
    inputs, date_dir, summary = bad_run
    art = load_artifact(artifact)
    expected = cs.expected_outcome([str(inputs)], art.config.data)
    scored, rejects = cs.read_output(date_dir)
    ids = scored.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id was written twice"
    assert set(ids) == set(expected["valid"])
    assert summary["rows_read"] == expected["records"] == summary["rows_scored"] + summary["rows_rejected"]
    assert summary["rows_scored"] == scored.num_rows and summary["rows_rejected"] == rejects.num_rows
    assert summary["rejects_by_reason"] == dict(sorted(expected["reasons"].items()))
    assert Counter(r.split(":")[0] for r in rejects.column("reason").to_pylist()) == Counter(expected["reasons"])
    # Every kind of bad input shows up, from every format, and every record has its own source.
    for reason in ("null_text", "empty_text", "non_string_text", "text_too_long", "missing_id", "duplicate_id",
                   "malformed_record", "invalid_utf8"):
        assert summary["rejects_by_reason"].get(reason, 0) > 0, reason
    sources = scored.column("source").to_pylist() + rejects.column("source").to_pylist()
    assert len(set(sources)) == expected["records"]
    assert {s.rsplit(":", 1)[0].rsplit("/", 1)[-1] for s in rejects.column("source").to_pylist()} == {
        "a.parquet", "b.jsonl", "c.csv"}
    assert all(len(r or "") <= 200 for r in rejects.column("raw").to_pylist())
    # Summary: per-tag counts and rates, truncations (the test model reads 128 characters).
    tag_counts = Counter(t for tags in scored.column("tags").to_pylist() for t in tags)
    assert {t: v["count"] for t, v in summary["tags"].items() if v["count"]} == dict(tag_counts)
    long_ids = {i for i, t in expected["valid"].items() if len(t) > 128}
    assert summary["rows_truncated"] == len(long_ids) > 0
    assert {i for i, tr in zip(ids, scored.column("truncated").to_pylist()) if tr} == long_ids
    assert summary["model"]["version"] == "test-1" and summary["model"]["sha"] == art.sha
    assert set(scored.column("model_version").to_pylist()) == {"test-1"}
    assert (date_dir / "_SUCCESS").is_file() and not (date_dir / "_staging").exists()


def test_scores_equal_predict(artifact, bad_run):
    from tagging.evaluation import predict_texts_from_artifact
    from tagging.train_loop import predict_texts

    inputs, date_dir, _ = bad_run
    art = load_artifact(artifact)
    valid = cs.expected_outcome([str(inputs)], art.config.data)["valid"]
    scored, _ = cs.read_output(date_dir)
    ids = scored.column("id").to_pylist()
    got = np.array([[dict(m)[t] for t in art.labels.labels] for m in scored.column("scores").to_pylist()])
    want = predict_texts(art.load_model(), [valid[i] for i in ids], art.vocab, art.max_length)
    assert np.abs(got - want).max() < 1e-5
    want_tags = want >= art.thresholds
    got_tags = np.array([[t in set(tags) for t in art.labels.labels] for tags in scored.column("tags").to_pylist()])
    assert ((got_tags == want_tags) | (np.abs(want - art.thresholds) < 1e-5)).all()
    # And `tagging predict`'s own function, on a few texts (it rounds to 4 decimals).
    for i, item in zip(ids[:5], predict_texts_from_artifact(str(artifact), [valid[i] for i in ids[:5]])):
        row = scored.slice(ids.index(i), 1).to_pylist()[0]
        assert sorted(item["tags"]) == sorted(row["tags"])
        for tag, p in item["tags"].items():
            assert abs(dict(row["scores"])[tag] - p) <= 5e-5 + 1e-5


def test_rerun_is_a_noop_and_overwrite_redoes_it(artifact, bad_run):
    inputs, date_dir, summary = bad_run
    before = {p.name: p.stat().st_mtime_ns for p in date_dir.rglob("*") if p.is_file()}
    again = run_score(_opts(artifact, [inputs], date_dir.parent), log=lambda m: None)
    assert again["status"] == "already_complete" and again["rows_scored"] == summary["rows_scored"]
    assert {p.name: p.stat().st_mtime_ns for p in date_dir.rglob("*") if p.is_file()} == before
    redo = run_score(_opts(artifact, [inputs], date_dir.parent, overwrite=True), log=lambda m: None)
    assert redo["status"] == "complete" and redo["units"]["scored_this_run"] == redo["units"]["total"]
    assert {k: redo[k] for k in ("rows_read", "rows_scored", "rows_rejected", "rejects_by_reason")} == {
        k: summary[k] for k in ("rows_read", "rows_scored", "rows_rejected", "rejects_by_reason")}
    scored, _ = cs.read_output(date_dir)
    assert scored.num_rows == summary["rows_scored"] == len(set(scored.column("id").to_pylist()))


def test_unfinished_run_with_another_model_is_refused_without_overwrite(artifact, tmp_path):
    import json

    from tagging.synth import generate_corpus, write_corpus

    write_corpus(generate_corpus(50, seed=4), str(tmp_path / "in.csv"))
    date_dir = tmp_path / "out" / f"date={cs.DATE}"
    date_dir.mkdir(parents=True)
    (date_dir / "_run.json").write_text(json.dumps({"schema": 1, "model_sha": "another", "units": []}))
    with pytest.raises(ScoreError, match="different model"):
        run_score(_opts(artifact, [tmp_path / "in.csv"], tmp_path / "out"), log=lambda m: None)


def test_bad_inputs_fail_before_scoring(artifact, tmp_path):
    from tagging.synth import generate_corpus, write_corpus

    df = generate_corpus(30, seed=5)
    write_corpus(df[["id", "tags"]], str(tmp_path / "notext.csv"))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    write_corpus(df, str(tmp_path / "ok.jsonl"))
    cases = [([tmp_path / "notext.csv"], "missing required column"), ([tmp_path / "broken.parquet"], "cannot read input"),
             ([tmp_path / "ok.jsonl", tmp_path / "nope.csv"], "no such file"), ([tmp_path / "x.txt"], "no such file")]
    for inputs, message in cases:
        with pytest.raises(InputError, match=message):
            run_score(_opts(artifact, inputs, tmp_path / "out"), log=lambda m: None)
    assert not (tmp_path / "out").exists()  # nothing started


def test_int8_with_top_k_and_the_stored_gate(artifact, ray_local, tmp_path):
    from tagging.synth import generate_corpus, write_corpus

    info = load_artifact(artifact).manifest["int8"]
    assert info["accepted"] and info["fp32_f1"] - info["f1"] <= info["max_drop"] == 0.01
    assert {"file", "f1", "fp32_f1", "max_drop", "accepted", "calibration_rows", "validation_rows"} <= set(info)
    write_corpus(generate_corpus(300, seed=6), str(tmp_path / "in.parquet"))
    summary = run_score(_opts(artifact, [f"file://{tmp_path}/in.parquet"], f"file://{tmp_path}/out", precision="int8",
                              top_k=3), log=lambda m: None)  # pyarrow filesystem URIs
    assert summary["model"]["precision"] == "int8" and summary["rows_scored"] == 300
    scored, _ = cs.read_output(tmp_path / "out" / f"date={cs.DATE}")
    scores = scored.column("scores").to_pylist()
    assert all(len(m) == 3 and [v for _, v in m] == sorted((v for _, v in m), reverse=True) for m in scores)


def test_int8_refused_when_its_gate_failed(artifact, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(artifact, copy)
    art = load_artifact(copy)
    update_manifest(art, {}, {"int8": dict(art.manifest["int8"], accepted=False)})
    with pytest.raises(ArtifactError, match="int8 model refused"):
        run_score(_opts(copy, [cs.train_data()], tmp_path / "out", precision="int8"), log=lambda m: None)


@pytest.mark.parametrize("point", ["score", "read"])
def test_a_worker_killed_mid_run_is_retried_exactly_once(artifact, ray_local, tmp_path, point):
    """SIGKILL of a scoring actor (after it staged a fragment) or of a read task: Ray retries,
    and the output still holds every valid id exactly once."""
    inputs = cs.write_bad_inputs(tmp_path / "in", rows=300, seed=21)
    plan = FaultPlan(point, 1, "self", str(tmp_path / "fired"))
    summary = run_score(_opts(artifact, [inputs], tmp_path / "out", fault=plan), log=lambda m: None)
    assert (tmp_path / "fired").exists()
    expected = cs.expected_outcome([str(inputs)], load_artifact(artifact).config.data)
    scored, rejects = cs.read_output(tmp_path / "out" / f"date={cs.DATE}")
    ids = scored.column("id").to_pylist()
    assert sorted(ids) == sorted(expected["valid"])
    assert summary["rows_read"] == expected["records"] == scored.num_rows + rejects.num_rows
