"""The unit tier's own rules and fixtures: no Ray, no training.

Every unit test is checked not to leave Ray started (``no_ray`` below), so a test that starts a
local cluster fails here and belongs in tests/integration; the session's trained artifact
(``local_artifact``) is refused here for the same reason. Tests that need an artifact on disk get
one from ``untrained_artifact``: the product's artifact writer around a CharCNN with random
weights, on the generated corpus's label space and split. Only tests whose assertions need
learned weights (quality, or what training writes) use a trained one, in tests/integration.
"""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def no_ray():
    """Fails the test that leaves Ray initialized (it does not belong in the unit tier)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("a unit test started Ray: move it to tests/integration", pytrace=False)


@pytest.fixture(scope="session")
def local_artifact():
    """Overrides tests/conftest.py's trained artifact: unit tests train nothing."""
    pytest.fail("a unit test asked for the trained artifact: use untrained_artifact, or move the test to tests/integration",
                pytrace=False)


@pytest.fixture(scope="session")
def untrained_artifact(tmp_path_factory, synth_parquet, tiny_config):
    """``make(ensemble=1)`` -> a complete artifact (ONNX included) of an untrained model.

    Labels, vocabulary, splits and data hash come from the generated corpus, as in training;
    the weights are a seeded random initialisation and every threshold is 0.5 (an untrained
    model scores near 0.5, so some tags are predicted and some are not). Built once per size.
    """
    import dataclasses

    import numpy as np
    import torch

    from tagging.artifact import save_artifact
    from tagging.local import prepare_local
    from tagging.model import build_model, count_parameters
    from tagging.vocab import CharVocab

    built = {}

    def make(ensemble: int = 1):
        if ensemble in built:
            return built[ensemble]
        cfg = dataclasses.replace(tiny_config, model=dataclasses.replace(
            tiny_config.model, num_filters=6, filter_widths=(1, 2, 3, 4), embedding_dim=8, hidden_dim=8, ensemble=ensemble))
        p = prepare_local([synth_parquet], cfg)
        train = p.split("train")
        vocab = CharVocab.fit(train["text"])
        torch.manual_seed(cfg.seed)
        model = build_model(vocab.size, len(p.labels), cfg.model).eval()
        built[ensemble] = save_artifact(
            tmp_path_factory.mktemp("untrained") / "model", config=cfg, labels=p.labels, vocab=vocab,
            state_dict={k: v.clone() for k, v in model.state_dict().items()}, model=model,
            thresholds=np.full(len(p.labels), 0.5, dtype=np.float32), global_threshold=0.5,
            metrics={"split": "test", "note": "untrained"}, splits=dict(zip(p.rows["id"], p.rows["split"])), history=[],
            data_hash=p.data_hash, model_version=f"untrained-{ensemble}", parity_texts=train["text"].tolist()[:64],
            extra={"parameters": count_parameters(model)})
        return built[ensemble]

    return make
