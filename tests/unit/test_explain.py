"""explain: n-grams are the real windows of the max-pooled filters, attributions add up, results are stable.

None of this needs learned weights: an untrained model's filters have windows, maxima and
contributions like a trained one's (tests/unit/conftest.py, ``untrained_artifact``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagging.explain import Explainer, explain, format_explanation
from tagging.text import normalize

TEXTS = ["A PyTorch implementation of YOLO object detection with bounding boxes",
         "Time series forecasting with ARIMA", "GAN"]


@pytest.fixture(scope="module")
def artifact(untrained_artifact):
    return untrained_artifact()


@pytest.fixture(scope="module")
def explainer(artifact):
    return Explainer(artifact)


@pytest.mark.parametrize("text", TEXTS)
def test_ngrams_are_substrings_of_the_normalized_text(explainer, artifact, text):
    every_tag = list(artifact.labels.labels)
    items = explainer.explain(text, top_k=8, tags=every_tag)
    assert {it["tag"] for it in items} == set(every_tag)
    probs = [it["probability"] for it in items]
    assert probs == sorted(probs, reverse=True)
    clean = normalize(text)
    for it in items:
        assert it["text"] == clean
        assert 0 < len(it["ngrams"]) <= 8 or it["logit"] - it["bias"] <= 0
        for g in it["ngrams"]:
            assert g["ngram"] == clean[g["start"]:g["end"]] and g["ngram"] in clean
            assert 1 <= len(g["ngram"]) <= max(artifact.config.model.filter_widths)
            assert g["contribution"] > 0 and g["filters"] >= 1
        contributions = [g["contribution"] for g in it["ngrams"]]
        assert contributions == sorted(contributions, reverse=True)


def test_predicted_tags_only_by_default(explainer):
    items = explainer.explain(TEXTS[0])
    assert 0 < len(items) < len(explainer.art.labels)  # some tags are predicted, not all
    for it in items:
        assert it["predicted"] and it["probability"] >= it["threshold"]


def test_stable_across_runs_and_case(artifact):
    a = explain(artifact, TEXTS[0], top_k=5)
    b = explain(str(artifact.path), TEXTS[0], top_k=5)
    c = explain(artifact, TEXTS[0].upper(), top_k=5)  # the artifact lowercases
    assert a == b == c


def test_windows_follow_same_padding(explainer):
    """A filter's pooled value equals the unpadded convolution over exactly its n-gram's window."""
    clean = explainer.normalize(TEXTS[0])
    h, pos, _ = explainer.features(clean)
    ids = torch.from_numpy(explainer.art.vocab.encode([clean], explainer.art.max_length)[0])
    m, nf = explainer.model, explainer.num_filters
    with torch.no_grad():
        x = m.embedding(ids).transpose(1, 2)
        # no padding: output j reads text[j:j+w]
        valid = [F.relu(norm(conv(x)))[0].numpy() for conv, norm in zip(m.convs, m.norms)]
    checked = 0
    for i in np.flatnonzero(h > 0):
        k, f = divmod(int(i), nf)
        w = explainer.widths[k]
        start, end = explainer.span(int(i), int(pos[i]), len(clean))
        if end - start == w:  # window entirely inside the text
            assert valid[k][f, start] == pytest.approx(h[i], abs=1e-5)
            checked += 1
    assert checked > 0.8 * (h > 0).sum()


def test_attribution_is_an_exact_decomposition(explainer):
    clean = explainer.normalize(TEXTS[1])
    h, _, logits = explainer.features(clean)
    w_eff, b_eff = explainer.linearize(h)
    np.testing.assert_allclose((w_eff * h).sum(1) + b_eff, logits, atol=1e-4)
    (item,) = explainer.explain(TEXTS[1], top_k=10_000, tags=[explainer.art.labels.labels[0]])
    positive = sum(g["contribution"] for g in item["ngrams"])
    assert positive >= item["logit"] - item["bias"] - 1e-3  # only non-positive spans were left out


def test_bad_input(explainer):
    with pytest.raises(ValueError, match="empty"):
        explainer.explain("   ")
    with pytest.raises(ValueError, match="not in the model's label space"):
        explainer.explain("text", tags=["no-such-tag"])


def test_cli_smoke(artifact):
    from typer.testing import CliRunner

    from tagging.cli import app

    runner = CliRunner()
    tag = artifact.labels.labels[0]
    res = runner.invoke(app, ["explain", "--model", str(artifact.path), "--text", TEXTS[0], "--tag", tag, "--json"])
    assert res.exit_code == 0, res.output
    (item,) = json.loads(res.stdout)["tags"]
    assert item["tag"] == tag
    res = runner.invoke(app, ["explain", "--model", str(artifact.path), "--text", TEXTS[0], "--top-k", "2"])
    assert res.exit_code == 0 and res.stdout.startswith("text: ")
    assert "(no tag predicted" in format_explanation("x", [])
    bad = runner.invoke(app, ["explain", "--model", str(artifact.path), "--text", "x", "--tag", "nope"])
    assert bad.exit_code == 1 and bad.stderr.startswith("error:")


def test_batch_norm_models_are_explained(artifact):
    """With BatchNorm after the convolutions, the explained forward pass still matches the model's."""
    import dataclasses

    from tagging.model import CharCNN

    e = Explainer(artifact)
    cfg = dataclasses.replace(artifact.config.model, batch_norm=True)
    model = CharCNN(artifact.vocab.size, len(artifact.labels), cfg)
    model.load_state_dict(e.model.state_dict(), strict=False)
    torch.manual_seed(0)
    for norm in model.norms:
        norm.running_mean.normal_(0, 0.1)
        norm.running_var.uniform_(0.5, 2.0)
    e.model = model.eval()
    items = e.explain(TEXTS[0], tags=list(artifact.labels.labels)[:2])  # raises if the passes differ
    assert len(items) == 2 and all(g["ngram"] in items[0]["text"] for g in items[0]["ngrams"])


def test_model_pieces_compose_forward_and_point_at_the_pooled_values():
    """What explain reads: forward = head(pool(conv_features)); pooled_positions index the pooled
    maxima, inside each text (PAD positions are zero). A random model: no training."""
    from tagging.config import ModelConfig
    from tagging.model import CharCNN

    torch.manual_seed(0)
    m = CharCNN(30, 4, ModelConfig(embedding_dim=8, num_filters=5, filter_widths=(1, 2, 3, 5), hidden_dim=8, ensemble=1)).eval()
    ids = torch.randint(2, 30, (3, 19))
    ids[1, 7:] = 0
    with torch.no_grad():
        z = m.conv_features(ids)
        h, pos = m.pool(z), m.pooled_positions(z)
        assert torch.equal(m.head(h), m(ids))
    assert [tuple(t.shape) for t in z] == [(3, 5, 19)] * 4 and all(bool((t[1, :, 7:] == 0).all()) for t in z)
    assert h.shape == pos.shape == (3, 20) and bool((pos[1] < 7).all())
    assert torch.equal(torch.cat(z, 1).gather(2, pos.unsqueeze(-1)).squeeze(-1), h)
