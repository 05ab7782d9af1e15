"""Seed ensembles: K char-CNNs whose probabilities are averaged in one exported graph.

On untrained models; a trained ensemble artifact is checked in tests/integration/test_ensemble_trained.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tagging.config import ConfigError, ModelConfig, load_config
from tagging.model import CharCNN, EnsembleCNN, assemble, build_model, members
from tagging.vocab import CharVocab

CFG = ModelConfig(embedding_dim=8, num_filters=6, filter_widths=(1, 2, 3, 5), hidden_dim=8, ensemble=3)


def _ensemble() -> EnsembleCNN:
    torch.manual_seed(0)
    model = build_model(30, 4, CFG)
    assert isinstance(model, EnsembleCNN) and len(members(model)) == 3
    return model.eval()


def test_probability_is_the_mean_of_the_members():
    model = _ensemble()
    ids = torch.randint(2, 30, (5, 17))
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(ids)) for m in members(model)]).mean(0)
        got = torch.sigmoid(model(ids))
    assert torch.allclose(got, expected, atol=1e-6)
    # members differ (independent initialisations), so the mean is not any one of them
    assert not torch.allclose(got, torch.sigmoid(members(model)[0](ids)), atol=1e-3)


def test_single_member_config_is_a_plain_char_cnn():
    model = build_model(30, 4, dataclasses.replace(CFG, ensemble=1))
    assert type(model) is CharCNN and members(model) == [model]


def test_ensemble_padding_invariance_and_onnx_parity(tmp_path):
    from tagging.export import check_parity, export_onnx

    model = _ensemble()
    text = torch.randint(2, 30, (1, 21))
    padded = torch.zeros((1, 300), dtype=torch.int64)
    padded[0, :21] = text
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(model(text)), torch.sigmoid(model(padded)), atol=1e-6)
    vocab = CharVocab(tuple("abcdefghijklmnopqrstuvwxyz "))
    export_onnx(model, tmp_path / "e.onnx")
    assert check_parity(model, tmp_path / "e.onnx", ["a text", "another longer text " * 10], vocab, 512) <= 1e-5


def test_assemble_loads_each_members_weights_and_checks_the_count():
    torch.manual_seed(1)
    singles = [CharCNN(30, 4, CFG) for _ in range(3)]
    model = assemble(30, 4, CFG, [m.state_dict() for m in singles])
    ids = torch.randint(2, 30, (2, 9))
    with torch.no_grad():
        for m, s in zip(members(model), singles):
            assert torch.equal(m(ids), s.eval()(ids))
    with pytest.raises(ValueError, match="2 trained members for model.ensemble=3"):
        assemble(30, 4, CFG, [m.state_dict() for m in singles[:2]])


def test_ensemble_size_is_validated():
    with pytest.raises(ConfigError, match="model.ensemble"):
        load_config(None, {"model.ensemble": 0})


def test_ensemble_is_explained_by_its_members_mean(untrained_artifact):
    """An untrained two-member artifact: the members differ by initialisation, which is all this needs."""
    from tagging.explain import Explainer

    art = untrained_artifact(ensemble=2)
    e = Explainer(art)
    text = "A PyTorch implementation of YOLO object detection"
    tag = art.labels.labels[0]
    (item,) = e.explain(text, top_k=10_000, tags=[tag])
    clean = e.normalize(text)
    member_logits = [e.features(clean, k)[2][0] for k in range(2)]
    assert item["members"] == 2
    assert item["logit"] == pytest.approx(np.mean(member_logits), abs=1e-3)
    probs = 1 / (1 + np.exp(-np.array(member_logits)))
    assert item["probability"] == pytest.approx(probs.mean(), abs=1e-3)
    positive = sum(g["contribution"] for g in item["ngrams"])
    assert positive >= item["logit"] - item["bias"] - 1e-3
