"""The artifact: refusal of changed or missing files, its inputs (split rows, tags file), the Predictor.

On untrained models (tests/unit/conftest.py); what training writes into an artifact, and
predict/evaluate on a trained one, are checked in tests/integration/test_artifact_trained.py."""

from __future__ import annotations

import json
import shutil

import pytest

from tagging.artifact import ArtifactError, load_artifact


@pytest.mark.parametrize("victim", ["model.onnx", "model.pt", "thresholds.json", "labels.json"])
def test_changed_file_is_refused(untrained_artifact, tmp_path, victim):
    copy = tmp_path / "copy"
    shutil.copytree(untrained_artifact().path, copy)
    load_artifact(copy)  # the copy itself loads
    with open(copy / victim, "ab") as f:
        f.write(b" ")
    with pytest.raises(ArtifactError, match=victim):
        load_artifact(copy)


def test_missing_and_mismatched_artifacts_are_refused(untrained_artifact, tmp_path):
    source = untrained_artifact().path
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    (copy / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match="vocab.json.*missing"):
        load_artifact(copy)
    shutil.rmtree(copy)
    shutil.copytree(source, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="schema version 99"):
        load_artifact(copy)
    with pytest.raises(ArtifactError, match="not a model artifact"):
        load_artifact(tmp_path)


# ----------------------------------------------------------------------------- the artifact's inputs, no training


def _random_artifact(root, tags_file=None, splits=None):
    """An Artifact around a CharCNN with random weights (no training, no ONNX): enough for
    labeled_rows, normalize, tags_file and the in-process Predictor."""
    import numpy as np
    import torch

    from tagging.artifact import Artifact
    from tagging.config import load_config
    from tagging.labels import LabelSpace
    from tagging.model import build_model
    from tagging.vocab import CharVocab

    cfg = load_config(None, {"model.num_filters": 4, "model.filter_widths": [1, 2], "model.embedding_dim": 4,
                             "model.hidden_dim": 4, "model.ensemble": 1, "data.tags_file": tags_file})
    labels, vocab = LabelSpace(("nlp", "pytorch", "vision")), CharVocab(tuple("abcdefghijklmnopqrstuvwxyz "))
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(build_model(vocab.size, len(labels), cfg.model).state_dict(), root / "model.pt")
    (root / "splits.json").write_text(json.dumps(splits or {}))
    manifest = {"model_version": "random", "max_length": cfg.model.max_length, "data_hash": ""}
    return Artifact(root, manifest, cfg, labels, vocab, np.full(len(labels), 0.5, dtype=np.float32))


ROWS = [  # id, text, tags
    ("b", "Fine-tuning BERT", ["natural-language"]),  # an alias of nlp (tags file)
    ("a", "  A  CNN   for IMAGES ", ["vision", "pytorch"]),
    ("c", "Something else", ["cooking"]),  # no tag in the label space
    ("b", "the same id again", ["vision"]),  # duplicate id: the first one wins
    ("d", "", ["vision"]),  # empty text: rejected
    ("e", "A torch model", ["pytorch"]),
] + [(f"z{k}", f"filler text {k}", ["vision"]) for k in range(10)]  # prepare() splits at least 10 rows
FILLERS = [f"z{k}" for k in range(10)]


@pytest.fixture
def data_and_tags(tmp_path):
    data = tmp_path / "rows.jsonl"
    lines = [json.dumps({"id": i, "text": t, "tags": tags}) for i, t, tags in ROWS] + ["{not json"]
    data.write_text("\n".join(lines) + "\n")
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps([{"tag": "nlp", "aliases": ["natural-language"]}]))
    return str(data), str(tags)


def test_labeled_rows_read_as_training_reads(tmp_path, data_and_tags):
    from tagging.dataset import prepare
    from tagging.local import read_rows_local
    from tagging.readers import load_tag_index

    data, tags = data_and_tags
    art = _random_artifact(tmp_path / "art", tags, splits={"a": "train", "b": "test"})
    rows = art.labeled_rows([data])
    assert rows.ids == ["a", "b", "e", *FILLERS] and rows.splits == ["train", "test", None] + [None] * 10
    assert rows.texts[:3] == ["a cnn for images", "fine-tuning bert", "a torch model"]
    assert rows.y[:3].tolist() == [[0, 1, 1], [1, 0, 0], [0, 1, 0]]
    assert rows.accounting == {"rows_read": 17, "rows_used": 13, "rows_rejected": 3, "rows_unlabeled": 1}
    assert rows.tags_file == tags and rows.index.canonical(["natural-language"]) == ["nlp"]
    # the same rows, labels and data hash as training's prepare() with this label space
    p = prepare(*read_rows_local([data], art.config), art.config.data, 0, load_tag_index(tags), list(art.labels.labels))
    assert p.rows["id"].tolist() == rows.ids and p.data_hash == rows.data_hash
    test = rows.split("test")
    assert test.ids == ["b"] and test.y.tolist() == [[1, 0, 0]] and test.splits == ["test"]
    with pytest.raises(ValueError, match="none of the artifact's val rows"):
        rows.split("val")


def test_tags_file_is_the_training_runs_while_it_is_there(tmp_path, data_and_tags):
    data, tags = data_and_tags
    gone = _random_artifact(tmp_path / "gone", str(tmp_path / "moved.json"))
    assert gone.tags_file() is None and gone.tag_index().alias_to_tag == {}
    assert gone.labeled_rows([data]).ids == ["a", "e", *FILLERS]  # the alias is not known: row b is unlabeled
    assert gone.tags_file(tags) == tags and gone.labeled_rows([data], tags).ids == ["a", "b", "e", *FILLERS]
    with pytest.raises(FileNotFoundError, match="no such tags file"):
        gone.tags_file(str(tmp_path / "nope.json"))
    assert _random_artifact(tmp_path / "here", tags).tags_file() == tags


def test_predictor_normalizes_thresholds_and_decodes(tmp_path):
    import numpy as np

    from tagging.evaluation import Predictor

    art = _random_artifact(tmp_path / "art")
    predictor = Predictor(art)
    raw = ["  A PyTorch   MODEL", "vision"]
    probs = predictor.probs(raw)
    assert probs.shape == (2, 3) and probs.dtype == np.float32
    np.testing.assert_array_equal(probs, predictor.probs(art.normalize(raw), normalized=True))
    assert art.normalize(raw) == ["a pytorch model", "vision"]
    mask = predictor.predict(raw)
    np.testing.assert_array_equal(mask, probs >= 0.5)
    assert predictor.tags(raw) == [[t for t, m in zip(art.labels.labels, row) if m] for row in mask]
