"""Unit tests for tagging.synth: the built-in synthetic corpus generator and writer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tagging import synth


def _good(df: pd.DataFrame) -> pd.DataFrame:
    """Good rows of a frame (all rows when there is no ``_bad_kind`` column)."""
    if "_bad_kind" not in df.columns:
        return df
    return df[df["_bad_kind"].isna()]


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return synth.generate_corpus(5000, seed=3)


@pytest.fixture(scope="module")
def bad_corpus() -> pd.DataFrame:
    return synth.generate_corpus(400, seed=5, bad_fraction=0.1)


# ---------------------------------------------------------------- generation


def test_tags_constant_sorted_and_sized():
    assert isinstance(synth.TAGS, tuple)
    assert list(synth.TAGS) == sorted(synth.TAGS)
    assert len(set(synth.TAGS)) == len(synth.TAGS)
    assert 12 <= len(synth.TAGS) <= 16


def test_deterministic_by_seed():
    a = synth.generate_corpus(500, seed=11)
    b = synth.generate_corpus(500, seed=11)
    c = synth.generate_corpus(500, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert a["text"].tolist() != c["text"].tolist()
    bad_a = synth.generate_corpus(500, seed=11, bad_fraction=0.05)
    bad_b = synth.generate_corpus(500, seed=11, bad_fraction=0.05)
    pd.testing.assert_frame_equal(bad_a, bad_b)


def test_columns_and_types(corpus):
    assert list(corpus.columns) == ["id", "text", "tags"]
    assert "_bad_kind" not in corpus.columns
    assert all(isinstance(v, str) for v in corpus["id"])
    assert corpus["id"].is_unique
    assert corpus["id"].iloc[0] == "doc-000001"
    assert all(isinstance(v, str) for v in corpus["text"])
    assert all(isinstance(v, list) and all(isinstance(t, str) for t in v)
               for v in corpus["tags"])


def test_every_doc_has_1_to_4_known_tags(corpus):
    known = set(synth.TAGS)
    counts = corpus["tags"].map(len)
    assert counts.min() >= 1
    assert counts.max() <= 4
    assert all(set(ts) <= known for ts in corpus["tags"])
    assert all(ts == sorted(ts) and len(set(ts)) == len(ts) for ts in corpus["tags"])
    # Every tag is used, and multi-label docs are common.
    used = {t for ts in corpus["tags"] for t in ts}
    assert used == known
    assert (counts >= 2).mean() > 0.3


def test_length_stats(corpus):
    lengths = corpus["text"].str.len()
    assert 100 <= lengths.mean() <= 170
    assert lengths.max() <= synth.MAX_CHARS == 450
    assert lengths.min() >= synth.MIN_CHARS == 20


def test_co_occurrence_object_detection_implies_cv(corpus):
    # Before label noise object-detection always implies computer-vision; the
    # ~5 % label noise can only break that rarely.
    od = corpus["tags"].map(lambda ts: "object-detection" in ts)
    with_cv = corpus["tags"].map(lambda ts: "computer-vision" in ts)
    assert od.sum() > 100
    assert (with_cv[od]).mean() > 0.9


def test_noise_is_present(corpus):
    texts = corpus["text"]
    # Case noise: some fully lower-cased documents.
    assert (texts == texts.str.lower()).mean() > 0.03
    # Not every pytorch doc mentions torch (missing keywords / label noise).
    pt = corpus["tags"].map(lambda ts: "pytorch" in ts)
    mentions = texts.str.lower().str.contains("torch", regex=False)
    assert 0.5 < mentions[pt].mean() < 0.99


@pytest.mark.parametrize("rows", [0, 1, 7])
def test_tiny_sizes(rows):
    df = synth.generate_corpus(rows, seed=0)
    assert len(df) == rows
    assert list(df.columns) == ["id", "text", "tags"]


def test_invalid_arguments():
    with pytest.raises(ValueError):
        synth.generate_corpus(-1)
    with pytest.raises(ValueError):
        synth.generate_corpus(10, bad_fraction=1.0)
    with pytest.raises(ValueError):
        synth.generate_corpus(10, bad_fraction=-0.1)


def test_generate_200k_rows_with_unique_ids():
    """At scale, ids stay unique (generation speed is not a unit-test assertion)."""
    df = synth.generate_corpus(200_000, seed=0)
    assert len(df) == 200_000
    assert df["id"].is_unique


# ---------------------------------------------------------------- bad rows


def test_bad_rows_every_kind(bad_corpus):
    df = bad_corpus
    assert "_bad_kind" in df.columns
    kinds = df["_bad_kind"].dropna()
    assert len(kinds) == 40
    assert set(kinds) == set(synth.BAD_KINDS)
    # Cycled: counts differ by at most one.
    vc = kinds.value_counts()
    assert vc.max() - vc.min() <= 1
    assert df["_bad_kind"].iloc[0] is None  # row 0 is never replaced

    for _, row in df[df["_bad_kind"].notna()].iterrows():
        kind = row["_bad_kind"]
        text, tags, id_ = row["text"], row["tags"], row["id"]
        if kind == "text_null":
            assert text is None
        elif kind == "text_empty":
            assert text == ""
        elif kind == "text_whitespace":
            assert isinstance(text, str) and text and not text.strip()
        elif kind == "text_not_string":
            assert isinstance(text, int)
        elif kind == "text_too_long":
            assert isinstance(text, str) and len(text) > 20_000
        elif kind == "id_null":
            assert id_ is None
        elif kind == "id_duplicate":
            assert isinstance(id_, str)
        elif kind == "tags_malformed":
            assert isinstance(tags, str)
            with pytest.raises(json.JSONDecodeError):
                json.loads(tags)
        elif kind == "tags_not_list":
            assert isinstance(tags, int) and not isinstance(tags, bool)
        else:
            pytest.fail(f"unknown kind {kind}")
        # Only the named field is corrupted.
        if not kind.startswith("text"):
            assert isinstance(text, str) and 0 < len(text) <= synth.MAX_CHARS
        if not kind.startswith("tags"):
            assert isinstance(tags, list) and tags
        if not kind.startswith("id"):
            assert isinstance(id_, str)


def test_duplicate_ids_copy_an_earlier_good_row(bad_corpus):
    df = bad_corpus
    good_ids = {}
    for pos, (id_, kind) in enumerate(zip(df["id"], df["_bad_kind"])):
        if kind is None:
            good_ids.setdefault(id_, pos)
        elif kind == "id_duplicate":
            assert id_ in good_ids and good_ids[id_] < pos
    # Apart from id_null / id_duplicate rows, ids are unique.
    ok = ~df["_bad_kind"].isin(["id_null", "id_duplicate"])
    assert df.loc[ok, "id"].is_unique


def test_good_rows_unchanged_by_bad_fraction(bad_corpus):
    clean = synth.generate_corpus(400, seed=5)
    good = _good(bad_corpus)
    pd.testing.assert_frame_equal(good[["id", "text", "tags"]], clean.loc[good.index])
    lengths = good["text"].str.len()
    assert lengths.max() <= 450


def test_each_kind_appears_once_threshold():
    n = len(synth.BAD_KINDS)
    df = synth.generate_corpus(n * 10, seed=1, bad_fraction=0.1)
    assert sorted(df["_bad_kind"].dropna()) == sorted(synth.BAD_KINDS)
    small = synth.generate_corpus(20, seed=1, bad_fraction=0.01)
    assert small["_bad_kind"].notna().sum() == 1  # at least one bad row


# ---------------------------------------------------------------- writing


def _assert_good_rows_match(src: pd.DataFrame, ids, texts, tags) -> None:
    good = _good(src)
    pos = good.index
    got_ids = [ids[i] for i in pos]
    got_texts = [texts[i] for i in pos]
    got_tags = [tags[i] for i in pos]
    assert got_ids == good["id"].tolist()
    assert got_texts == good["text"].tolist()
    assert got_tags == good["tags"].tolist()


@pytest.mark.parametrize("bad", [False, True])
def test_roundtrip_parquet(tmp_path, corpus, bad_corpus, bad):
    df = bad_corpus if bad else corpus.head(300)
    path = tmp_path / "nested" / "dir" / "corpus.parquet"
    synth.write_corpus(df, str(path))
    table = pq.read_table(path)
    assert table.num_rows == len(df)
    assert table.column_names == list(df.columns)
    # to_pylist keeps nulls as None (pandas 3 would turn them into NaN).
    col = {name: table.column(name).to_pylist() for name in table.column_names}
    tags = col["tags"]
    texts = col["text"]
    if bad:
        # Mixed tags are stored as strings; good rows hold JSON lists.
        assert str(table.schema.field("tags").type) == "string"
        kinds = col["_bad_kind"]
        parsed = [json.loads(t) if k is None else t for t, k in zip(tags, kinds)]
        for t, k in zip(texts, kinds):
            if k == "text_not_string":
                assert t == "12345"
            elif k == "text_null":
                assert t is None
        assert kinds == df["_bad_kind"].tolist()
    else:
        assert str(table.schema.field("tags").type) == "list<element: string>"
        parsed = [list(t) for t in tags]
    _assert_good_rows_match(df, col["id"], texts, parsed)
    # pandas can read it too.
    assert len(pd.read_parquet(path)) == len(df)


@pytest.mark.parametrize("bad", [False, True])
def test_roundtrip_csv(tmp_path, corpus, bad_corpus, bad):
    df = bad_corpus if bad else corpus.head(300)
    path = tmp_path / "corpus.csv"
    synth.write_corpus(df, str(path))
    out = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(out) == len(df)
    assert list(out.columns) == list(df.columns)
    raw_tags = out["tags"].tolist()
    assert raw_tags[0].startswith('["')
    parsed = []
    for t in raw_tags:
        try:
            parsed.append(json.loads(t))
        except json.JSONDecodeError:
            parsed.append(t)
    _assert_good_rows_match(df, out["id"].tolist(), out["text"].tolist(), parsed)


@pytest.mark.parametrize("bad", [False, True])
def test_roundtrip_json_array(tmp_path, corpus, bad_corpus, bad):
    df = bad_corpus if bad else corpus.head(300)
    path = tmp_path / "corpus.json"
    synth.write_corpus(df, str(path))
    records = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(records, list) and len(records) == len(df)
    out = pd.read_json(path, orient="records", dtype=False)
    assert len(out) == len(df)
    # JSON keeps every value exactly, bad ones included.
    for rec, (_, row) in zip(records, df.iterrows()):
        for c in df.columns:
            assert rec[c] == row[c]


def test_roundtrip_jsonl_clean(tmp_path, corpus):
    df = corpus.head(300)
    path = tmp_path / "corpus.jsonl"
    synth.write_corpus(df, str(path))
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(df)
    out = pd.read_json(path, lines=True, dtype=False)
    assert out["id"].tolist() == df["id"].tolist()
    assert out["text"].tolist() == df["text"].tolist()
    assert out["tags"].tolist() == df["tags"].tolist()


def test_roundtrip_jsonl_with_raw_corruptions(tmp_path, bad_corpus):
    df = bad_corpus
    path = tmp_path / "corpus.jsonl"
    synth.write_corpus(df, str(path))
    lines = path.read_bytes().splitlines()
    assert synth.JSONL_EXTRA_RAW_LINES == 2
    assert len(lines) == len(df) + synth.JSONL_EXTRA_RAW_LINES
    records = [json.loads(line.decode("utf-8")) for line in lines[: len(df)]]
    for rec, (_, row) in zip(records, df.iterrows()):
        for c in df.columns:
            assert rec[c] == row[c]
    # The extra lines are rejected: malformed JSON, then invalid UTF-8.
    broken, badutf8 = lines[len(df):]
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.decode("utf-8"))
    with pytest.raises(UnicodeDecodeError):
        badutf8.decode("utf-8")
    # Opting out writes exactly one line per row.
    path2 = tmp_path / "plain.jsonl"
    synth.write_corpus(df, str(path2), raw_corruptions=False)
    assert len(path2.read_bytes().splitlines()) == len(df)


def test_explicit_fmt_and_uri(tmp_path, corpus):
    df = corpus.head(50)
    # Explicit format overrides the (missing) extension.
    path = tmp_path / "data.bin"
    synth.write_corpus(df, str(path), fmt="jsonl")
    assert len(path.read_bytes().splitlines()) == 50
    # pyarrow filesystem URI (file://), parent dirs created.
    target = tmp_path / "uri" / "sub" / "corpus.parquet"
    synth.write_corpus(df, target.as_uri())
    assert pq.read_table(target).num_rows == 50
    with pytest.raises(ValueError):
        synth.write_corpus(df, str(tmp_path / "corpus.txt"))
    with pytest.raises(ValueError):
        synth.write_corpus(df, str(tmp_path / "x.csv"), fmt="xml")


# ---------------------------------------------------------------- learnability
