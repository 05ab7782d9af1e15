"""Distillation on a real local Ray, through the CLI: the teacher scores the student's rows in Ray Data
(ONNX Runtime), the student trains in Ray Train (2 DDP workers), is exported, and batch-scored.

Generated data where a teacher should help: 400 labeled rows (~280 to train on) and 2,000 texts
without labels. The teacher is a 2-member ensemble blended half and half with the calibrated
TF-IDF + LinearSVC, all fit on the same labeled rows; it scores the unlabeled texts, which a
model trained without it never sees. Measured while writing this test (3 data seeds, 6 epochs,
in-process): one char-CNN 0.32 / 0.36 / 0.36 test weighted F1, its student 0.44 / 0.45 / 0.43
(+0.06 to +0.12). The test asserts a margin of at least 0.04.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from serve_batch.bench import DATE as BENCH_DATE
from tagging.artifact import load_artifact
from tagging.model import CharCNN

import conftest_score as cs

MARGIN = 0.04
CONFIG = {"model.num_filters": 24, "model.filter_widths": [1, 2, 3, 4], "model.embedding_dim": 24, "model.hidden_dim": 32,
          "model.ensemble": 2, "max_epochs": 6, "data.min_tag_freq": 5, "distill.concat_pool": 4, "workers": 2, "cpus_per_worker": 0.5,
          "distill.student_ema_decay": 0.9}


def _f1_as_training_does(model, prepared, vocab, max_length, seed):
    """Test weighted F1 with thresholds chosen on validation exactly as tagging.training.finalize_artifact does."""
    from tagging.batching import predict_texts
    from tagging.metrics import evaluate
    from tagging.thresholds import apply_thresholds, fit_thresholds, select_policy

    (vt, yv), (et, ye) = prepared.texts_and_targets("val"), prepared.texts_and_targets("test")
    pv, pe = predict_texts(model, vt, vocab, max_length), predict_texts(model, et, vocab, max_length)
    policy = select_policy(yv, pv, seed=seed)
    thresholds, _ = fit_thresholds(yv, pv, int(policy["min_support"]), float(policy["shrink"]))
    return evaluate(ye, apply_thresholds(pe, thresholds), prepared.labels.labels)["overall"]["f1"]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    from tagging.config import load_config
    from tagging.distill import student_config
    from tagging.local import prepare_local, train_local
    from tagging.synth import generate_corpus, write_corpus
    from tagging.training import fit_in_process, split_inputs

    work = tmp_path_factory.mktemp("distill")
    data = work / "labeled.parquet"
    write_corpus(generate_corpus(400, seed=1), str(data))
    cfg = load_config(None, CONFIG)
    teacher = train_local([str(data)], str(work / "teacher"), cfg, model_version="teacher")
    prepared = prepare_local([str(data)], cfg)
    # unlabeled texts: 2,000 new ones, plus copies of the teacher's validation and test rows that must be dropped
    extra = generate_corpus(2000, seed=101).drop(columns=["tags"])
    extra["id"] = "u-" + extra["id"].astype(str)
    held = pd.read_parquet(data)
    held = held[held["id"].astype(str).isin(set(prepared.rows.loc[prepared.rows["split"] != "train", "id"]))]
    renamed = held.assign(id="copy-" + held["id"].astype(str)).drop(columns=["tags"])  # a held-out text under a new id
    pd.concat([extra, held.drop(columns=["tags"]), renamed]).to_json(work / "unlabeled.jsonl", orient="records", lines=True)
    # the same student model trained on the labels alone, same epochs
    scfg = student_config(cfg)
    vocab, inputs, _ = split_inputs(scfg, prepared)
    single = fit_in_process(inputs, *prepared.texts_and_targets("train"), *prepared.texts_and_targets("val")).best_model()
    single_f1 = _f1_as_training_does(single, prepared, vocab, scfg.model.max_length, scfg.seed)
    proc = cs.run_cli(["distill", "--teacher", str(teacher.path), "--data", str(data), "--out", str(work / "student"),
                       "--unlabeled", str(work / "unlabeled.jsonl"), "--teacher-linear", "0.5", "--storage", str(work / "runs"),
                       "--tracking-uri", f"sqlite:///{work}/mlflow.db"],
                      timeout=600)
    return {"work": work, "data": data, "teacher": teacher, "prepared": prepared, "proc": proc, "single_f1": single_f1,
            "held_out": len(held)}


def test_distill_end_to_end_records_its_teacher_and_drops_held_out_texts(distilled):
    proc, teacher, prepared = distilled["proc"], distilled["teacher"], distilled["prepared"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    student = load_artifact(distilled["work"] / "student")
    assert isinstance(student.load_model(), CharCNN) and student.config.model.ensemble == 1
    assert student.config.ema_decay == 0.9 != teacher.config.ema_decay  # the student's own weight average
    d = student.manifest["distillation"]
    assert d["teacher"]["sha"] == teacher.sha and d["teacher"]["members"] == 2
    assert d["teacher"]["weights_sha256"] == teacher.manifest["files"]["model.pt"]
    assert d["settings"]["teacher_linear"] == 0.5 and d["settings"]["alpha"] == 0.5
    assert d["settings"]["student_init"] == "auto" and d["student_start"] == "teacher member 0"  # the member config is a cut
    n_train = prepared.counts["train"]
    # every held-out row (by id, and by text under a new id) was dropped from the unlabeled texts
    assert d["rows"] == {"train": n_train, "concat_pool": 4 * n_train, "unlabeled_in_data": 0, "unlabeled_extra": 2000}
    assert student.splits == teacher.splits  # the teacher's split, so nothing of val/test leaked
    assert json.loads(proc.stdout.strip().splitlines()[-1])["teacher_test"] == teacher.manifest["metrics"]["overall"]
    assert student.manifest["onnx"]["parity_max_abs_diff"] <= 1e-5


def test_a_student_started_from_the_teacher_holds_its_members_weights(distilled, tmp_path):
    """distill.student_init=teacher through the CLI and 2 Ray Train workers: at a learning rate that
    cannot move them, the student's weights are teacher member 0's, cut to the student's widths and
    filters; a student that is no cut of the teacher is refused before any Ray work."""
    from tagging.distill import filter_ranking
    from tagging.model import members

    teacher = distilled["teacher"]
    common = ["distill", "--teacher", str(teacher.path), "--data", str(distilled["data"]), "--storage", str(tmp_path / "runs"),
              "--set", "distill.student_init=teacher", "--set", "distill.student_num_filters=8"]
    bad = cs.run_cli([*common, "--out", str(tmp_path / "bad"), "--set", "distill.student_filter_widths=1,7"], timeout=120)
    assert bad.returncode == 1 and "distill.student_init: 'teacher' needs the student's widths" in bad.stderr, bad.stderr[-2000:]
    assert "Started a local Ray instance" not in bad.stderr + bad.stdout
    proc = cs.run_cli([*common, "--out", str(tmp_path / "student"), "--set", "distill.student_filter_widths=1,3",
                       "--set", "max_epochs=1", "--set", "learning_rate=1e-12", "--set", "distill.concat_pool=0"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    student = load_artifact(tmp_path / "student")
    assert student.manifest["distillation"]["settings"]["student_init"] == "teacher"
    assert student.manifest["distillation"]["student_start"] == "teacher member 0"
    member = members(teacher.load_model())[0]
    s, t = student.load_model().state_dict(), member.state_dict()
    # the 8 filters a width it keeps: the most used on the training texts (of 24 a width in the teacher)
    ranking = filter_ranking(member, teacher.vocab, distilled["prepared"].texts_and_targets("train")[0])
    kept = {i: np.sort(ranking[i][:8].numpy()) for i in (0, 2)}
    assert any(not np.array_equal(k, np.arange(8)) for k in kept.values())  # not simply the first ones
    for j, i in ((0, 0), (1, 2)):  # student widths 1, 3 = the teacher's convolutions 0 and 2
        np.testing.assert_allclose(s[f"convs.{j}.weight"], t[f"convs.{i}.weight"][kept[i]], atol=1e-6)
    cols = np.r_[kept[0], 48 + kept[2]]  # the FC inputs of those filters
    np.testing.assert_allclose(s["fc1.weight"], t["fc1.weight"][:, cols], atol=1e-6)
    np.testing.assert_allclose(s["fc2.weight"], t["fc2.weight"], atol=1e-6)


def test_the_distillation_run_is_in_mlflow(distilled):
    from mlflow import MlflowClient

    assert distilled["proc"].returncode == 0, distilled["proc"].stderr[-3000:]
    student = load_artifact(distilled["work"] / "student")
    run = MlflowClient(student.manifest["tracking"]["uri"]).get_run(student.manifest["tracking"]["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["tagging.command"] == "distill"
    assert run.data.params["teacher_sha"] == distilled["teacher"].sha and run.data.params["distill.teacher_linear"] == "0.5"
    assert run.data.metrics["test_f1"] == pytest.approx(student.manifest["metrics"]["overall"]["f1"])
    assert len(student.read_json("history.json")) == 6 and "val_f1" in run.data.metrics


def test_the_student_beats_one_model_trained_without_the_teacher(distilled):
    assert distilled["proc"].returncode == 0, distilled["proc"].stderr[-3000:]
    student_f1 = load_artifact(distilled["work"] / "student").manifest["metrics"]["overall"]["f1"]
    assert student_f1 >= distilled["single_f1"] + MARGIN, (student_f1, distilled["single_f1"])


def test_the_student_is_batch_scored_and_benchmarked_against_its_teacher(distilled):
    """`tagging bench-score --compare`: the student and the teacher through the nightly pipeline on the
    same generated rows, and TF-IDF + LinearSVC on the same texts; the student's output is exact."""
    assert distilled["proc"].returncode == 0, distilled["proc"].stderr[-3000:]
    work = distilled["work"]
    res = cs.run_cli(["bench-score", "--model", str(work / "student"), "--compare", str(distilled["teacher"].path),
                      "--linear-data", str(distilled["data"]), "--rows", "400", "--unit-rows", "200",
                      "--work-dir", str(work / "bench"), "--out", str(work / "bench.json")], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((work / "bench.json").read_text())
    student, teacher = (result["models"][str(p)] for p in (work / "student", distilled["teacher"].path))
    assert student["student"] and student["members"] == 1 and teacher["members"] == 2
    assert student["pipeline_over_first"] == 1.0 and teacher["pipeline_over_first"] > 0
    assert result["linear"]["docs_per_s"] > 0 and student["pipeline_over_linear"] > 0
    date_dir = work / "bench" / "out-0" / f"date={BENCH_DATE}"
    summary = json.loads((date_dir / "summary.json").read_text())
    assert summary["rows_read"] == summary["rows_scored"] == 400 and summary["rows_rejected"] == 0
    table, _ = cs.read_output(date_dir)
    inputs = pd.concat([pd.read_parquet(p) for p in sorted((work / "bench" / "in").glob("*.parquet"))]).set_index("id")
    assert sorted(table["id"].to_pylist()) == sorted(inputs.index)
    # what the pipeline wrote is what the student's own ONNX model says
    from tagging.onnx_scoring import OnnxScorer

    st = load_artifact(work / "student")
    ids = sorted(table["id"].to_pylist())[:50]
    direct = OnnxScorer(st).probs(st.normalize(inputs.loc[ids, "text"].tolist()))
    written = {r["id"]: dict(r["scores"]) for r in table.to_pylist() if r["id"] in set(ids)}
    np.testing.assert_allclose([[written[i][t] for t in st.labels.labels] for i in ids], direct, atol=1e-5)


def test_tune_searches_students_of_a_fixed_teacher(distilled, tmp_path):
    """`tagging tune --teacher`: the teacher scores the student rows once, every trial is a student."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"model.num_filters": {"grid": [8, 16]}, "model.filter_widths": [1, 2, 3], "concat_rate": 1.0,
                                 "learning_rate": 0.003, "distill.alpha": 0.8,
                                 "distill.student_init": "teacher", "model.embedding_dim": 24, "model.hidden_dim": 32,
                                 "model.batch_norm": False}))
    res = cs.run_cli(["tune", "--teacher", str(distilled["teacher"].path), "--data", str(distilled["data"]), "--out", str(tmp_path / "tune"),
                      "--space", str(space), "--trials", "1", "--max-epochs", "2", "--grace-period", "2", "--no-include-base",
                      "--workers-per-trial", "1", "--cpus-per-worker", "0.5", "--max-concurrent", "1", "--no-measure-cost"],
                     timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    board = pd.read_csv(tmp_path / "tune" / "leaderboard.csv")
    assert len(board) == 2 and sorted(json.loads(p)["model.num_filters"] for p in board["params"]) == [8, 16]
    art = load_artifact(tmp_path / "tune" / "model")
    assert art.config.model.ensemble == 1 and art.config.model.filter_widths == (1, 2, 3) and art.config.distill.alpha == 0.8
    assert art.config.distill.student_init == "teacher"  # every trial started from the teacher's member 0, cut to its filters
    assert art.manifest["distillation"]["teacher"]["sha"] == distilled["teacher"].sha
    assert art.splits == distilled["teacher"].splits
    space.write_text(json.dumps({"distill.student_init": "teacher"}))  # the default space searches the embedding
    bad = cs.run_cli(["tune", "--teacher", str(distilled["teacher"].path), "--data", str(distilled["data"]), "--out", str(tmp_path / "t3"),
                      "--space", str(space)], timeout=120)
    assert bad.returncode == 1 and "keeps the teacher's model.embedding_dim, model.hidden_dim" in bad.stderr, bad.stderr[-2000:]
    space.write_text(json.dumps({"distill.concat_pool": {"grid": [2, 4]}}))
    bad = cs.run_cli(["tune", "--teacher", str(distilled["teacher"].path), "--data", str(distilled["data"]), "--out", str(tmp_path / "t2"),
                      "--space", str(space)], timeout=120)
    assert bad.returncode == 1 and "distill.concat_pool cannot be searched" in bad.stderr, bad.stderr[-2000:]


def test_train_with_distillation_ships_the_student_and_keeps_the_teacher_inside(tmp_path):
    """`tagging train` with distill.enabled: the ensemble trains, a student with fewer filters and
    widths (a ranked cut of member 0) is distilled from it, and the student ships with the teacher
    kept at STUDENT/teacher, both artifacts intact (checksums), on one split."""
    from tagging.synth import generate_corpus, write_corpus

    data = tmp_path / "labeled.parquet"
    write_corpus(generate_corpus(240, seed=3), str(data))
    sets = {**CONFIG, "max_epochs": 2, "distill.enabled": True, "distill.concat_pool": 1, "distill.student_num_filters": 16,
            "distill.student_filter_widths": [1, 3]}
    args = ["train", "--data", str(data), "--out", str(tmp_path / "model"), "--run-name", "kd", "--storage", str(tmp_path / "runs")]
    for key, value in sets.items():
        args += ["--set", f"{key}={','.join(map(str, value)) if isinstance(value, list) else str(value).lower()}"]
    proc = cs.run_cli(args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    student, teacher = load_artifact(tmp_path / "model"), load_artifact(tmp_path / "model" / "teacher")
    assert out["artifact"] == str(student.path) and out["teacher"] == str(teacher.path)
    assert out["teacher_test"] == teacher.manifest["metrics"]["overall"] == student.manifest["distillation"]["teacher"]["test_metrics"]
    d = student.manifest["distillation"]
    assert d["teacher"]["path"] == "teacher" and d["teacher"]["sha"] == teacher.sha and d["teacher"]["members"] == 2
    assert d["student_start"] == "teacher member 0"
    assert (student.config.model.ensemble, student.config.model.num_filters, student.config.model.filter_widths) == (1, 16, (1, 3))
    assert teacher.config.model.ensemble == 2 and teacher.model_version == "kd"
    assert student.splits == teacher.splits
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labeled.parquet", "model", "runs"]  # no teacher left beside it
