"""`tagging score` on a real local Ray (one per module, in-process): equality with predict, the
account of every input line, rerun / --overwrite, input errors, int8 + top-k, actor deaths."""

from __future__ import annotations

import os
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
def ray_local(s3_server, gcs_server):
    """This module's own local Ray, started after the S3 server and the GCS emulator so its workers
    get their endpoints (a Ray another module left running would not have them: it is shut down first)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "STORAGE_EMULATOR_HOST"}
    with cs.local_ray(runtime_env={"env_vars": env}):
        yield


def _opts(artifact, inputs, out, **kw) -> ScoreOptions:
    return ScoreOptions(model=str(artifact), inputs=tuple(map(str, inputs)), output=str(out), date=cs.DATE, **kw)


def _store(kind: str, tmp: Path, s3_server, gcs_server=None) -> cs.Store:
    """A local folder, or a new bucket on the S3 server or the GCS emulator."""
    return cs.Store({"local": lambda: str(tmp / "store"), "s3": s3_server.bucket, "gcs": lambda: gcs_server.bucket()}[kind]())


_bad_runs: dict = {}


def _bad_run(kind, artifact, tmp_path_factory, s3_server):
    """One scored date over Parquet (3 row groups) + JSON Lines + CSV with every kind of bad row,
    on a local disk or on the S3 server; (store, input URI, output URI, date dir path, summary)."""
    if kind not in _bad_runs:
        base = tmp_path_factory.mktemp(f"bad-{kind}")
        store = _store(kind, base, s3_server)
        inputs = store.put(cs.write_bad_inputs(base / "in"), "in")
        out = store.uri("out")
        summary = run_score(_opts(artifact, [inputs], out))
        _bad_runs[kind] = (store, inputs, out, store.date_dir(out), summary)
    return _bad_runs[kind]


@pytest.fixture(scope="module", params=["local", "s3"])
def bad_run(request, artifact, ray_local, tmp_path_factory, s3_server):
    """The bad-input date on local disk and on S3 (tests using it run on both)."""
    return _bad_run(request.param, artifact, tmp_path_factory, s3_server)


@pytest.fixture(scope="module")
def bad_local(artifact, ray_local, tmp_path_factory, s3_server):
    return _bad_run("local", artifact, tmp_path_factory, s3_server)


def test_every_line_is_scored_or_rejected_with_its_reason(artifact, bad_run):
    store, inputs, out, date_dir, summary = bad_run
    art = load_artifact(artifact)
    expected = cs.expected_outcome([str(inputs)], art.config.data)
    scored, rejects = store.read_output(date_dir)
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
    assert all(s.startswith(str(inputs)) for s in sources)  # s3://... sources on S3
    assert all(len(r or "") <= 200 for r in rejects.column("raw").to_pylist())
    # Summary: per-tag counts and rates, truncations (the test model reads 128 characters).
    tag_counts = Counter(t for tags in scored.column("tags").to_pylist() for t in tags)
    assert {t: v["count"] for t, v in summary["tags"].items() if v["count"]} == dict(tag_counts)
    long_ids = {i for i, t in expected["valid"].items() if len(t) > 128}
    assert summary["rows_truncated"] == len(long_ids) > 0
    assert {i for i, tr in zip(ids, scored.column("truncated").to_pylist()) if tr} == long_ids
    assert summary["model"]["version"] == "test-1" and summary["model"]["sha"] == art.sha
    assert set(scored.column("model_version").to_pylist()) == {"test-1"}
    assert store.exists(f"{date_dir}/_SUCCESS") and not store.exists(f"{date_dir}/_staging")
    # _SUCCESS lists exactly the committed files, and tagging.read_scores reads exactly them.
    import tagging

    manifest = store.read_json(f"{date_dir}/_SUCCESS")
    assert sorted(e["path"] for e in manifest["files"]) == store.names(date_dir, "part-")
    assert sum(e["rows"] for e in manifest["files"]) == scored.num_rows
    assert manifest["run_id"] == store.read_json(f"{date_dir}/summary.json")["run_id"]
    assert sorted(tagging.read_scores(out, cs.DATE, verify=True).column("id").to_pylist()) == sorted(ids)
    assert tagging.read_scores(out, cs.DATE, rejects=True).num_rows == rejects.num_rows


def test_scores_equal_predict(artifact, bad_run):
    from tagging.evaluation import predict_texts_from_artifact
    from tagging.batching import predict_texts

    store, inputs, _, date_dir, _ = bad_run
    art = load_artifact(artifact)
    valid = cs.expected_outcome([str(inputs)], art.config.data)["valid"]
    scored, _ = store.read_output(date_dir)
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


def test_rerun_is_a_noop_and_overwrite_redoes_it(artifact, bad_local):
    _, inputs, _, date_dir, summary = bad_local
    date_dir = Path(date_dir)
    before = {p.name: p.stat().st_mtime_ns for p in date_dir.rglob("*") if p.is_file()}
    again = run_score(_opts(artifact, [inputs], date_dir.parent))
    assert again["status"] == "already_complete" and again["rows_scored"] == summary["rows_scored"]
    assert {p.name: p.stat().st_mtime_ns for p in date_dir.rglob("*") if p.is_file()} == before
    redo = run_score(_opts(artifact, [inputs], date_dir.parent, overwrite=True))
    assert redo["status"] == "complete" and redo["units"]["scored_this_run"] == redo["units"]["total"]
    assert {k: redo[k] for k in ("rows_read", "rows_scored", "rows_rejected", "rejects_by_reason")} == {
        k: summary[k] for k in ("rows_read", "rows_scored", "rows_rejected", "rejects_by_reason")}
    scored, _ = cs.read_output(date_dir)
    assert scored.num_rows == summary["rows_scored"] == len(set(scored.column("id").to_pylist()))
    import pyarrow.parquet as pq

    for part in date_dir.glob("part-*.parquet"):  # statistics where a reader can use them (dedup's rewrites too)
        meta = pq.ParquetFile(part).metadata.row_group(0)
        stats = {meta.column(i).path_in_schema: meta.column(i).is_stats_set for i in range(meta.num_columns)}
        assert stats["id"] and stats["source"] and not any(v for k, v in stats.items() if k.startswith(("tags", "scores"))), stats


def test_unfinished_run_with_another_model_is_refused_without_overwrite(artifact, tmp_path):
    import json

    from tagging.synth import generate_corpus, write_corpus

    write_corpus(generate_corpus(50, seed=4), str(tmp_path / "in.csv"))
    date_dir = tmp_path / "out" / f"date={cs.DATE}"
    date_dir.mkdir(parents=True)
    (date_dir / "_run.json").write_text(json.dumps({"schema": 1, "model_sha": "another", "units": []}))
    with pytest.raises(ScoreError, match="different model"):
        run_score(_opts(artifact, [tmp_path / "in.csv"], tmp_path / "out"))


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
            run_score(_opts(artifact, inputs, tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing started


def test_int8_with_top_k_and_the_stored_gate(artifact, ray_local, tmp_path):
    from tagging.synth import generate_corpus, write_corpus

    info = load_artifact(artifact).manifest["int8"]
    assert info["accepted"] and info["fp32_f1"] - info["f1"] <= info["max_drop"] == 0.01
    assert {"file", "f1", "fp32_f1", "max_drop", "accepted", "calibration_rows", "validation_rows"} <= set(info)
    write_corpus(generate_corpus(300, seed=6), str(tmp_path / "in.parquet"))
    summary = run_score(_opts(artifact, [f"file://{tmp_path}/in.parquet"], f"file://{tmp_path}/out", precision="int8",
                              top_k=3))  # pyarrow filesystem URIs
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
        run_score(_opts(copy, [cs.train_data()], tmp_path / "out", precision="int8"))


@pytest.mark.parametrize("point,kind", [("score", "local"), ("read", "local"), ("score", "s3")])
def test_a_worker_killed_mid_run_is_retried_exactly_once(artifact, ray_local, tmp_path, s3_server, point, kind):
    """SIGKILL of a scoring actor (after it staged a fragment) or of a read task: Ray retries,
    and the output still holds every valid id exactly once."""
    store = _store(kind, tmp_path, s3_server)
    inputs = store.put(cs.write_bad_inputs(tmp_path / "in", rows=300, seed=21), "in")
    plan = FaultPlan(point, 1, "self", str(tmp_path / "fired"))
    summary = run_score(_opts(artifact, [inputs], store.uri("out"), fault=plan))
    assert (tmp_path / "fired").exists()
    expected = cs.expected_outcome([str(inputs)], load_artifact(artifact).config.data)
    scored, rejects = store.read_output(store.date_dir(store.uri("out")))
    ids = scored.column("id").to_pylist()
    assert sorted(ids) == sorted(expected["valid"])
    assert summary["rows_read"] == expected["records"] == scored.num_rows + rejects.num_rows


def test_a_run_that_saw_no_success_before_the_lock_leaves_the_finished_date_untouched(artifact, bad_run, monkeypatch):
    """The race: run B checks for _SUCCESS (not there yet), run A finishes, B gets the lease.
    B must find _SUCCESS under the lease and return already_complete, not clear the date."""
    from serve_batch.layout import OutputLayout

    store, inputs, out, date_dir, summary = bad_run
    before = store.mtimes(date_dir)
    real, calls = OutputLayout.succeeded, []

    def first_check_misses(self):
        calls.append(1)
        return False if len(calls) == 1 else real(self)

    monkeypatch.setattr(OutputLayout, "succeeded", first_check_misses)
    again = run_score(_opts(artifact, [inputs], out))
    assert len(calls) >= 2 and again["status"] == "already_complete"
    assert again["rows_scored"] == summary["rows_scored"]
    assert {k: v for k, v in store.mtimes(date_dir).items() if not k.endswith("/_lease")} == {
        k: v for k, v in before.items() if not k.endswith("/_lease")}


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_runs_of_one_date_started_together_exactly_one_scores(artifact, ray_local, tmp_path, s3_server, kind):
    """Started at the same instant: one takes the date's lease and scores, the other is refused
    naming it; the output is exact. A third run with --wait waits for it and finds it complete."""
    import threading

    from serve_batch.lease import LeaseHeld

    store = _store(kind, tmp_path, s3_server)
    inputs = store.put(cs.write_bad_inputs(tmp_path / "in", rows=300, seed=23), "in")
    out = store.uri("out")
    barrier, results = threading.Barrier(3), {}

    def run(name, **kw):
        barrier.wait()
        try:
            results[name] = run_score(_opts(artifact, [inputs], out, **kw))
        except Exception as exc:  # noqa: BLE001
            results[name] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    threads.append(threading.Thread(target=run, args=("waiter",), kwargs={"wait_s": 240}))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=280)
    ab = [results["a"], results["b"]]
    done = [r for r in ab if isinstance(r, dict)]
    refused = [r for r in ab if isinstance(r, LeaseHeld)]
    if results["waiter"] is not None and isinstance(results["waiter"], dict) and results["waiter"]["status"] == "complete":
        done, refused = done + [results["waiter"]], refused  # the waiter won the lease: both others refused
        assert len(refused) == 2 and len(done) == 1
    else:
        assert len(done) == 1 and len(refused) == 1, results
        assert results["waiter"]["status"] == "already_complete"
    assert done[0]["status"] == "complete" and done[0]["run_id"] in str(refused[0])
    scored, rejects = store.read_output(store.date_dir(out))
    expected = cs.expected_outcome([str(inputs)], load_artifact(artifact).config.data)
    assert sorted(scored.column("id").to_pylist()) == sorted(expected["valid"])
    assert scored.num_rows + rejects.num_rows == expected["records"]


def _small_inputs(folder: Path, seed: int) -> Path:
    import pyarrow.parquet as pq

    from tagging.synth import generate_corpus, write_corpus

    folder.mkdir(parents=True, exist_ok=True)
    write_corpus(generate_corpus(240, seed=seed), str(folder / "a.parquet"))
    pq.write_table(pq.read_table(folder / "a.parquet"), folder / "a.parquet", row_group_size=60)
    write_corpus(generate_corpus(60, seed=seed + 1), str(folder / "b.csv"))
    return folder


@pytest.mark.parametrize("kind", ["local", "s3", "gcs"])
def test_inputs_are_pinned(artifact, ray_local, tmp_path, s3_server, gcs_server, kind):
    """A Parquet input rewritten mid-run (same rows, other texts) -> the unit read after it is not
    committed, no _SUCCESS, an error naming the file; a file added after _SUCCESS -> status
    inputs_changed (the CLI exits 3), nothing touched. On S3 / GCS the rewrite is a new object
    (new ETag / generation) under the same name."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    store = _store(kind, tmp_path, s3_server, gcs_server)
    local_in = _small_inputs(tmp_path / "in", seed=50)
    inputs = store.put(local_in, "in")
    out = store.uri("out")
    date_dir = store.date_dir(out)
    target = f"{store.path(inputs)}/a.parquet"

    def rewrite_on_first_commit(record):
        msg = record.getMessage()
        if msg.startswith("committed") and not (tmp_path / "rewritten").exists():
            t = pq.read_table(local_in / "a.parquet")
            t = t.set_column(t.schema.get_field_index("text"), "text", pa.array(["rewritten " + x for x in t.column("text").to_pylist()]))
            pq.write_table(t, tmp_path / "a.tmp", row_group_size=60)
            if store.remote:
                pafs.copy_files(str(tmp_path / "a.tmp"), target, destination_filesystem=store.fs)
            else:
                os.replace(tmp_path / "a.tmp", target)  # as an upstream job replaces a file
            (tmp_path / "rewritten").touch()

    with pytest.raises(ScoreError, match=r"inputs changed during the run.*a\.parquet changed.*reading unit \S+ \(not committed\)") as err:
        with cs.on_log(rewrite_on_first_commit):
            run_score(_opts(artifact, [inputs], out, actors=1, tasks_per_actor=1))
    assert (tmp_path / "rewritten").exists() and not store.exists(f"{date_dir}/_SUCCESS")
    # The unit read after the rewrite is refused right after its read (S3: its If-Match GET fails;
    # GCS: another generation; local: another mtime) and never committed; units read before stay.
    refused = str(err.value).split("reading unit ")[1].split()[0]
    markers = store.names(f"{date_dir}/_commits", suffix=".json")
    assert refused.startswith("00000-") and f"{refused}.json" not in markers and markers, (refused, markers)
    done = run_score(_opts(artifact, [inputs], out, overwrite=True))
    assert done["status"] == "complete" and store.exists(f"{date_dir}/_SUCCESS")

    def untouched():
        return {k: v for k, v in store.mtimes(date_dir).items() if not k.endswith("/_lease")}

    before = untouched()
    assert run_score(_opts(artifact, [inputs], out))["status"] == "already_complete"
    cs.write_bad_inputs(tmp_path / "late", rows=30, seed=51)
    if store.remote:
        store.put(tmp_path / "late" / "c.csv", "in/c.csv")
    else:
        (tmp_path / "late" / "c.csv").rename(local_in / "c.csv")
    again = run_score(_opts(artifact, [inputs], out))
    assert again["status"] == "inputs_changed" and any("c.csv is new" in c for c in again["changes"])
    res = cs.run_cli(["score", "--model", str(artifact), "--input", str(inputs), "--output", str(out), "--date", cs.DATE])
    assert res.returncode == 3 and '"inputs_changed"' in res.stdout, res.stderr[-2000:]
    assert untouched() == before


