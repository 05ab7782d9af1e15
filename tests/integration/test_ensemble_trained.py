"""A trained seed ensemble: members from different seeds, one exported graph that scores like PyTorch.

Moved from tests/unit: it trains a two-member ensemble in-process (once per module, no Ray).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tagging.model import EnsembleCNN, members


@pytest.fixture(scope="module")
def ensemble_artifact(tmp_path_factory, synth_parquet, tiny_config):
    from tagging.local import train_local

    cfg = dataclasses.replace(tiny_config, max_epochs=2, model=dataclasses.replace(tiny_config.model, ensemble=2))
    return train_local([synth_parquet], str(tmp_path_factory.mktemp("ens") / "model"), cfg, model_version="test-ensemble")


def test_ensemble_artifact_round_trips_with_members_from_different_seeds(ensemble_artifact):
    import onnxruntime as ort

    art = ensemble_artifact
    model = art.load_model()
    assert isinstance(model, EnsembleCNN) and len(members(model)) == 2
    a, b = (m.embedding.weight for m in members(model))
    assert not torch.allclose(a, b)  # seeds seed and seed+1
    history = art.read_json("history.json")
    assert {h.get("member", 0) for h in history} == {0, 1}
    # the one exported graph scores what PyTorch's ensemble scores
    ids, _ = art.vocab.encode(["a pytorch model for images", "time series"], art.max_length)
    sess = ort.InferenceSession(str(art.onnx_path), providers=["CPUExecutionProvider"])
    onnx_p = 1 / (1 + np.exp(-sess.run(["logits"], {"ids": ids})[0]))
    with torch.no_grad():
        torch_p = torch.sigmoid(model(torch.from_numpy(ids))).numpy()
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-5)
