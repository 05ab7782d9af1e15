"""Ray Tune on a real local Ray: ASHA over Ray Train trials, threshold stage, no leaked resources."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tagging.artifact import load_artifact
from tagging.model import members

# One good learning rate first, then hopeless ones: with one trial at a time the order is the
# grid order, so ASHA has the good trial's result at its rung when the bad ones get there.
SPACE = {
    "model.embedding_dim": 16, "model.num_filters": 24, "model.filter_widths": [2, 3, 4], "model.hidden_dim": 32,
    "model.dropout": 0.0, "model.max_length": 256, "batch_size": 16, "learning_rate": {"grid": [0.01, 1e-7, 1e-7, 1e-7]},
    "weight_decay": None, "imbalance": None, "lr_schedule": "cosine", "concat_rate": 0.0,
}


def _tune(data, out, space, *extra, cwd=None):
    env = dict(os.environ, RAY_DATA_DISABLE_PROGRESS_BARS="1", TAGGING_DATA_NO_PROGRESS_TIMEOUT_S="120", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "tagging.cli", "tune", "--data", data, "--out", str(out), "--trials", "1", "--max-epochs", "3",
         "--grace-period", "2", "--space", str(space), "--workers-per-trial", "1", "--cpus-per-worker", "0.5",
         "--max-concurrent", "1", "--no-measure-cost", *extra],
        capture_output=True, text=True, env=env, timeout=900, cwd=cwd,
    )


@pytest.fixture(scope="module")
def tune_inputs(tmp_path_factory):
    from tagging.synth import generate_corpus, write_corpus

    root = tmp_path_factory.mktemp("tune")
    write_corpus(generate_corpus(800, seed=3), str(root / "data.parquet"))
    (root / "space.json").write_text(json.dumps(SPACE))
    (root / "space1.json").write_text(json.dumps({**SPACE, "learning_rate": 0.01, "alias_examples": True}))
    (root / "tags.json").write_text(json.dumps([{"tag": "pytorch", "aliases": ["torch"], "parents": []},
                                                {"tag": "object-detection", "aliases": ["yolo"], "parents": ["computer-vision"]}]))
    return root


def test_tune_asha_thresholds_and_a_second_run(tune_inputs):
    root = tune_inputs
    uri = f"sqlite:///{root}/mlflow.db"
    first = _tune(str(root / "data.parquet"), root / "out1", root / "space.json", "--ensemble", "2", "--tracking-uri", uri)
    assert first.returncode == 0, first.stderr[-4000:]
    board = pd.read_csv(root / "out1" / "leaderboard.csv")
    assert len(board) == 4
    assert board["stopped_early"].sum() >= 1, board.to_string()
    assert board.iloc[0]["val_f1"] == board["val_f1"].max()
    summary = json.loads((root / "out1" / "tune_summary.json").read_text())
    assert summary["failed"] == 0 and summary["trials"] == 4
    assert json.loads(board.iloc[0]["params"])["learning_rate"] == pytest.approx(0.01)
    art = load_artifact(root / "out1" / "model")
    assert art.manifest["threshold_policy"]["source"] == "tune threshold stage"
    assert art.manifest["threshold_policy"] == summary["threshold_policy"]
    policies = pd.read_csv(root / "out1" / "thresholds_policies.csv")
    assert len(policies) == 20 and policies["cv_f1"].max() == pytest.approx(summary["threshold_policy"]["cv_f1"])
    best_config = json.loads((root / "out1" / "best_config.json").read_text())
    assert best_config["learning_rate"] == pytest.approx(0.01) and best_config["model"]["num_filters"] == 24
    # trials are single models; the tuned artifact is the best trial + 1 more member of its config
    assert summary["ensemble"] == 2 and art.config.model.ensemble == 2 and best_config["model"]["ensemble"] == 2
    assert len(members(art.load_model())) == 2 and art.config.learning_rate == pytest.approx(0.01)
    assert [m["seed"] for m in art.manifest["run"]["members"]] == [42, 43]
    assert "ensemble member 2 of 2" in first.stdout + first.stderr
    assert (root / "out1" / "pareto.png").stat().st_size > 1000
    assert (root / "out1" / "leaderboard.md").read_text().startswith("| trial |")
    # MLflow: the tuning run, each trial a child run with its params and epochs, the second ensemble member too
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(art.manifest["tracking"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["tune_experiment"] == summary["experiment"]
    assert parent.data.metrics["test_f1"] == pytest.approx(summary["test_f1"]) and parent.data.params["tune.trials"] == "1"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    trials = [c for c in children if "learning_rate" in c.data.params]
    assert len(trials) == 4 and all(c.info.status == "FINISHED" for c in children), [(c.info.run_name, c.info.status) for c in children]
    assert sorted(float(c.data.params["learning_rate"]) for c in trials) == pytest.approx([1e-7, 1e-7, 1e-7, 0.01])
    epochs = sorted(len(client.get_metric_history(c.info.run_id, "val_f1")) for c in trials)
    assert epochs == sorted(board["epochs"]), (epochs, board["epochs"].tolist())  # one val_f1 per epoch, ASHA's stops included
    best_m1 = [c for c in children if c.info.run_name == f"{summary['experiment']}-best-m1"]
    assert len(best_m1) == 1 and best_m1[0].data.metrics["best_val_f1"] > 0
    # A second run right after starts and finishes: nothing leaked (placement groups, workers).
    # Its trial reads a tags file given by a relative path (alias examples): trials run in their
    # own directories, so the path must reach them resolved.
    second = _tune(str(root / "data.parquet"), root / "out2", root / "space1.json", "--ensemble", "1", "--tags", "tags.json",
                   cwd=root)
    assert second.returncode == 0, second.stderr[-4000:]
    board2 = pd.read_csv(root / "out2" / "leaderboard.csv")
    assert len(board2) == 1 and json.loads(board2.iloc[0]["params"])["alias_examples"] is True
    art2 = load_artifact(root / "out2" / "model")
    assert art2.config.model.ensemble == 1 and art2.config.alias_examples
    assert art2.config.data.tags_file == str(root / "tags.json")
    assert json.loads((root / "out2" / "tune_summary.json").read_text())["failed"] == 0