def test_model_is_pinned(artifact, ray_local, tmp_path):
    """--model is a symlink repointed mid-run: the run keeps the planned model (one model_version).
    The planned artifact's manifest rewritten before the actors load it: they refuse, no _SUCCESS."""
    import os

    inputs = _small_inputs(tmp_path / "in", seed=60)
    a, b = tmp_path / "model-a", tmp_path / "model-b"
    shutil.copytree(artifact, a)
    shutil.copytree(artifact, b)
    update_manifest(load_artifact(b), {}, {"model_version": "test-other"})
    prod = tmp_path / "production"
    prod.symlink_to(a)

    def repoint(record):
        msg = record.getMessage()
        if " actors x " in msg:
            prod.unlink()
            prod.symlink_to(b)

    with cs.on_log(repoint):
        summary = run_score(_opts(prod, [inputs], tmp_path / "out1"))
    assert os.readlink(prod) == str(b)
    assert summary["model"]["path"] == str(a) and summary["model"]["version"] == "test-1"
    scored, _ = cs.read_output(tmp_path / "out1" / f"date={cs.DATE}")
    assert set(scored.column("model_version").to_pylist()) == {"test-1"}

    def rewrite_manifest(record):
        msg = record.getMessage()
        if " actors x " in msg:
            update_manifest(load_artifact(a), {}, {"model_version": "test-rewritten"})

    with pytest.raises(ScoreError, match="model changed since the run was planned"):
        with cs.on_log(rewrite_manifest):
            run_score(_opts(a, [inputs], tmp_path / "out2"))
    assert not (tmp_path / "out2" / f"date={cs.DATE}" / "_SUCCESS").exists()


