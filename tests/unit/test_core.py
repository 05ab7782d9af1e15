"""Unit tests of the Ray-free core: pure functions, seconds, no Ray."""

from __future__ import annotations

import dataclasses
import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tagging.config import ConfigError, DataConfig, ModelConfig, TrainConfig, load_config
from tagging.dataset import prepare, summary_line
from tagging.labels import LabelSpace, TagIndex, TagParseError, labels_from_frequency, parse_tags, read_labels_file
from tagging.metrics import evaluate
from tagging.model import CharCNN
from tagging.readers import (BAD_TAGS, DUPLICATE_ID, EMPTY_TEXT, INVALID_UTF8, MALFORMED, MISSING_ID, NON_STRING_TEXT,
                             NULL_TEXT, TEXT_TOO_LONG, InputError, Row, check_columns, plan_units, read_unit,
                             reason_kind)
from tagging.split import split_ids
from tagging.text import normalize, stopwords
from tagging.thresholds import apply_thresholds, fit_thresholds
from tagging.training import EarlyStopping, make_loss, train_epoch, training_batches
from tagging.vocab import PAD_ID, UNK_ID, CharVocab


# ------------------------------------------------------------------ text, labels, vocabulary

@pytest.mark.parametrize("raw, expected", [
    ("  Hello   WORLD\n", "hello world"),
    ("ＰｙＴｏｒｃｈ", "pytorch"),  # NFKC folds full-width letters
    ("a\tb\u00a0c", "a b c"),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_normalize_collapses_every_whitespace_the_regex_did():
    # normalize collapsed runs of regex \s before it used str.split(): the same set of characters,
    # so artifacts trained before the change score the same texts the same
    import re
    import sys

    spaces = "".join(re.findall(r"\s", "".join(map(chr, range(sys.maxunicode + 1)))))
    assert len(spaces) == 29 and all(c.isspace() for c in spaces)
    raw = spaces + "x" + spaces + "y\u200bz" + spaces  # zero-width space is not whitespace to either
    assert normalize(raw, lowercase=False) == re.sub(r"\s+", " ", raw).strip() == "x y\u200bz"


def test_stopwords_shipped_and_used():
    assert "the" in stopwords() and len(stopwords()) > 100
    assert normalize("The model, and the data!", remove_stopwords=True) == "model data"


@pytest.mark.parametrize("value, expected", [
    (["NLP", " pytorch "], ["nlp", "pytorch"]),
    ('["a", "b"]', ["a", "b"]),
    ("a, b,c", ["a", "b", "c"]),
    ("", []),
    (np.array(["x", "y"], dtype=object), ["x", "y"]),
])
def test_parse_tags(value, expected):
    assert parse_tags(value) == expected


@pytest.mark.parametrize("value", [None, 7, "[unclosed", '{"a": 1}', [1, 2]])
def test_parse_tags_rejects(value):
    with pytest.raises(TagParseError):
        parse_tags(value)


def test_tag_index_aliases_and_parents():
    index = TagIndex.from_records([
        {"tag": "object-detection", "aliases": ["yolo"], "parents": ["computer-vision"]},
        {"tag": "computer-vision", "aliases": ["cv"], "parents": []},
    ])
    assert index.canonical(["yolo", "cv"]) == ["computer-vision", "object-detection"]
    assert index.canonical(["yolo"]) == ["object-detection"]
    assert index.canonical(["yolo"], expand_parents=True) == ["computer-vision", "object-detection"]


def test_label_space_sorted_and_encodes():
    assert read_labels_file("b\n# c\na\n\nb\n") == ["a", "b"]
    assert labels_from_frequency([("a", "b"), ("a",), ("c",)], 2) == ["a"]
    space = LabelSpace(("a", "b"))
    assert space.encode([["b", "zzz"], []]).tolist() == [[0, 1], [0, 0]]
    with pytest.raises(ValueError):
        LabelSpace(("b", "a"))


def test_vocab_order_encode_truncate_and_pickle():
    vocab = CharVocab.fit(["abb", "bc"])
    assert vocab.chars == ("b", "a", "c")  # by count, then char
    ids, lengths = vocab.encode(["ab", "z", "abcab"], max_length=4)
    assert ids.shape == (3, 4)
    assert ids[0].tolist() == [3, 2, PAD_ID, PAD_ID]
    assert ids[1].tolist() == [UNK_ID, 0, 0, 0]
    assert lengths.tolist() == [2, 1, 5]  # 5 > 4: truncated, and the caller can count it
    clone = pickle.loads(pickle.dumps(vocab))
    assert clone == vocab and len(pickle.dumps(vocab)) < 1000
    assert CharVocab.from_json(json.loads(json.dumps(vocab.to_json()))) == vocab


# ------------------------------------------------------------------ config

def test_config_defaults_and_precedence(tmp_path):
    cfg = TrainConfig()
    assert cfg.workers == 2 and cfg.data.val_fraction > 0
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  dropout: 0.2\n  num_filters: 8\nbatch_size: 16\n")
    cfg = load_config(path, {"model.num_filters": 12, "model.filter_widths": "1,3"})
    assert (cfg.model.dropout, cfg.model.num_filters, cfg.batch_size, cfg.model.filter_widths) == (0.2, 12, 16, (1, 3))


@pytest.mark.parametrize("overrides, field", [
    ({"model.dropuot": 0.1}, "dropuot"),
    ({"model.dropout": 1.5}, "model.dropout"),
    ({"imbalance": "magic"}, "imbalance"),
    ({"data.val_fraction": 0.0}, "data.val_fraction"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        load_config(None, overrides)


@pytest.mark.parametrize("text, message", [
    ("learning_rate: fast\n", "learning_rate: expected a number, got 'fast'"),
    ("max_epochs: 3.7\n", "max_epochs: expected an integer, got 3.7"),
    ("model:\n  dropuot: 0.1\n", "unknown config field 'model.dropuot'; did you mean model.dropout?"),
    ("model:\n  dropout: high\n", "model.dropout: expected a number, got 'high'"),
    ("use_gpu: maybe\n", "use_gpu: expected true or false, got 'maybe'"),
    ("data:\n  labels_file: [a, b]\n", "data.labels_file: expected a string"),
    ("model: 3\n", "model: expected a mapping of fields, got 3"),
    ("imbalance: magic\n", "imbalance: expected one of pos_weight, inverse_count, none; got 'magic'"),
    ("lr_schedule: linear\n", "lr_schedule: expected one of cosine, plateau"),
    ("model:\n  filter_widths: [1, two]\n", "model.filter_widths: expected an integer, got 'two'"),
    ("model:\n  dropout: 1.5\n", r"model.dropout: must be in \[0, 1\), got 1.5"),
    ("[1, 2]\n", "must hold a mapping"),
    ("model: {dropout: 0.1\n", "config file .*c.yaml: "),
])
def test_a_config_file_mistake_names_the_field(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_config_values_are_coerced_by_type(tmp_path):
    path = tmp_path / "c.yaml"  # PyYAML reads 1e-3 (no dot) as a string
    path.write_text("learning_rate: 1e-3\nmax_epochs: 4.0\nuse_gpu: 'no'\ncache_shards: off\nweight_decay: 0\n"
                    "model:\n  filter_widths: [2, 3]\n  batch_norm: 'true'\n")
    cfg = load_config(path)
    assert (cfg.learning_rate, cfg.max_epochs, cfg.use_gpu, cfg.cache_shards, cfg.weight_decay) == (0.001, 4, False, False, 0.0)
    assert type(cfg.max_epochs) is int and type(cfg.weight_decay) is float
    assert cfg.model.filter_widths == (2, 3) and cfg.model.batch_norm is True
    # strings (--set values) become the field's type; "none" resets an optional field
    cfg = load_config(None, {"max_epochs": "5", "model.filter_widths": "1,2,3", "use_gpu": "yes", "data.labels_file": "none",
                             "alias_examples": "none", "model.dropout": "0.25"})
    assert (cfg.max_epochs, cfg.model.filter_widths, cfg.use_gpu, cfg.data.labels_file, cfg.alias_examples, cfg.model.dropout) == \
        (5, (1, 2, 3), True, None, False, 0.25)
    # direct construction is checked too (and dataclasses.replace)
    with pytest.raises(ConfigError, match="dropout: expected a number"):
        ModelConfig(dropout="x")
    with pytest.raises(ConfigError, match="max_epochs: expected an integer"):
        dataclasses.replace(TrainConfig(), max_epochs=2.5)
    assert ModelConfig(filter_widths=[3, 4]).filter_widths == (3, 4)


def test_every_config_field_is_documented_with_its_type():
    from tagging.config import check_override, describe, field_type

    rows = describe()
    assert len(rows) == len({r[0] for r in rows}) > 40
    assert all(doc for *_, doc in rows), [r[0] for r in rows if not r[3]]
    by_name = {name: (kind, value) for name, kind, value, _ in rows}
    assert by_name["model.dropout"] == ("float", 0.1) and by_name["imbalance"][0] == "pos_weight | inverse_count | none"
    assert by_name["model.filter_widths"][0] == "list of int" and by_name["data.labels_file"][0] == "str | null"
    assert field_type("model.max_length") is int and check_override("max_epochs", "7") == 7
    with pytest.raises(ConfigError, match="model is a section"):
        check_override("model", "x")
    with pytest.raises(ConfigError, match="unknown config field 'max_epoch'; did you mean max_epochs"):
        field_type("max_epoch")


def test_absolute_paths_resolve_local_input_files_only(tmp_path, monkeypatch):
    from tagging.config import absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = absolute_paths(load_config(None, {"data.labels_file": "labels.txt", "data.tags_file": "s3://bucket/tags.json"}))
    assert cfg.data.labels_file == str(tmp_path / "labels.txt")
    assert cfg.data.tags_file == "s3://bucket/tags.json"
    assert absolute_paths(TrainConfig()) == TrainConfig()  # nothing to resolve


# ------------------------------------------------------------------ readers and accounting

def _write_lines(path, lines):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def test_reader_rejects_every_kind_with_source(tmp_path):
    cfg = DataConfig(max_text_chars=100)
    path = _write_lines(tmp_path / "in.jsonl", [
        b'{"id": 1, "text": "good text", "tags": ["a"]}',
        b'{"id": 2, "text": null, "tags": ["a"]}',
        b'{"id": 3, "text": "   ", "tags": ["a"]}',
        b'{"id": 4, "text": 42, "tags": ["a"]}',
        b'{"id": 5, "text": "' + b"x" * 101 + b'", "tags": ["a"]}',
        b'{"text": "no id", "tags": ["a"]}',
        b'{"id": 7, "text": "bad tags", "tags": "[oops"}',
        b'{"id": 8, "text": "unterminated',
        b'{"id": 9, "text": "caf\xe9"}',
    ])
    [unit] = plan_units([path])
    items = list(read_unit(unit, cfg, need_tags=True))
    assert isinstance(items[0], Row) and items[0].text == "good text" and items[0].id == "1"
    reasons = [reason_kind(i.reason) for i in items[1:]]
    assert reasons == [NULL_TEXT, EMPTY_TEXT, NON_STRING_TEXT, TEXT_TOO_LONG, MISSING_ID, BAD_TAGS, MALFORMED, INVALID_UTF8]
    assert items[8].source.endswith("in.jsonl:9")


def test_reader_formats_and_title_description(tmp_path):
    df = pd.DataFrame({"id": [1, 2], "title": ["Deep Nets", "Graphs"], "description": ["for images", None],
                       "tags": ['["cv"]', "gnn,graphs"]})
    df.to_csv(tmp_path / "a.csv", index=False)
    df.assign(tags=[["cv"], ["gnn", "graphs"]]).to_parquet(tmp_path / "b.parquet")
    (tmp_path / "c.json").write_text(df.assign(tags=[["cv"], ["gnn"]]).to_json(orient="records"))
    for name in ("a.csv", "b.parquet", "c.json"):
        [unit] = plan_units([str(tmp_path / name)])
        rows = list(read_unit(unit, DataConfig(), need_tags=True))
        assert [r.text for r in rows] == ["deep nets for images", "graphs"], name
        assert rows[1].tags[0] == "gnn"
    assert len(plan_units([str(tmp_path)])) == 3  # a directory
    assert len(plan_units([str(tmp_path / "*.csv")])) == 1  # a glob


def test_missing_column_fails_before_work_naming_file_and_column(tmp_path):
    pd.DataFrame({"id": [1], "text": ["x"]}).to_parquet(tmp_path / "no_tags.parquet")
    units = plan_units([str(tmp_path / "no_tags.parquet")])
    with pytest.raises(InputError, match=r"no_tags\.parquet.*'tags'"):
        check_columns(units, DataConfig(), need_tags=True)
    check_columns(units, DataConfig(), need_tags=False)  # scoring needs no tags
    with pytest.raises(InputError, match="no such file"):
        plan_units([str(tmp_path / "absent.csv")])


def _rows(ids, tags, texts=None):
    n = len(ids)
    return pd.DataFrame({"id": ids, "text": texts or [f"text {i}" for i in ids], "tags": tags,
                         "source": [f"f:{i}" for i in range(n)], "length": [6] * n, "unit": ["00000-00000"] * n,
                         "seq": list(range(n))})


def test_prepare_accounts_for_every_row_and_is_order_independent():
    ids = [f"r{i:03d}" for i in range(60)]
    tags = [("a",) if i % 2 else ("b", "a") for i in range(60)]
    tags[5] = ("zzz",)  # no tag in the label space
    rows = _rows(ids + ["r001"], tags + [("a",)])  # one duplicate id
    rejects = pd.DataFrame([{"id": None, "reason": MISSING_ID, "source": "f:99", "raw": "{}"}])
    cfg = DataConfig(min_tag_freq=3)
    p = prepare(rows, rejects, cfg, seed=3)
    c = p.counts
    assert (c["rows_read"], c["rows_used"], c["rows_rejected"], c["rows_unlabeled"]) == (62, 59, 2, 1)
    assert c["rejects_by_reason"] == {DUPLICATE_ID: 1, MISSING_ID: 1}
    assert c["train"] + c["val"] + c["test"] == 59
    assert "rows read 62 = used 59" in summary_line(c)
    shuffled = prepare(rows.iloc[::-1].assign(seq=lambda d: d["seq"]), rejects, cfg, seed=3)
    assert dict(zip(p.rows.id, p.rows.split)) == dict(zip(shuffled.rows.id, shuffled.rows.split))


def test_split_is_deterministic_and_stratified():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < [0.5, 0.2, 0.1, 0.05]).astype(int)
    y[y.sum(1) == 0, 0] = 1
    ids = [f"id{i}" for i in range(300)]
    a = split_ids(ids, y, 0.15, 0.15, seed=1)
    assert a == split_ids(ids, y, 0.15, 0.15, seed=1)
    test_rows = [i for i, s in enumerate(a.values()) if s == "test"]
    assert 35 <= sum(1 for s in a.values() if s == "test") <= 55
    for j in range(4):  # every class keeps roughly its share in the test split
        share = y[[int(k[2:]) for k, s in a.items() if s == "test"], j].mean()
        assert abs(share - y[:, j].mean()) < 0.05
    assert test_rows  # noqa


# ------------------------------------------------------------------ model

def _model(num_labels=3):
    torch.manual_seed(0)
    return CharCNN(vocab_size=30, num_labels=num_labels,
                   cfg=ModelConfig(embedding_dim=8, num_filters=6, filter_widths=(1, 2, 3, 4, 7), hidden_dim=8)).eval()


def test_padding_does_not_change_scores():
    model = _model()
    text = torch.randint(2, 30, (1, 23))
    alone = torch.sigmoid(model(text))
    padded = torch.zeros((1, 512), dtype=torch.int64)
    padded[0, :23] = text
    batch = torch.zeros((3, 40), dtype=torch.int64)
    batch[0, :23] = text
    batch[1, :40] = torch.randint(2, 30, (40,))
    batch[2, :31] = torch.randint(2, 30, (31,))
    assert torch.allclose(alone, torch.sigmoid(model(padded)), atol=1e-6)
    assert torch.allclose(alone, torch.sigmoid(model(batch))[:1], atol=1e-6)


def test_batches_are_padded_to_few_shapes_without_changing_scores():
    from tagging.batching import SHAPE_MULTIPLE, encode_batch, predict_texts

    vocab = CharVocab(tuple("abcdefghijklmnopqrstuvwxyz "))
    assert encode_batch(["abc", "a" * 33], vocab, 512).shape == (2, 2 * SHAPE_MULTIPLE)
    assert encode_batch(["a" * 600], vocab, 500).shape == (1, 500)  # never past max_length
    assert encode_batch(["abc"], vocab, 512, multiple=1).shape == (1, 3)
    model = CharCNN(vocab.size, 3, ModelConfig(embedding_dim=8, num_filters=6, filter_widths=(1, 2, 5), hidden_dim=8)).eval()
    texts = ["short", "a bit longer text here", "x" * 70]
    with torch.no_grad():
        alone = np.concatenate([torch.sigmoid(model(encode_batch([t], vocab, 512, multiple=1))).numpy() for t in texts])
    assert np.allclose(predict_texts(model, texts, vocab, 512), alone, atol=1e-6)


def test_unmasked_pool_would_fail_the_padding_test():
    """Guards the test above: without the mask, padding changes the scores."""
    model = _model()
    model.embedding.weight.data[0] = 1.0  # PAD no longer embeds to zero -> padded positions fire
    text = torch.randint(2, 30, (1, 10))
    padded = torch.zeros((1, 100), dtype=torch.int64)
    padded[0, :10] = text
    assert not torch.allclose(model(text), model(padded), atol=1e-4)


def test_onnx_parity_at_several_shapes(tmp_path):
    from tagging.export import check_parity, export_onnx

    model = _model(4)
    vocab = CharVocab(tuple("abcdefghijklmnopqrstuvwxyz "))
    export_onnx(model, tmp_path / "m.onnx")
    assert check_parity(model, tmp_path / "m.onnx", ["a text", "another longer text " * 10], vocab, 512) <= 1e-5


# ------------------------------------------------------------------ thresholds, metrics, training loop

def test_one_thresholds_function_and_fallback():
    probs = np.array([[0.9, 0.2], [0.4, 0.6]])
    assert apply_thresholds(probs, np.array([0.5, 0.5])).tolist() == [[True, False], [False, True]]
    rng = np.random.default_rng(0)
    y = np.zeros((200, 2), bool)
    y[:100, 0] = True
    y[:3, 1] = True  # 3 positives: below min_support
    probs = np.clip(y * 0.3 + rng.random((200, 2)) * 0.5, 0, 1)
    th, g = fit_thresholds(y, probs, min_support=5)
    assert th[1] == g and 0.05 <= th[0] <= 0.95


@pytest.mark.parametrize("y_true, y_pred, f1", [
    ([[1, 0], [0, 1]], [[1, 0], [0, 1]], 1.0),
    ([[1, 0], [0, 1]], [[0, 1], [1, 0]], 0.0),
    ([[1, 0], [1, 0], [0, 1]], [[1, 0], [0, 0], [0, 1]], (2 * (2 / 3) + 1) / 3),
])
def test_weighted_f1_table(y_true, y_pred, f1):
    m = evaluate(np.array(y_true), np.array(y_pred), ["a", "b"])
    assert m["overall"]["f1"] == pytest.approx(f1)
    assert set(m["per_class"]) == {"a", "b"} and m["overall"]["num_samples"] == len(y_true)


def test_early_stopping_keeps_a_copy_of_the_best_weights():
    model = _model()
    stopper = EarlyStopping(patience=2)
    stopper.update(0.5, 0, model)
    best = {k: v.clone() for k, v in stopper.best_state.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert not stopper.update(0.4, 1, model)
    assert stopper.update(0.3, 2, model)
    assert all(torch.equal(best[k], stopper.best_state[k]) for k in best)
    assert stopper.best_epoch == 0


def test_train_epoch_learns_a_tiny_problem():
    texts = ["alpha beta", "gamma delta", "alpha gamma", "beta delta"] * 16
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]] * 16, dtype=np.float32)
    vocab = CharVocab.fit(texts)
    torch.manual_seed(0)
    model = CharCNN(vocab.size, 2, ModelConfig(embedding_dim=8, num_filters=8, filter_widths=(2, 3), hidden_dim=8, dropout=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = make_loss(y.sum(0), len(y), "pos_weight")
    rng = np.random.default_rng(0)
    first, _ = train_epoch(model, training_batches(texts, y, vocab, 8, 4, 64, rng, rng), loss_fn, opt)
    for _ in range(15):
        last, seen = train_epoch(model, training_batches(texts, y, vocab, 8, 4, 64, rng, rng), loss_fn, opt)
    assert seen == 64 and last < first * 0.5


# ------------------------------------------------------------------ no Ray in the core

def test_core_imports_without_ray():
    code = ("import sys, tagging, tagging.text, tagging.labels, tagging.vocab, tagging.config, tagging.readers, "
            "tagging.model, tagging.metrics, tagging.thresholds, tagging.split, tagging.training, tagging.artifact, "
            "tagging.export, tagging.dataset, tagging.local, tagging.evaluation, tagging.synth, tagging.cli, tagging.tracking, "
            "tagging.drift, tagging.scores; "
            "assert 'ray' not in sys.modules, 'ray imported'; assert 'mlflow' not in sys.modules, 'mlflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_threshold_policy_is_chosen_by_cross_validation():
    import inspect

    from tagging.thresholds import POLICY_GRID, cv_policy_score, select_policy

    assert inspect.signature(select_policy).parameters["grid"].default is POLICY_GRID
    # The corners of the default grid, 3 folds: each policy costs folds x 91 thresholds of F1,
    # and the choice logic is the same for 4 policies and 3 folds as for 20 and 5.
    grid = {"min_support": (min(POLICY_GRID["min_support"]), max(POLICY_GRID["min_support"])),
            "shrink": (min(POLICY_GRID["shrink"]), max(POLICY_GRID["shrink"]))}
    rng = np.random.default_rng(1)
    y = rng.random((120, 3)) < [0.4, 0.2, 0.05]
    y[y.sum(1) == 0, 0] = True
    probs = np.clip(y * 0.35 + rng.random((120, 3)) * 0.6, 0, 1)
    policy = select_policy(y, probs, grid, folds=3, seed=0)
    assert policy["min_support"] in grid["min_support"] and policy["shrink"] in grid["shrink"]
    assert policy["cv_f1"] == pytest.approx(cv_policy_score(y, probs, policy["min_support"], policy["shrink"], 3, 0))
    assert policy["folds"] == 3 and policy == select_policy(y, probs, grid, folds=3, seed=0)
    others = [cv_policy_score(y, probs, m, s, 3, 0) for m in grid["min_support"] for s in grid["shrink"]]
    assert policy["cv_f1"] >= max(others) - 1e-12
    assert len({round(f, 10) for f in others}) > 1  # the policies differ here, so the choice is a real one


def test_concat_augmentation_joins_texts_and_unites_tags():
    from tagging.augment import concat_pairs, with_concat

    texts = ["alpha", "beta", "gamma", "delta"]
    y = np.eye(4, dtype=np.float32)
    rng = np.random.default_rng(0)
    extra, ey = concat_pairs(texts, y, 1.0, rng)
    assert len(extra) == 4 and ey.shape == (4, 4)
    for k, (t, row) in enumerate(zip(extra, ey)):
        first, second = t.split(" ")
        assert first == texts[k]  # rate 1: every row once, in order, with a random partner
        assert set(np.flatnonzero(row)) == {texts.index(first), texts.index(second)}
    many, _ = concat_pairs(texts, y, 2.5, np.random.default_rng(1))
    assert 8 <= len(many) <= 12
    same, sy = with_concat(texts, y, 0.0, rng)
    assert same == texts and np.array_equal(sy, y)
    a, _ = concat_pairs(texts, y, 1.0, np.random.default_rng(5))
    b, _ = concat_pairs(texts, y, 1.0, np.random.default_rng(5))
    assert a == b  # deterministic by seed


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from dataclasses import replace

    import torch

    from tagging.config import TrainConfig
    from tagging.training import make_scheduler, step_scheduler

    cfg = replace(TrainConfig(), lr_schedule="cosine", max_epochs=20, learning_rate=1e-2)
    def fresh():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
        return opt, make_scheduler(opt, cfg)

    def epochs(opt, sched, n):
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            step_scheduler(sched, 0.0)
        return out

    opt, sched = fresh()
    lrs = epochs(opt, sched, cfg.max_epochs)
    assert lrs[0] == pytest.approx(1e-3) and max(lrs) == pytest.approx(1e-2)
    peak = int(np.argmax(lrs))
    assert peak == 2 and all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)
    # A checkpointed schedule resumes where it was (Ray Train restores it after a crash).
    opt, sched = fresh()
    epochs(opt, sched, 7)
    state = (opt.state_dict(), sched.state_dict())
    opt, sched = fresh()
    opt.load_state_dict(state[0])
    sched.load_state_dict(state[1])
    assert epochs(opt, sched, cfg.max_epochs - 7) == pytest.approx(lrs[7:])


def test_alias_examples_name_tags_and_their_ancestors():
    from tagging.augment import alias_examples, alias_table
    from tagging.config import ConfigError, load_config, to_dict
    from tagging.labels import LabelSpace, TagIndex

    index = TagIndex.from_records([
        {"tag": "pytorch", "aliases": ["torch"], "parents": []},
        {"tag": "object-detection", "aliases": ["YOLO"], "parents": ["computer-vision"]},
        {"tag": "computer-vision", "aliases": ["cv"], "parents": []},
        {"tag": "flask", "aliases": [], "parents": []},  # not in the label space: no example
    ])
    labels = LabelSpace(("computer-vision", "object-detection", "pytorch"))
    table = alias_table(index, labels, str.lower)
    assert table == [(("computer vision", "computer-vision", "cv"), (0,)),
                     (("object detection", "object-detection", "yolo"), (0, 1)), (("pytorch", "torch"), (2,))]
    texts, y = alias_examples(table, 3, np.random.default_rng(0))
    assert [t in forms for t, (forms, _) in zip(texts, table)] == [True] * 3
    assert y.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    # ranks take disjoint shares that cover the table
    parts = [alias_examples(table, 3, np.random.default_rng(0), r, 2)[1] for r in (0, 1)]
    assert sum(len(p) for p in parts) == 3
    with pytest.raises(ConfigError, match="needs data.tags_file"):
        load_config(None, {"alias_examples": True})
    # the default follows the tags file, and the saved config says which it was
    assert load_config(None, {}).alias_examples is False
    assert load_config(None, {"data.tags_file": "tags.json"}).alias_examples is True
    assert load_config(None, {"data.tags_file": "tags.json", "alias_examples": False}).alias_examples is False
    assert to_dict(load_config(None, {"data.tags_file": "tags.json"}))["alias_examples"] is True


def test_labels_and_tags_files_from_paths_and_uris(tmp_path):
    """--labels / --tags take a local path or a pyarrow filesystem URI, like the data files."""
    from tagging.local import prepare_local
    from tagging.readers import load_labels_file, load_tag_index

    (tmp_path / "labels.txt").write_text("# label space\nnlp\nvision\n", encoding="utf-8")
    (tmp_path / "tags.json").write_text(json.dumps([{"tag": "nlp", "aliases": ["natural-language"], "parents": []},
                                                    {"tag": "vision", "aliases": [], "parents": []}]), encoding="utf-8")
    rows = [{"id": i, "title": f"project {i}", "description": "parsing words" if i % 2 else "labelling pixels",
             "tags": ["natural-language"] if i % 2 else ["vision", "code"]} for i in range(20)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    for form in (str(tmp_path / "{}"), f"file://{tmp_path}/{{}}"):
        assert load_labels_file(form.format("labels.txt")) == ["nlp", "vision"]
        assert load_tag_index(form.format("tags.json")).canonical(["natural-language"]) == ["nlp"]
        cfg = load_config(None, {"data.labels_file": form.format("labels.txt"), "data.tags_file": form.format("tags.json")})
        p = prepare_local([str(tmp_path / "d.jsonl")], cfg)
        assert list(p.labels.labels) == ["nlp", "vision"]
        # every row is kept: the alias maps the odd rows onto "nlp"
        assert len(p.rows) == 20 and np.stack(p.rows["y"].to_numpy()).sum(0).tolist() == [10, 10]
    from tagging.readers import file_exists

    assert file_exists(f"file://{tmp_path}/tags.json") and not file_exists(f"file://{tmp_path}/nope.json")
    assert not file_exists("nosuchscheme://bucket/tags.json")  # the artifact's tags file "when it is still there"
    with pytest.raises(FileNotFoundError, match="nope.json: no such file"):
        load_tag_index(f"file://{tmp_path}/nope.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: not a JSON tags file"):
        load_tag_index(str(tmp_path / "bad.json"))
    (tmp_path / "obj.json").write_text('{"tag": "nlp"}', encoding="utf-8")
    with pytest.raises(ValueError, match="JSON array"):
        load_tag_index(str(tmp_path / "obj.json"))
