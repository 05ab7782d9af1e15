"""Training on a real local Ray, through the real CLI: 2 DDP workers, faults, resume, accounting.

Each test runs `tagging train` in a subprocess that starts its own local Ray (as a user's
command would) in its own process group, so a kill takes the whole job down like a real crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tagging.artifact import load_artifact
from tagging.model import members
from tagging.readers import reason_kind

TAGGING = [sys.executable, "-m", "tagging.cli"]
SMALL = ["--set", "model.num_filters=16", "--set", "model.filter_widths=1,2,3,4", "--set", "model.embedding_dim=16",
         "--set", "model.hidden_dim=32",
         "--batch-size", "32", "--lr", "0.003", "--min-tag-freq", "5", "--workers", "2", "--cpus-per-worker", "0.5", "--ensemble", "1"]


def _env(**extra):
    env = dict(os.environ)
    env.update({"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "TAGGING_DATA_NO_PROGRESS_TIMEOUT_S": "120",
                "RAY_DEDUP_LOGS": "0", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def _train(args, env=None, timeout=420):
    proc = subprocess.run(TAGGING + ["train", *args], capture_output=True, text=True, env=env or _env(), timeout=timeout,
                          start_new_session=True)
    return proc


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    """One directory with a JSONL file holding every kind of bad row + raw corruptions, and a CSV."""
    from tagging.synth import generate_corpus, write_corpus

    root = tmp_path_factory.mktemp("inputs")
    bad = generate_corpus(500, seed=5, bad_fraction=0.05)
    write_corpus(bad, str(root / "part-a.jsonl"))
    write_corpus(generate_corpus(300, seed=6).assign(id=lambda d: "csv-" + d["id"]), str(root / "part-b.csv"))
    return root, bad


@pytest.fixture(scope="module")
def trained(tmp_path_factory, bad_inputs):
    """A 2-worker training run on the bad-input directory, with a worker SIGKILLed at epoch 1,
    tracked in a real MLflow SQLite store."""
    root, _ = bad_inputs
    work = tmp_path_factory.mktemp("train")
    marker = work / "killed.txt"
    proc = _train(["--data", str(root), "--out", str(work / "model"), "--storage", str(work / "runs"), "--max-epochs", "3",
                   "--tracking-uri", f"sqlite:///{work}/mlflow.db", *SMALL], env=_env(TAGGING_FAULT_KILL=f"1:1:{marker}"))
    return work, proc, marker


def test_two_worker_training_writes_a_complete_artifact(trained):
    work, proc, _ = trained
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = load_artifact(work / "model")
    assert art.manifest["onnx"]["parity_max_abs_diff"] <= 1e-5
    assert art.manifest["config"]["workers"] == 2
    assert 0.0 < art.manifest["metrics"]["overall"]["f1"] <= 1.0
    assert len(art.read_json("history.json")) == 3
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["artifact"] == str(work / "model")
    # each epoch line reaches the driver once (Ray Train's print patch used to double them)
    assert (proc.stdout + proc.stderr).count("[tagging] epoch 2: loss") == 1


def test_worker_killed_mid_training_resumes_from_checkpoint(trained):
    work, proc, marker = trained
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.read_text().startswith("killed rank 1 at epoch 1")
    logs = proc.stdout + proc.stderr
    assert "resumed from checkpoint after epoch 0" in logs
    history = load_artifact(work / "model").read_json("history.json")
    assert [h["epoch"] for h in history] == [0, 1, 2]  # epoch 0 not redone, nothing skipped


def test_the_run_is_in_mlflow_with_params_epochs_and_test_metrics(trained):
    from mlflow import MlflowClient

    work, proc, _ = trained
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = load_artifact(work / "model")
    uri = f"sqlite:///{work}/mlflow.db"
    assert art.manifest["tracking"]["uri"] == uri and art.manifest["tracking"]["experiment"] == "tagging-train"
    client = MlflowClient(uri)
    run = client.get_run(art.manifest["tracking"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == art.manifest["run"]["name"]
    params = run.data.params
    assert params["workers"] == "2" and params["model.num_filters"] == "16" and params["learning_rate"] == "0.003"
    assert run.data.tags["artifact_dir"] == str(work / "model") and run.data.tags["manifest_sha256"] == art.sha
    # rank 0's epochs, the killed epoch 1 reported once after the restart; values as history.json has them
    history = art.read_json("history.json")
    for key in ("train_loss", "val_loss", "val_f1", "lr", "samples_per_s"):
        logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert logged == pytest.approx({h["epoch"]: h[key] for h in history}), key
    assert run.data.metrics["test_f1"] == pytest.approx(art.manifest["metrics"]["overall"]["f1"])
    assert {f.path for f in client.list_artifacts(run.info.run_id, "artifact")} >= {"artifact/manifest.json", "artifact/history.json"}


def test_every_bad_row_is_accounted_for(trained, bad_inputs):
    work, proc, _ = trained
    _, bad = bad_inputs
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = load_artifact(work / "model")
    data = art.manifest["data"]
    extra_raw_lines = 2  # tagging.synth appends a malformed line and an invalid UTF-8 line to .jsonl
    assert data["rows_read"] == 500 + extra_raw_lines + 300
    assert data["rows_read"] == data["rows_used"] + data["rows_rejected"] + data["rows_unlabeled"]
    rejects = pd.read_parquet(work / "model" / "rejects.parquet")
    assert len(rejects) == data["rows_rejected"]
    kinds = {reason_kind(r) for r in rejects["reason"]}
    assert kinds >= {"null_text", "empty_text", "non_string_text", "text_too_long", "missing_id", "duplicate_id",
                     "unparseable_tags", "malformed_record", "invalid_utf8"}
    assert rejects["source"].str.contains("part-a.jsonl:").all()
    # Every bad row the generator made is among the rejects (by kind count).
    assert len(rejects) == int(bad["_bad_kind"].notna().sum()) + extra_raw_lines
    assert "rows read 802 = used" in proc.stdout + proc.stderr


def test_a_reused_run_name_with_other_data_is_refused(trained, synth_parquet, tmp_path):
    """The run directory records what the run started with; resuming it on other data is refused
    before any Ray Train work, in one line that names the way out."""
    work, proc, _ = trained
    assert proc.returncode == 0, proc.stderr[-3000:]
    art = load_artifact(work / "model")
    name = art.manifest["run"]["name"]
    record = json.loads((work / "runs" / name / "tagging_run.json").read_text())
    assert record["data_hash"] == art.manifest["data_hash"] and record["labels"] == art.manifest["labels"]
    assert record["code"]["tagging"] == art.manifest["versions"]["tagging"] == "0.1.0"
    assert "git_sha" in art.manifest["versions"] and record["code"]["git_sha"] == art.manifest["versions"]["git_sha"]
    before = sorted(p.name for p in (work / "runs" / name).iterdir())
    again = _train(["--data", synth_parquet, "--out", str(tmp_path / "model"), "--storage", str(work / "runs"), "--run-name", name,
                    "--max-epochs", "3", *SMALL])
    assert again.returncode == 1
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "was started with other data" in last and "--fresh" in last, last
    assert "epoch 0:" not in again.stdout + again.stderr and not (tmp_path / "model").exists()
    assert sorted(p.name for p in (work / "runs" / name).iterdir()) == before


def test_killed_run_resumes_when_rerun_with_the_same_name(tmp_path, synth_parquet):
    """A 2-member ensemble killed (SIGKILL: driver, local Ray, workers) while its second member
    trains: the rerun keeps member 0's finished run and resumes member 1 from its checkpoint."""
    args = ["--data", synth_parquet, "--out", str(tmp_path / "model"), "--storage", str(tmp_path / "runs"),
            "--run-name", "resume-me", "--max-epochs", "6", *SMALL, "--ensemble", "2", "--set", "distill.enabled=false"]
    proc = subprocess.Popen(TAGGING + ["train", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), start_new_session=True)
    ckpt = tmp_path / "runs" / "resume-me-m1" / "epoch-0001"
    deadline = time.time() + 400
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert ckpt.exists(), "no checkpoint of the second member appeared"
    assert (tmp_path / "runs" / "resume-me" / "epoch-0005").exists()  # member 0 had finished
    # kill at once: a tiny model's epoch takes well under a second, so waiting could let member 1
    # finish; killed this early, the newest complete checkpoint may still be epoch 0's
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its local Ray and the workers
    proc.wait(30)
    assert not (tmp_path / "model").exists()
    rerun = _train(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    logs = rerun.stdout + rerun.stderr
    resumed = sorted({line.split("[tagging] ")[-1] for line in logs.splitlines() if "resumed from checkpoint" in line})
    assert "resumed from checkpoint after epoch 5" in resumed, resumed  # member 0: nothing redone
    assert any(f"resumed from checkpoint after epoch {e}" in resumed for e in range(5)), resumed  # member 1: mid-run
    assert "epoch 0:" not in logs  # no member started over
    art = load_artifact(tmp_path / "model")
    history = art.read_json("history.json")
    assert [h["epoch"] for h in history if "member" not in h] == list(range(6))
    assert [h["epoch"] for h in history if h.get("member") == 1] == list(range(6))
    assert [m["run"] for m in art.manifest["run"]["members"]] == ["resume-me", "resume-me-m1"]
    assert len(members(art.load_model())) == 2


def test_cli_smoke_of_every_command(trained, tmp_path, synth_parquet):
    work, proc, _ = trained
    model = str(work / "model")
    run = lambda *a: subprocess.run(TAGGING + list(a), capture_output=True, text=True, timeout=300, env=_env())  # noqa: E731
    top = run("--help")
    assert top.returncode == 0
    for cmd in ("train", "evaluate", "predict", "synth", "bench-train"):
        assert cmd in top.stdout
        assert run(cmd, "--help").returncode == 0, cmd
    pred = run("predict", "--model", model, "--text", "A PyTorch CNN for image segmentation")
    assert pred.returncode == 0, pred.stderr
    assert "tags" in json.loads(pred.stdout.splitlines()[0])
    # a tracking server that is down costs one warning line, not the run
    ev = run("evaluate", "--model", model, "--data", synth_parquet, "--out", str(tmp_path / "eval"), "--tracking-uri", "http://127.0.0.1:9")
    assert ev.returncode == 0, ev.stderr
    warnings = [line for line in ev.stderr.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and "warning: MLflow tracking off" in warnings[0], ev.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["overall"]) >= {"precision", "recall", "f1", "micro_f1", "macro_f1", "num_samples"}
    syn = run("synth", "--rows", "50", "--out", str(tmp_path / "s.csv"))
    assert syn.returncode == 0 and len(pd.read_csv(tmp_path / "s.csv")) == 50
    # Bad usage exits 2; a failure exits 1 with a one-line reason.
    assert run("train").returncode == 2
    missing = run("train", "--data", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "m"))
    assert missing.returncode == 1 and missing.stderr.strip().splitlines()[-1].startswith("error:") and "nope.parquet" in missing.stderr
    corrupted = tmp_path / "corrupted"
    import shutil

    shutil.copytree(model, corrupted)
    (corrupted / "model.onnx").write_bytes(b"garbage")
    bad = run("predict", "--model", str(corrupted), "--text", "x")
    assert bad.returncode == 1 and "model.onnx" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
