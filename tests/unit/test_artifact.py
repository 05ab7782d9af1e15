"""The artifact: round trip, refusal of changed files, predict/evaluate from it (no Ray)."""

from __future__ import annotations

import json
import shutil

import pytest

from tagging.artifact import ArtifactError, load_artifact
from tagging.evaluation import evaluate_files, predict_texts_from_artifact

pytestmark = pytest.mark.unit


def test_artifact_is_self_describing(local_artifact):
    m = local_artifact.manifest
    for key in ("schema_version", "created_at", "versions", "data_hash", "config", "labels", "max_length",
                "thresholds", "metrics", "files", "onnx"):
        assert key in m, key
    assert set(m["files"]) >= {"model.pt", "model.onnx", "vocab.json", "labels.json", "thresholds.json", "metrics.json", "splits.json"}
    assert m["onnx"]["parity_max_abs_diff"] <= 1e-5
    assert m["labels"] == sorted(m["labels"])
    assert m["versions"]["torch"].startswith("2.13")
    model = local_artifact.load_model()
    assert sum(p.numel() for p in model.parameters()) == m["parameters"]


@pytest.mark.parametrize("victim", ["model.onnx", "model.pt", "thresholds.json", "labels.json"])
def test_changed_file_is_refused(local_artifact, tmp_path, victim):
    copy = tmp_path / "copy"
    shutil.copytree(local_artifact.path, copy)
    with open(copy / victim, "ab") as f:
        f.write(b" ")
    with pytest.raises(ArtifactError, match=victim):
        load_artifact(copy)


def test_missing_and_mismatched_artifacts_are_refused(local_artifact, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(local_artifact.path, copy)
    (copy / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match="vocab.json.*missing"):
        load_artifact(copy)
    shutil.rmtree(copy)
    shutil.copytree(local_artifact.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="schema version 99"):
        load_artifact(copy)
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_artifact(tmp_path)


def test_predict_and_evaluate_use_the_artifact(local_artifact, synth_parquet, tmp_path):
    [item] = predict_texts_from_artifact(str(local_artifact.path), ["A PyTorch ResNet for image segmentation"])
    assert set(item["tags"]) <= set(local_artifact.labels.labels)
    assert all(p >= local_artifact.thresholds[local_artifact.labels.labels.index(t)] - 1e-6 for t, p in item["tags"].items())
    metrics = evaluate_files(str(local_artifact.path), [synth_parquet])
    acc = metrics["accounting"]
    assert acc["rows_read"] == acc["rows_evaluated"] + acc["rows_rejected"] + acc["rows_unlabeled"] == 600
    assert 0.0 < metrics["overall"]["f1"] <= 1.0
    assert set(metrics["per_class"]) == set(local_artifact.labels.labels)
