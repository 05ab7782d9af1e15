"""Which character n-grams drove each predicted tag (the char-CNN's filters, read back).

Every convolution filter of width ``w`` is max-pooled over the text, so its pooled value comes
from one position ``pos`` (the first argmax over the text's positions). With SAME padding
(``(w-1)//2`` zeros on the left), output position ``pos`` reads the input window
``text[pos - left : pos - left + w]``, clipped to the text: that window is the filter's n-gram.

Attribution is exact, not a heuristic. Between the pooled features ``h`` and the logits the
network is ``fc2(relu(fc1(h)))`` (dropout is off at inference), which is linear once the ReLU
pattern of the hidden layer is fixed. So for this text

    logit[c] = sum_i h[i] * W_eff[c, i] + b_eff[c],
    W_eff = fc2.W[:, on] @ fc1.W[on, :],   b_eff = fc2.W[:, on] @ fc1.b[on] + fc2.b,

with ``on`` the active hidden units. ``h[i] * W_eff[c, i]`` (= activation x gradient) is filter
``i``'s share of tag ``c``'s logit. Filters whose maxima sit on the same span are summed, so the
n-gram contributions plus ``bias`` (= ``b_eff``) add up exactly to the logit.

An ensemble averages its members' probabilities. Each member is explained exactly as above;
an n-gram's contribution is the mean of its contributions over the members, so contributions
plus ``bias`` add up exactly to the members' mean logit (``logit``); ``probability`` is the
ensemble's own (the mean of the members' probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tagging.artifact import Artifact
from tagging.evaluation import Predictor


class Explainer(Predictor):
    """An artifact's model, loaded once (a Predictor); ``explain(text)`` per text."""

    def __init__(self, artifact: Artifact | str | Path) -> None:
        super().__init__(artifact)
        self.widths = list(self.art.config.model.filter_widths)
        self.num_filters = self.art.config.model.num_filters

    @property
    def members(self) -> list:
        """The CharCNNs explained: the model itself, or an ensemble's members."""
        from tagging.model import members

        return members(self.model)

    def normalize(self, text: str) -> str:
        """The text exactly as the model reads it: normalized like the training data, truncated."""
        return self.art.normalize([text])[0][: self.art.max_length]

    def features(self, text: str, member: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a normalized text and one (ensemble member) CharCNN: pooled activations h, float [D];
        their positions, int [D]; and its logits, float [labels] (D = filters x widths, ordered
        width by width)."""
        import torch

        m = self.members[member]
        ids = torch.from_numpy(self.art.vocab.encode([text], self.art.max_length)[0])  # int64 [1, L], unpadded
        with torch.no_grad():
            z = m.conv_features(ids)
            h, pos, logits = m.pool(z)[0], m.pooled_positions(z)[0], m(ids)[0]
        return h.double().numpy(), pos.numpy(), logits.double().numpy()

    def linearize(self, h: np.ndarray, member: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(W_eff float [labels, D], b_eff float [labels]) of fc2(relu(fc1(h))) at this h."""
        m = self.members[member]
        w1 = m.fc1.weight.detach().double().numpy()
        b1 = m.fc1.bias.detach().double().numpy()
        w2 = m.fc2.weight.detach().double().numpy()
        b2 = m.fc2.bias.detach().double().numpy()
        on = (w1 @ h + b1) > 0
        return w2[:, on] @ w1[on, :], w2[:, on] @ b1[on] + b2

    def span(self, feature: int, pos: int, length: int) -> tuple[int, int]:
        """[start, end) of the characters filter ``feature`` read at output position ``pos``."""
        w = self.widths[feature // self.num_filters]
        start = pos - (w - 1) // 2
        return max(start, 0), min(start + w, length)

    def explain(self, text: str, top_k: int = 5, tags: Sequence[str] | None = None) -> list[dict]:
        """For each predicted tag (or each of ``tags``), the ``top_k`` n-grams by contribution.

        Returns dicts ``{tag, probability, threshold, predicted, logit, bias, text, ngrams: [{ngram,
        start, end, contribution, filters}]}`` sorted by probability; ``text`` is the normalized text
        that ``start``/``end`` index; ``filters`` counts the filters whose maximum is on that span.
        """
        clean = self.normalize(text)
        if not clean:
            raise ValueError("nothing to explain: the text is empty after normalization")
        parts = []  # per member: (h, w_eff, spans, logits, b_eff)
        for k in range(len(self.members)):
            h, pos, logits = self.features(clean, k)
            w_eff, b_eff = self.linearize(h, k)
            if not np.allclose(w_eff @ h + b_eff, logits, atol=1e-4):
                raise RuntimeError("explain: the model's forward pass differs from the explained one (model changed?)")
            parts.append((h, w_eff, [self.span(i, int(p), len(clean)) for i, p in enumerate(pos)], logits, b_eff))
        probs = np.mean([1.0 / (1.0 + np.exp(-p[3])) for p in parts], axis=0)
        logits = np.mean([p[3] for p in parts], axis=0)
        b_eff = np.mean([p[4] for p in parts], axis=0)
        labels = list(self.art.labels.labels)
        if tags is None:
            chosen = [i for i in range(len(labels)) if probs[i] >= self.art.thresholds[i]]
        else:
            unknown = [t for t in tags if t not in labels]
            if unknown:
                raise ValueError(f"tags not in the model's label space: {', '.join(unknown)}")
            chosen = [labels.index(t) for t in tags]
        out = []
        for c in sorted(chosen, key=lambda i: (-probs[i], labels[i])):
            by_span: dict[tuple[int, int], list[float]] = {}
            for h, w_eff, spans, _, _ in parts:
                contrib = h * w_eff[c] / len(parts)
                for i in np.flatnonzero(h > 0):
                    by_span.setdefault(spans[i], []).append(float(contrib[i]))
            ranked = sorted(by_span.items(), key=lambda kv: (-sum(kv[1]), kv[0]))
            ngrams = [{"ngram": clean[s:e], "start": s, "end": e, "contribution": round(sum(v), 4), "filters": len(v)}
                      for (s, e), v in ranked[:top_k] if sum(v) > 0]
            out.append({"tag": labels[c], "probability": round(float(probs[c]), 4),
                        "threshold": round(float(self.art.thresholds[c]), 4),
                        "predicted": bool(probs[c] >= self.art.thresholds[c]),
                        "logit": round(float(logits[c]), 4), "bias": round(float(b_eff[c]), 4),
                        "text": clean, "members": len(parts), "ngrams": ngrams})
        return out


def explain(artifact: Artifact | str | Path, text: str, top_k: int = 5, tags: Sequence[str] | None = None) -> list[dict]:
    """The n-grams that drove each predicted tag of ``text`` (see the module docstring)."""
    return Explainer(artifact).explain(text, top_k=top_k, tags=tags)


def format_explanation(text: str, items: list[dict]) -> str:
    """Human-readable lines for the CLI."""
    lines = [f"text: {items[0]['text'] if items else text!r}"]
    if not items:
        lines.append("  (no tag predicted; --tag TAG explains any tag)")
    for it in items:
        mark = ">=" if it["predicted"] else "<"
        lines.append(f"{it['tag']}: p={it['probability']:.3f} {mark} threshold {it['threshold']:.2f}; "
                     f"{'mean member logit' if it.get('members', 1) > 1 else 'logit'} {it['logit']:+.2f} = n-grams {it['logit'] - it['bias']:+.2f} + bias {it['bias']:+.2f}")
        for g in it["ngrams"]:
            lines.append(f"  {g['contribution']:+7.3f}  {g['ngram']!r:<14} [{g['start']}:{g['end']}] "
                         f"{g['filters']} filter{'s' if g['filters'] != 1 else ''}")
    return "\n".join(lines)