def test_a_reader_during_a_run_sees_no_row_of_the_date(artifact, ray_local, tmp_path):
    """Every recipe (Arrow table, Ray Dataset, the file list DuckDB reads) sees nothing of the date
    before _SUCCESS, and afterwards exactly the files it lists (a stray part file is never read)."""
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    import tagging
    from tagging.cli import app
    from tagging.scores import ScoresNotReady

    inputs = _small_inputs(tmp_path / "in", seed=70)
    out = str(tmp_path / "out")
    date_dir = tmp_path / "out" / f"date={cs.DATE}"
    seen = []

    def read_while_committing(record):
        msg = record.getMessage()
        if msg.startswith("committed"):
            assert list(date_dir.glob("part-*.parquet"))  # parts are there...
            assert tagging.read_scores(out).num_rows == 0  # ...but no finished date shows them
            assert tagging.read_scores(out, as_dataset=True).count() == 0
            assert CliRunner().invoke(app, ["read-scores", out, "--list-files"]).stdout == ""
            with pytest.raises(ScoresNotReady, match="not complete"):
                tagging.read_scores(out, cs.DATE)
            with pytest.raises(ScoresNotReady, match="not complete"):
                tagging.read_scores(out, cs.DATE, as_dataset=True)
            seen.append(msg)

    with cs.on_log(read_while_committing):
        summary = run_score(_opts(artifact, [inputs], out))
    assert seen
    pq.write_table(pq.read_table(next(date_dir.glob("part-*.parquet"))), date_dir / "part-stray.parquet")
    table = tagging.read_scores(out)
    assert table.num_rows == summary["rows_scored"] and set(table.column("date").to_pylist()) == {cs.DATE}
    ds = tagging.read_scores(out, cs.DATE, as_dataset=True)  # a Ray Dataset of exactly the committed files
    assert sorted(ds.to_pandas()["id"]) == sorted(table.column("id").to_pylist())
    every = tagging.read_scores(out, as_dataset=True, columns=["id"]).to_pandas()
    assert len(every) == summary["rows_scored"] and set(every["date"]) == {cs.DATE}


