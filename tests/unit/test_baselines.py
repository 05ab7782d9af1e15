"""Baselines without fitting a model: the rule matcher's stemming and aliases, the prior-random baseline.

The fitted ladder (TF-IDF, the CNN's split, the CLI) is in tests/integration/test_baselines_ladder.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tagging.baselines import PriorRandomBaseline, TagMatcher, load_split_data, stem_tokens
from tagging.labels import TagIndex


@pytest.fixture(scope="module")
def split(synth_parquet, tiny_config):
    return load_split_data([synth_parquet], tiny_config)


def test_stemmed_alias_and_parent_matching():
    index = TagIndex.from_records([
        {"tag": "natural-language-processing", "aliases": ["nlp"], "parents": []},
        {"tag": "language-modeling", "aliases": ["lm"], "parents": ["natural-language-processing"]},
        {"tag": "tensorflow-js", "aliases": ["tf-js"], "parents": ["tensorflow"]},
        {"tag": "tensorflow", "aliases": ["tf"], "parents": []},
        {"tag": "wandb", "aliases": ["weights and biases"], "parents": []},
    ])
    m = TagMatcher(index, ["graphs", "natural-language-processing", "tensorflow"])
    assert stem_tokens("Tensorflow.js Graphs") == ("tensorflow", "js", "graph")
    assert m.matched("Logging with Weights and Biases") == {"wandb"}
    assert m.matched("a tiny graph library") == {"graphs"}  # stemmed: graph ~ graphs
    assert m.matched("Language modeling for all") == {"language-modeling"}
    assert m.matched("language modelling") == {"language-modeling"}  # stemming: modelling ~ modeling
    assert m.with_ancestors(m.matched("Language Modeling")) == {"language-modeling", "natural-language-processing"}
    assert m.with_ancestors(m.matched("A demo in TensorFlow.js")) == {"tensorflow-js", "tensorflow"}
    assert m.matched("html parsing") == set()  # 'lm' is matched as a token only


def test_random_baselines_use_priors(split):
    prior = PriorRandomBaseline(1)
    prior.fit(split)
    pred = prior.predict(["x"] * 4000)
    np.testing.assert_allclose(pred.mean(0), split.y["train"].mean(0), atol=0.03)
