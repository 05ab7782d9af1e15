"""The MLflow registry and the nightly drift check, end to end on a real SQLite store and a real local Ray.

A trained artifact is registered (alias production), scored through ``models:/NAME@production``
while the alias is moved to another version mid-run (the run keeps the version it planned), then
a second night with one tag's rate tripled is scored and flagged, against training and against
the first night; `tagging report --scores` shows the two nights side by side.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import conftest_score as cs
from serve_batch.job import ScoreOptions, run_score
from tagging.artifact import load_artifact, update_manifest
from tagging.cli import app
from tagging.scores import read_scores

pytestmark = pytest.mark.timeout(600)
NAME = "tagger"


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """Store, cache, artifact (registered twice: v1 = production, v2 = a copy with another manifest)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    artifact = cs.trained_artifact(tmp_path_factory.getbasetemp() / "score-artifact")
    other = root / "model-b"
    shutil.copytree(artifact, other)
    update_manifest(load_artifact(other), {}, {"model_version": "test-1b"})  # another valid artifact (manifest sha differs)
    uri = f"sqlite:///{root}/mlflow.db"
    mp = pytest.MonkeyPatch()
    mp.setenv("TAGGING_MODEL_CACHE", str(root / "cache"))
    runner = CliRunner()
    registered = []
    for model, alias in ((artifact, ["--alias", "production"]), (other, [])):
        res = runner.invoke(app, ["register", "--model", str(model), "--name", NAME, "--tracking-uri", uri, *alias])
        assert res.exit_code == 0, res.output
        registered.append(json.loads(res.output.strip().splitlines()[-1]))
    with cs.local_ray():
        yield {"root": root, "uri": uri, "artifact": artifact, "client": MlflowClient(uri), "registered": registered,
               "runner": runner}
    mp.undo()


def _nights(art, root):
    """A night like the training data, and one where a tag the model predicts for 4-12% of rows is
    predicted three times as often (rows it tags repeated under new ids)."""
    from tagging.onnx_scoring import OnnxScorer
    from tagging.synth import generate_corpus, write_corpus

    normal = generate_corpus(900, seed=21)[["id", "text"]]
    tags = OnnxScorer(art).score(art.normalize(normal["text"].tolist())).tags
    rates = tags.mean(0)
    k = int(np.argmin(np.where((rates >= 0.04) & (rates <= 0.12), np.abs(rates - 0.08), np.inf)))
    assert 0.04 <= rates[k] <= 0.12, rates
    hits = normal[tags[:, k]]
    extra = int(round(2 * rates[k] * len(normal) / (1 - 2 * rates[k])))  # (h + extra) / (n + extra) = 3 h / n
    boosted = hits.sample(n=extra, replace=True, random_state=0).assign(id=lambda d: [f"x{i}" for i in range(len(d))])
    paths = {}
    for name, df in (("normal", normal), ("tripled", pd.concat([normal, boosted], ignore_index=True))):
        paths[name] = root / "nights" / name / "part.parquet"
        paths[name].parent.mkdir(parents=True)
        write_corpus(df.reset_index(drop=True), str(paths[name]))
    return paths, art.labels.labels[k]


