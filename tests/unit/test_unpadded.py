"""The unpadded graph: the model without its PAD mask, pooled in blocks, run by the scorer on
batches of one exact length each; it must give the masked model's scores on them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tagging.batching import exact_length_order
from tagging.config import ModelConfig
from tagging.vocab import CharVocab

CFG = ModelConfig(embedding_dim=8, num_filters=6, filter_widths=(1, 2, 5, 8), hidden_dim=8, ensemble=1, max_length=64)


def test_exact_length_batches_hold_one_length_each_and_every_row_once():
    lengths = np.array([3, 5, 3, 9, 5, 3, 3, 1, 9])
    batches = exact_length_order(lengths, batch_size=3)
    assert [b.tolist() for b in batches] == [[7], [0, 2, 5], [6], [1, 4], [3, 8]]  # shortest first, ties by position
    assert exact_length_order(np.array([], dtype=np.int64), 4) == []


@pytest.mark.parametrize("ensemble", [1, 2])
def test_the_unpadded_graph_gives_the_models_scores_on_unpadded_batches_and_not_on_padded_ones(tmp_path, ensemble):
    import dataclasses

    import onnx

    from tagging.export import check_parity, export_unpadded, session, sigmoid
    from tagging.model import build_model

    torch.manual_seed(0)
    vocab = CharVocab.fit(["the quick brown fox jumps over a lazy dog 0123456789"])
    model = build_model(vocab.size, 4, dataclasses.replace(CFG, ensemble=ensemble)).eval()
    path = tmp_path / "u.onnx"
    export_unpadded(model, path)
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("MaxPool") == ops.count("ReduceMax") == 4 * ensemble  # every pool in blocks
    texts = ["a", "fox", "lazy dog", "quick brown fox jumps", "x" * 17, "the quick brown fox " * 5, "dog 42"]
    assert check_parity(model, path, texts, vocab, CFG.max_length, unpadded=True) <= 1e-5  # lengths 1..64, 64 = truncated
    ids, _ = vocab.encode(["fox", "quick brown fox jumps"], CFG.max_length)  # the first row padded
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(ids))).numpy()
    got = sigmoid(session(path).run(["logits"], {"ids": ids})[0])
    assert np.abs(got[1] - expected[1]).max() <= 1e-5 and np.abs(got[0] - expected[0]).max() > 1e-4


def test_the_scorer_runs_the_unpadded_graph_with_the_masked_graphs_scores(untrained_artifact):
    from tagging.onnx_scoring import OnnxScorer

    art = untrained_artifact(2)
    assert art.manifest["onnx"]["unpadded"]["parity_max_abs_diff"] <= 1e-5
    texts = art.normalize(["graph neural nets", "a", "b", "graph neural nets", "transformers for text " * 20, "c" * 3, "ab"])
    fast, masked = OnnxScorer(art, batch_size=2), OnnxScorer(art, batch_size=2, model_path=art.onnx_path)
    assert fast.unpadded_path == art.path / "model.unpadded.onnx" and masked.unpadded is None
    for _, ids in fast.encode_batches(texts):
        assert (ids != 0).all()  # no padding anywhere
    np.testing.assert_allclose(fast.probs(texts), masked.probs(texts), atol=1e-5)
    assert fast._masked is None  # the masked graph was never opened
    odd = ["", "nul\x00inside", "nul at the end\x00", *texts]  # empty, or a NUL (encoded as PAD): the masked graph
    np.testing.assert_allclose(fast.probs(odd), masked.probs(odd), atol=1e-5)


@pytest.mark.parametrize("written_before", [False, True])
def test_quantize_gates_and_stores_the_int8_unpadded_graph_the_scorer_runs(untrained_artifact, synth_parquet, tmp_path,
                                                                            written_before):
    import json

    from tagging.artifact import load_artifact
    from tagging.onnx_scoring import OnnxScorer
    from tagging.quantize import quantize_artifact

    shutil.copytree(untrained_artifact(1).path, tmp_path / "model")
    if written_before:  # an artifact from before the unpadded graph: quantize adds it from model.pt
        manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
        del manifest["onnx"]["unpadded"], manifest["files"]["model.unpadded.onnx"]
        (tmp_path / "model" / "manifest.json").write_text(json.dumps(manifest))
        (tmp_path / "model" / "model.unpadded.onnx").unlink()
        old = load_artifact(tmp_path / "model")
        assert old.unpadded_variant("fp32") is None and OnnxScorer(old).unpadded is None  # scored as before
    entry = quantize_artifact(str(tmp_path / "model"), [synth_parquet], calibration_rows=64, max_drop=1.0)
    art = load_artifact(tmp_path / "model")  # checksums of the new files verified
    assert entry["unpadded"]["file"] == "model.unpadded.int8.onnx" and art.manifest["int8"] == entry
    scorer = OnnxScorer(art, "int8")
    assert scorer.unpadded_path == art.path / "model.unpadded.int8.onnx"
    assert art.manifest["onnx"]["unpadded"]["parity_max_abs_diff"] <= 1e-5
    texts = art.normalize(["graph neural nets", "nets", "text classification with cnn", "nets"])
    fp32 = OnnxScorer(art, "fp32").probs(texts)
    assert np.abs(scorer.probs(texts) - fp32).max() < 0.05