def test_the_code_is_recorded_and_a_resume_with_other_code_says_so(artifact, ray_local, tmp_path):
    import json

    from tagging.artifact import code_version

    inputs = _small_inputs(tmp_path / "in", seed=80)
    date_dir = tmp_path / "out" / f"date={cs.DATE}"
    summary = run_score(_opts(artifact, [inputs], tmp_path / "out"))
    run = json.loads((date_dir / "_run.json").read_text())
    assert summary["code"] == run["code"] == code_version() and summary["code"]["tagging"]
    # A run killed before _SUCCESS, resumed by other code: it says so, and resumes (code is not an input).
    (date_dir / "_SUCCESS").unlink()
    (date_dir / "summary.json").unlink()
    (date_dir / "_run.json").write_text(json.dumps({**run, "code": {"tagging": "0.0.1", "git_sha": "abc"}}))
    logs = []
    with cs.on_log(logs.append):
        again = run_score(_opts(artifact, [inputs], tmp_path / "out"))
    assert again["status"] == "complete" and again["units"]["scored_this_run"] == 0
    assert any(r.levelname == "WARNING" and "was started with other code ({'tagging': '0.0.1', 'git_sha': 'abc'})" in r.getMessage()
               for r in logs), [r.getMessage() for r in logs]


def test_two_units_are_scored_by_two_actors(artifact, ray_local, tmp_path):
    """Every actor is up before work is handed out: one row group cut into two row ranges is scored
    one range per actor (Ray Data's default hands both to the first actor to start)."""
    import pyarrow.parquet as pq

    from tagging.synth import generate_corpus, write_corpus

    inputs = tmp_path / "in"
    inputs.mkdir()
    write_corpus(generate_corpus(600, seed=11), str(inputs / "one.parquet"))
    assert pq.ParquetFile(inputs / "one.parquet").metadata.num_row_groups == 1
    summary = run_score(_opts(artifact, [inputs], tmp_path / "out", actors=2, tasks_per_actor=2, unit_rows=300,
                                  actor_start_s=600))  # these few KiB would not wait by default
    assert summary["units"]["total"] == 2
    by_actor = summary["rows_by_actor"]
    assert len(by_actor) == 2 and min(by_actor.values()) > 0, by_actor
    assert sum(by_actor.values()) == summary["rows_scored"]
