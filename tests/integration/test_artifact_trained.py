"""What in-process training writes into an artifact, and predict/evaluate on it (no Ray).

Moved from tests/unit: these need the session's trained artifact (tests/conftest.py, local_artifact).
"""

from __future__ import annotations

from tagging.evaluation import evaluate_files, predict_texts_from_artifact


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


def test_predict_and_evaluate_use_the_artifact(local_artifact, synth_parquet, tmp_path):
    [item] = predict_texts_from_artifact(str(local_artifact.path), ["A PyTorch ResNet for image segmentation"])
    assert set(item["tags"]) <= set(local_artifact.labels.labels)
    assert all(p >= local_artifact.thresholds[local_artifact.labels.labels.index(t)] - 1e-6 for t, p in item["tags"].items())
    metrics = evaluate_files(str(local_artifact.path), [synth_parquet])
    acc = metrics["accounting"]
    assert acc["rows_read"] == acc["rows_evaluated"] + acc["rows_rejected"] + acc["rows_unlabeled"] == 600
    assert 0.0 < metrics["overall"]["f1"] <= 1.0
    assert set(metrics["per_class"]) == set(local_artifact.labels.labels)