def test_registered_model_scores_nights_with_its_version_and_drift(setting):
    root, uri, client = setting["root"], setting["uri"], setting["client"]
    v1, v2 = setting["registered"]
    assert (v1["version"], v1["alias"], v2["version"]) == (1, "production", 2)
    assert int(client.get_model_version_by_alias(NAME, "production").version) == 1
    art = load_artifact(setting["artifact"])
    assert v1["sha256"] == art.sha and v1["source"].endswith("/model")
    paths, tag = _nights(art, root)
    out = root / "scores"

    def move_alias_once_planned(record) -> None:  # the run has resolved its model; production moves to v2
        if "units;" in record.getMessage() and int(client.get_model_version_by_alias(NAME, "production").version) == 1:
            client.set_registered_model_alias(NAME, "production", "2")

    with cs.on_log(move_alias_once_planned):
        first = run_score(ScoreOptions(model=f"models:/{NAME}@production", inputs=(str(paths["normal"].parent),), output=str(out),
                                       date="2026-11-20", tracking_uri=uri))
    assert int(client.get_model_version_by_alias(NAME, "production").version) == 2  # moved during the run
    day = out / "date=2026-11-20"
    rows = read_scores(str(out), "2026-11-20", columns=["model_version"]).column("model_version").to_pylist()
    assert set(rows) == {f"models:/{NAME}/1"} and len(rows) == first["rows_scored"] == 900
    run_record = json.loads((day / "_run.json").read_text())
    summary = json.loads((day / "summary.json").read_text())
    for model in (run_record["registry"], summary["model"]["registry"]):
        assert (model["version"], model["alias"], model["sha256"]) == (1, "production", art.sha)
    assert run_record["model_version"] == summary["model"]["version"] == f"models:/{NAME}/1"
    assert run_record["model_sha"] == summary["model"]["sha"] == art.sha and summary["model"]["artifact_version"] == "test-1"
    # a night like the training data: nothing flagged
    drift = summary["drift"]
    assert drift["vs_training"]["flagged"] == [] and drift["flagged"] == [], json.dumps(drift, indent=1)
    assert drift["vs_previous"] is None and drift["oov_chars"]["share"] < 0.01

    # the next night resolves production anew (v2); one tag predicted three times as often: flagged
    second = run_score(ScoreOptions(model=f"models:/{NAME}@production", inputs=(str(paths["tripled"].parent),), output=str(out),
                                    date="2026-11-21", tracking_uri=uri))
    assert second["model"]["version"] == f"models:/{NAME}/2" and second["model"]["artifact_version"] == "test-1b"
    drift = second["drift"]
    assert drift["vs_training"]["flagged"] == [tag], json.dumps(drift["vs_training"], indent=1)
    assert drift["vs_previous"]["dates"] == ["2026-11-20"] and tag in drift["vs_previous"]["flagged"]
    assert drift["vs_training"]["tags"][tag]["rate"] == pytest.approx(3 * drift["vs_training"]["tags"][tag]["reference"], rel=0.5)
    assert f"tag:{tag}" in drift["flagged"]

    # each night is an MLflow run with its accounting, rates and drift
    nights = {r.data.tags["date"]: r for r in client.search_runs(
        [client.get_experiment_by_name("tagging-nightly").experiment_id])}
    assert sorted(nights) == ["2026-11-20", "2026-11-21"]
    night = nights["2026-11-21"]
    assert night.data.metrics["rows_scored"] == second["rows_scored"] and night.data.tags["model_version"] == f"models:/{NAME}/2"
    assert night.data.metrics[f"rate/{tag}"] == pytest.approx(second["tags"][tag]["rate"])
    assert night.data.tags["drift_flagged"] == ",".join(drift["flagged"]) and night.data.metrics["drift/vs_training/flagged"] == 1
    assert nights["2026-11-20"].data.tags["drift_flagged"] == "none"

    # the nights side by side
    res = setting["runner"].invoke(app, ["report", "--scores", str(out), "--out", str(root / "nights")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "| | 2026-11-20 | 2026-11-21 |"
    row = next(line for line in lines if line.startswith(f"| tag {tag} |"))
    assert row.endswith(" ! |") and row.count("!") == 1, row
    assert f"| model | models:/{NAME}/1 | models:/{NAME}/2 |" in lines
    assert json.loads((root / "nights" / "nights.json").read_text())[1]["date"] == "2026-11-21"


def test_a_model_is_downloaded_once_and_verified(setting):
    from tagging.tracking import RegistryError, resolve_model

    uri = setting["uri"]
    path, record = resolve_model(f"models:/{NAME}/1", uri)  # cached by the first night
    assert record["version"] == 1 and load_artifact(path).sha == setting["registered"][0]["sha256"]
    stamp = (path / "model.onnx").stat().st_mtime_ns
    assert resolve_model(f"models:/{NAME}/1", uri)[0] == path and (path / "model.onnx").stat().st_mtime_ns == stamp
    (path / "thresholds.json").write_text("{}")  # a damaged cache is downloaded again
    again, _ = resolve_model(f"models:/{NAME}/1", uri)
    assert load_artifact(again).sha == record["sha256"]
    with pytest.raises(RegistryError, match="no-such-alias"):
        resolve_model(f"models:/{NAME}@no-such-alias", uri)
    bad = setting["runner"].invoke(app, ["score", "--model", f"models:/{NAME}@nope", "--input", "x", "--output", "y",
                                         "--tracking-uri", uri])
    assert bad.exit_code == 1 and "models:/tagger@nope" in bad.output
