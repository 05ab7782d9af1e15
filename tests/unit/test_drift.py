"""Drift statistics (tagging.drift), the nights table and the tracking helpers that need no MLflow store."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from tagging.drift import (PSI_MIN, Z_MIN, compare_rates, night_drift, psi_binary, reference_profile, share_check,
                           z_two_proportions)


@pytest.mark.parametrize("p, q, psi", [(0.3, 0.1, 0.2 * math.log(3) - 0.2 * math.log(0.7 / 0.9)), (0.1, 0.1, 0.0), (0.12, 0.1, 0.0041)])
def test_psi_of_a_yes_no_split(p, q, psi):
    assert psi_binary(p, q) == pytest.approx(psi, abs=1e-4)
    assert psi_binary(p, q) == pytest.approx(psi_binary(q, p), abs=0.02)  # nearly symmetric
    assert math.isfinite(psi_binary(0.2, 0.0))  # a tag never seen before: clipped, finite


def test_two_proportion_z():
    # 30/100 vs 10/100: pooled 0.2, se = sqrt(0.2 * 0.8 * 0.02) = 0.0566
    assert z_two_proportions(30, 100, 10, 100) == pytest.approx(0.2 / math.sqrt(0.2 * 0.8 * 0.02))
    assert z_two_proportions(0, 100, 0, 50) == 0.0 and z_two_proportions(1, 0, 1, 10) == 0.0


def _synth_rates(rows: int, seed: int, boost: str | None = None):
    """Tag counts of a generated corpus (the core's labels), optionally with one tag's rows repeated to triple its rate."""
    from tagging.synth import generate_corpus

    df = generate_corpus(rows, seed=seed)
    tags = [set(t) for t in df["tags"]]
    if boost:
        hits = [t for t in tags if boost in t]
        p = len(hits) / len(tags)
        extra = int(round(2 * p * len(tags) / (1 - 2 * p)))
        tags += [hits[i % len(hits)] for i in range(extra)]
    counts: dict[str, int] = {}
    for t in tags:
        for tag in t:
            counts[tag] = counts.get(tag, 0) + 1
    return counts, len(tags)


def test_a_night_with_one_tag_tripled_is_flagged_and_a_night_like_training_is_not():
    ref_counts, ref_rows = _synth_rates(1500, seed=0)
    rates = {t: c / ref_rows for t, c in ref_counts.items()}
    tag = min((t for t, r in rates.items() if 0.04 <= r <= 0.12), key=lambda t: abs(rates[t] - 0.08))
    like = compare_rates(*_synth_rates(800, seed=5), rates, ref_rows)
    assert like["flagged"] == [], {t: v for t, v in like["tags"].items() if v["psi"] > 0.05}
    tripled = compare_rates(*_synth_rates(800, seed=5, boost=tag), rates, ref_rows)
    assert tripled["flagged"] == [tag]
    info = tripled["tags"][tag]
    assert info["rate"] == pytest.approx(3 * info["reference"], rel=0.35) and abs(info["z"]) >= Z_MIN and info["psi"] >= PSI_MIN
    # a significant but small change on a big night is not flagged (PSI), nor a large one on a tiny night (z)
    assert not compare_rates({"a": 5_300}, 50_000, {"a": 0.10}, 50_000)["tags"]["a"]["flagged"]
    assert not compare_rates({"a": 3}, 10, {"a": 0.10}, 30)["tags"]["a"]["flagged"]


def test_night_drift_sections_and_shares():
    reference = {"source": "test split", "rows": 200, "rates": {"a": 0.1, "b": 0.5}, "truncated_share": 0.02, "oov_share": 0.0}
    previous = [{"date": "2026-01-01", "rows_scored": 1000, "tags": {"a": {"count": 100}, "b": {"count": 500}}}]
    d = night_drift({"a": 300, "b": 500}, 1000, truncated=100, chars=10_000, oov_chars=50, reference=reference, previous=previous)
    assert d["vs_training"]["flagged"] == ["a"] and d["vs_previous"]["flagged"] == ["a"] and d["vs_previous"]["dates"] == ["2026-01-01"]
    assert d["truncated"] == {"share": 0.1, "reference": 0.02, "limit": 0.04, "flagged": True}
    assert d["oov_chars"]["share"] == 0.005 and not d["oov_chars"]["flagged"]  # under the 1% floor
    assert d["flagged"] == ["tag:a", "truncated"]
    first = night_drift({"a": 10}, 100, 0, 0, 0, reference=None)
    assert first["vs_training"] is None and first["vs_previous"] is None and first["flagged"] == []
    assert share_check(3, 100, None)["flagged"] and not share_check(1, 100, None)["flagged"]


def test_reference_profile_counts_truncation_and_unknown_characters():
    from tagging.vocab import CharVocab

    vocab = CharVocab.fit(["abc abc"])
    ref = reference_profile(("x", "y"), np.array([[True, False], [True, True]]), ["abc", "abz" + "a" * 10], vocab, max_length=8)
    assert ref["rows"] == 2 and ref["rates"] == {"x": 1.0, "y": 0.5} and ref["truncated_share"] == 0.5
    assert ref["oov_share"] == pytest.approx(1 / 11, abs=1e-6)  # 'z' of 3 + 8 characters read


def test_nights_table_side_by_side():
    from tagging.scores import nights_table

    def night(date, a, flagged):
        return {"date": date, "model": {"version": "models:/m/1"}, "rows_read": 11, "rows_scored": 10, "rows_rejected": 1,
                "rejects_by_reason": {"empty_text": 1}, "throughput_docs_per_s": 1234.5, "tags": {"a": {"rate": a}},
                "drift": {"vs_training": {"flagged": ["a"] if flagged else []}, "vs_previous": None, "flagged": ["tag:a"] if flagged else [],
                          "truncated": {"share": 0.0, "flagged": False}, "oov_chars": {"share": 0.02, "flagged": True}}}

    table = nights_table([night("2026-01-01", 0.1, False), night("2026-01-02", 0.3, True)]).splitlines()
    assert table[0] == "| | 2026-01-01 | 2026-01-02 |"
    assert "| tag a | 10.00% | 30.00% ! |" in table and "| rejected: empty_text | 1 | 1 |" in table
    assert "| chars out of vocabulary | 2.00% ! | 2.00% ! |" in table and "| drift flagged | none | tag:a |" in table


def test_tracking_helpers_without_a_store(monkeypatch, tmp_path):
    from tagging.tracking import RegistryError, Run, absolute_uri, flatten, metric_key, parse_model_uri, start_run, tracking_uri

    assert parse_model_uri("models:/tagger@production") == ("tagger", "production", None)
    assert parse_model_uri("models:/tagger/3") == ("tagger", None, "3")
    with pytest.raises(RegistryError):
        parse_model_uri("models:/tagger")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None) is None and tracking_uri("sqlite:///m.db") == f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking_uri(None) == "http://mlflow:5000" and absolute_uri("sqlite:////abs.db") == "sqlite:////abs.db"
    assert flatten({"a": {"b": 1}, "c": [1, 2]}) == {"a.b": 1, "c": [1, 2]} and metric_key("rate/c++") == "rate/c__"
    run = start_run("train", None, "x")  # no URI: a run that does nothing
    assert isinstance(run, Run) and not run.active
    run.log_params({"a": 1}), run.log_metrics({"b": 2.0}), run.child("m").end()
    code = ("import sys; from tagging.tracking import start_run; r = start_run('train', None, 'x'); r.log_metrics({'a': 1}); "
            "assert 'mlflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
