"""Baselines: same split and label space as the CNN, same metrics schema, and the ladder holds.

Moved from tests/unit: the ladder fits TF-IDF linear models, and the split is compared with the
session's trained artifact (tests/conftest.py, local_artifact).
"""

from __future__ import annotations

import json

import pytest

from tagging.baselines import (PriorRandomBaseline, RandomBaseline, RuleBaseline, TfidfLinearBaseline, load_baselines,
                               load_split_data, markdown_table, run_baselines, write_baselines)
from tagging.metrics import evaluate


@pytest.fixture(scope="module")
def split(synth_parquet, tiny_config):
    return load_split_data([synth_parquet], tiny_config)


@pytest.fixture(scope="module")
def results(split):
    ladder = [RandomBaseline(0), PriorRandomBaseline(0), RuleBaseline(),
              TfidfLinearBaseline("svm", c_grid=(0.3, 1.0), class_weights=(None,))]
    return run_baselines(split, ladder)


def _schema(d: dict) -> dict:
    return {k: (_schema(v) if isinstance(v, dict) else type(v).__name__) for k, v in d.items()}


def test_split_is_the_cnn_split(split, local_artifact):
    """Same config (seed, data settings) -> the same split membership by id as the trained artifact."""
    splits = local_artifact.read_json("splits.json")
    for name in ("train", "val", "test"):
        assert split.ids[name] and all(splits[i] == name for i in split.ids[name])
    assert sum(len(v) for v in split.ids.values()) == len(splits)
    assert list(split.labels.labels) == list(local_artifact.labels.labels)


def test_split_from_artifact_matches(synth_parquet, tiny_config, local_artifact, split):
    from_model = load_split_data([synth_parquet], tiny_config, str(local_artifact.path))
    assert from_model.ids == split.ids
    assert from_model.info["split_source"].startswith("artifact test-local")


def test_metrics_schema_is_evaluates(results, split):
    labels = split.labels.labels
    reference = evaluate(split.y["test"], split.y["test"], labels)
    for name, m in results.items():
        assert _schema({"overall": m["overall"], "per_class": m["per_class"]}) == _schema(reference), name
        assert m["throughput_docs_per_s"] > 0 and 0 <= m["val_f1"] <= 1


def test_tfidf_beats_random_and_rules_are_deterministic(results, split):
    f1 = {k: v["overall"]["f1"] for k, v in results.items()}
    assert f1["tfidf_svm"] > f1["random"] + 0.3
    assert f1["tfidf_svm"] > f1["prior_random"] + 0.3
    assert results["tfidf_svm"]["params"]["C"] in (0.3, 1.0)
    again = run_baselines(split, [RandomBaseline(0), RuleBaseline()])
    for k in again:
        assert again[k]["overall"] == results[k]["overall"]


def test_write_and_load(results, split, tmp_path):
    path = write_baselines(results, split, tmp_path / "bl")
    loaded, run = load_baselines(tmp_path / "bl")
    assert set(loaded) == set(results)
    assert run["labels"] == list(split.labels.labels) and run["counts"]["test"] == len(split.ids["test"])
    table = (tmp_path / "bl" / "baselines.md").read_text()
    assert "| tfidf_svm |" in table and table.count("\n|") == len(results) + 2
    assert json.loads(path.read_text())["random"]["split"] == "test"
    assert markdown_table(results).startswith("| model |")


def test_cli_smoke(synth_parquet, tmp_path):
    from typer.testing import CliRunner

    from tagging.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["baselines", "--data", synth_parquet, "--out", str(tmp_path / "b"), "--min-tag-freq", "5", "--c", "1"])
    assert res.exit_code == 0, res.output
    f1 = json.loads(res.stdout.strip().splitlines()[-1])["f1"]
    assert f1["tfidf_svm"] > f1["random"]
    bad = runner.invoke(app, ["baselines", "--data", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "c")])
    assert bad.exit_code == 1 and "error:" in bad.stderr


def test_cli_takes_a_labels_file_uri(tmp_path, synth_parquet, split):
    """A URI survives the CLI (a Path option would fold file:/// into file:/)."""
    from typer.testing import CliRunner

    from tagging.cli import app

    two = list(split.labels.labels)[:2]
    (tmp_path / "labels.txt").write_text("\n".join(two) + "\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["baselines", "--data", synth_parquet, "--labels", f"file://{tmp_path}/labels.txt",
                                   "--out", str(tmp_path / "out"), "--c", "1"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "out" / "run.json").read_text())["labels"] == two
