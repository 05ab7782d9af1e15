"""Drift of a scored night: tag rates against the training reference and the previous nights (Ray-free).

Each tag's predicted rate tonight (rows tagged / rows scored) is compared with a reference rate
by two statistics:

- a **two-proportion z-test** (pooled): is the difference more than sampling noise? ``|z| >= 3``
  (two-sided p < 0.0027), so about one tag in 370 is flagged by chance alone;
- the **population stability index** of the tag's yes/no split,
  ``PSI = (p - q) ln(p / q) + (q - p) ln((1 - p) / (1 - q))``: is the difference large?
  ``PSI >= 0.1`` (the usual "moderate shift"; 0.25 is "major"). Rates are clipped to
  [1e-4, 1 - 1e-4] so a tag that was never seen has a finite PSI.

A tag is **flagged when both hold**: the z-test alone flags trivial changes on big nights (50k
rows make 0.5 points significant), PSI alone flags noise on small ones. A tag whose rate triples
from 10% (30%: PSI 0.27, z about 5 against a few hundred rows) is flagged; 10% -> 12% is not.

References: the training reference (``reference_profile``, stored in the artifact's manifest as
``drift_reference``: the model's predicted rates on its own test split, which carry the same
thresholds as tonight's, with the test split's share of truncated texts and of characters
outside the vocabulary), and the previous nights' rates pooled (``previous``: up to
``PREVIOUS_NIGHTS`` finished dates before this one, in the same output).

Input quality: the share of texts longer than the model reads (truncated) and of characters read
that are outside the vocabulary (UNK) are flagged when over ``max(SHARE_FLOOR, SHARE_RATIO x
the test split's share)``: twice what the model saw at training time, and at least 1%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Z_MIN = 3.0
"""|z| of the two-proportion z-test at or above which a change is significant."""
PSI_MIN = 0.1
"""PSI at or above which a change is large (0.1 moderate, 0.25 major)."""
SHARE_FLOOR = 0.01
"""Truncated texts / out-of-vocabulary characters: never flagged at or under this share."""
SHARE_RATIO = 2.0
"""... and flagged over this multiple of the test split's share."""
PREVIOUS_NIGHTS = 7
"""Previous finished nights pooled as the second reference."""
_CLIP = 1e-4


def z_two_proportions(k1: int, n1: int, k2: int, n2: int) -> float:
    """Pooled two-proportion z statistic of k1/n1 against k2/n2 (0 when undefined)."""
    if n1 <= 0 or n2 <= 0:
        return 0.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 0.0 if se == 0 else (k1 / n1 - k2 / n2) / se


def psi_binary(p: float, q: float) -> float:
    """Population stability index of a yes/no split with rate ``p`` against reference rate ``q``."""
    p, q = (min(max(x, _CLIP), 1 - _CLIP) for x in (p, q))
    return (p - q) * math.log(p / q) + (q - p) * math.log((1 - p) / (1 - q))


def compare_rates(counts: Mapping[str, int], rows: int, ref_rates: Mapping[str, float], ref_rows: int) -> dict:
    """Each tag's rate against the reference: {tags: {tag: {rate, reference, z, psi, flagged}}, flagged: [tags]}.

    ``counts``: rows tagged with each tag tonight, of ``rows``; ``ref_rates`` over ``ref_rows``.
    Tags are in sorted order; a tag missing from either side counts as 0 there."""
    tags = {}
    for tag in sorted(set(counts) | set(ref_rates)):
        k, q = int(counts.get(tag, 0)), float(ref_rates.get(tag, 0.0))
        rate = k / rows if rows else 0.0
        z = z_two_proportions(k, rows, round(q * ref_rows), ref_rows)
        psi = psi_binary(rate, q)
        tags[tag] = {"rate": round(rate, 6), "reference": round(q, 6), "z": round(z, 3), "psi": round(psi, 4),
                     "flagged": bool(abs(z) >= Z_MIN and psi >= PSI_MIN)}
    return {"rows": rows, "reference_rows": ref_rows, "tags": tags, "flagged": [t for t, v in tags.items() if v["flagged"]]}


def share_check(count: int, total: int, reference: float | None) -> dict:
    """A share (truncated texts, OOV characters) flagged over max(SHARE_FLOOR, SHARE_RATIO x reference)."""
    share = count / total if total else 0.0
    limit = max(SHARE_FLOOR, SHARE_RATIO * (reference or 0.0))
    return {"share": round(share, 6), "reference": None if reference is None else round(reference, 6),
            "limit": round(limit, 6), "flagged": bool(share > limit)}


def reference_profile(labels: Sequence[str], predicted: np.ndarray, texts: Sequence[str], vocab, max_length: int) -> dict:
    """The training reference stored in the manifest: predicted rates (``predicted``: bool [rows,
    labels], thresholds applied) on the test split, with its truncated and OOV shares."""
    from tagging.vocab import PAD_ID, UNK_ID

    ids, lengths = vocab.encode(list(texts), max_length)
    rows = len(texts)
    read = int(np.count_nonzero(ids != PAD_ID))
    rates = np.asarray(predicted, dtype=np.float64).mean(0) if rows else np.zeros(len(labels))
    return {"source": "the model's predictions on its test split", "rows": rows,
            "rates": {t: round(float(r), 6) for t, r in zip(labels, rates)},
            "truncated_share": round(float((lengths > max_length).mean()) if rows else 0.0, 6),
            "oov_share": round(int(np.count_nonzero(ids == UNK_ID)) / read, 6) if read else 0.0}


def night_drift(counts: Mapping[str, int], rows: int, truncated: int, chars: int, oov_chars: int,
                reference: dict | None, previous: Sequence[dict] = ()) -> dict:
    """The ``drift`` section of a night's summary.json.

    ``reference``: the artifact's ``drift_reference`` (None for an artifact from before it: that
    comparison is left out); ``previous``: summaries of earlier nights (their ``tags`` counts and
    ``rows_scored``), pooled."""
    out: dict = {"method": f"two-proportion z-test and PSI per tag; flagged when |z| >= {Z_MIN:g} and PSI >= {PSI_MIN:g}",
                 "thresholds": {"z": Z_MIN, "psi": PSI_MIN, "share_floor": SHARE_FLOOR, "share_ratio": SHARE_RATIO}}
    if reference:
        out["vs_training"] = {"reference": reference.get("source"), **compare_rates(counts, rows, reference["rates"], int(reference["rows"]))}
    else:
        out["vs_training"] = None
    prev_rows = sum(int(s.get("rows_scored", 0)) for s in previous)
    if prev_rows:
        pooled: dict[str, int] = {}
        for s in previous:
            for tag, v in s.get("tags", {}).items():
                pooled[tag] = pooled.get(tag, 0) + int(v.get("count", 0))
        out["vs_previous"] = {"dates": [s.get("date") for s in previous],
                              **compare_rates(counts, rows, {t: c / prev_rows for t, c in pooled.items()}, prev_rows)}
    else:
        out["vs_previous"] = None
    ref = reference or {}
    out["truncated"] = share_check(truncated, rows, ref.get("truncated_share"))
    out["oov_chars"] = share_check(oov_chars, chars, ref.get("oov_share"))
    out["flagged"] = sorted({f"tag:{t}" for part in ("vs_training", "vs_previous") if out[part] for t in out[part]["flagged"]}
                            | {name for name in ("truncated", "oov_chars") if out[name]["flagged"]})
    return out
