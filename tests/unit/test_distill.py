"""Distillation's Ray-free core: targets, the loss, the epoch's rows, the student config, the linear teacher."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from tagging.config import ConfigError, load_config
from tagging.distill import (DistillLoss, LinearTeacher, blend, concat_pool, draw_epoch_rows, in_pool, pack,
                             packed_examples, student_config)
from tagging.training import make_loss


def _packed(n=6, labels=3, has=None, pool=None, seed=0):
    rng = np.random.default_rng(seed)
    hard = (rng.random((n, labels)) < 0.4).astype(np.float32)
    soft = rng.random((n, labels)).astype(np.float32)
    has = np.ones(n) if has is None else np.asarray(has)
    pool = np.zeros(n) if pool is None else np.asarray(pool)
    return hard, soft, pack(hard, soft, has, pool)


def test_pack_layout_and_pool_flags():
    hard, soft, packed = _packed(4, 3, has=[1, 1, 0, 1], pool=[0, 1, 0, 1])
    assert packed.shape == (4, 8) and packed.dtype == np.float32
    np.testing.assert_array_equal(packed[:, :3], hard)
    np.testing.assert_array_equal(packed[:, 3:6], soft)
    np.testing.assert_array_equal(in_pool(packed), [False, True, False, True])
    texts, ex = packed_examples(["a", "b"], np.eye(2, 3, dtype=np.float32))
    np.testing.assert_array_equal(ex[:, :3], ex[:, 3:6])  # alias examples: soft = hard, labeled, not pool
    assert ex[:, 6].tolist() == [1, 1] and ex[:, 7].tolist() == [0, 0]


def test_loss_mixes_hard_and_soft_by_alpha_and_masks_unlabeled_rows():
    torch.manual_seed(0)
    hard, soft, packed = _packed(8, 3)
    logits = torch.randn(8, 3)
    base = lambda: make_loss(np.array([2, 3, 1]), 8, "pos_weight")  # noqa: E731
    p = torch.from_numpy(packed)
    hard_only = DistillLoss(base(), alpha=1.0, temperature=1.0)(logits, p)
    soft_only = DistillLoss(base(), alpha=0.0, temperature=1.0)(logits, p)
    np.testing.assert_allclose(float(hard_only), float(base()(logits, torch.from_numpy(hard))), rtol=1e-6)
    np.testing.assert_allclose(float(soft_only), float(base()(logits, torch.from_numpy(soft))), rtol=1e-6)
    mixed = DistillLoss(base(), alpha=0.3, temperature=1.0)(logits, p)
    np.testing.assert_allclose(float(mixed), 0.3 * float(hard_only) + 0.7 * float(soft_only), rtol=1e-5)
    # rows without labels learn only the soft targets, whatever alpha says
    _, _, unlabeled = _packed(8, 3, has=np.zeros(8))
    np.testing.assert_allclose(float(DistillLoss(base(), 0.9, 1.0)(logits, torch.from_numpy(unlabeled))),
                               float(DistillLoss(base(), 0.0, 1.0)(logits, torch.from_numpy(unlabeled))), rtol=1e-6)
    # a student that matches the softened teacher exactly sits at the soft loss's minimum
    t = 2.0
    teacher_logits = torch.logit(torch.from_numpy(soft).clamp(1e-6, 1 - 1e-6))
    loss = DistillLoss(make_loss(np.array([2, 3, 1]), 8, "none"), 0.0, t)
    at_teacher = float(loss(teacher_logits, p))
    assert all(at_teacher < float(loss(teacher_logits + d, p)) for d in (-0.5, 0.5))


def test_epoch_rows_draw_concat_rate_times_labeled_rows_from_the_pool():
    n_base, n_pool = 10, 40
    packed = pack(np.zeros((50, 2)), np.zeros((50, 2)), np.r_[np.ones(8), np.zeros(2), np.ones(40)], np.r_[np.zeros(10), np.ones(40)])
    texts = [f"t{i}" for i in range(50)]
    out_t, out_y = draw_epoch_rows(texts, packed, 1.5, np.random.default_rng(0))
    assert len(out_t) == n_base + 12  # every base row + 1.5 x 8 labeled rows from the pool
    assert out_t[:n_base] == texts[:n_base] and in_pool(out_y).sum() == 12
    again, _ = draw_epoch_rows(texts, packed, 1.5, np.random.default_rng(1))
    assert again[n_base:] != out_t[n_base:]  # another epoch, other pool rows
    everything, _ = draw_epoch_rows(texts, packed, 8.0, np.random.default_rng(0))
    assert len(everything) == 50  # a small pool is used whole
    assert len(draw_epoch_rows(texts, packed, 0.0, np.random.default_rng(0))[0]) == n_base
    del n_pool


def test_concat_pool_is_deterministic_and_labels_the_union():
    texts, y = ["a b", "c d", "e f"], np.array([[1, 0], [0, 1], [0, 0]], np.float32)
    t1, y1 = concat_pool(texts, y, 2, seed=3)
    t2, _ = concat_pool(texts, y, 2, seed=3)
    assert t1 == t2 and len(t1) == 6
    for text, target in zip(t1, y1):
        first, second = text[:3], text[4:]
        np.testing.assert_array_equal(target, np.maximum(y[texts.index(first)], y[texts.index(second)]))


def test_student_config_is_one_member_with_the_overrides():
    cfg = load_config(None, {"model.ensemble": 3, "distill.student_num_filters": 32, "distill.student_filter_widths": "1,2,3",
                             "distill.student_max_length": 256, "distill.student_concat_rate": 2.5,
                             "distill.student_ema_decay": 0.998, "ema_decay": 0.0})
    s = student_config(cfg)
    assert (s.model.ensemble, s.model.num_filters, s.model.filter_widths, s.model.max_length) == (1, 32, (1, 2, 3), 256)
    assert s.concat_rate == 2.5 and cfg.concat_rate == 1.0
    assert s.ema_decay == 0.998 and cfg.ema_decay == 0.0  # the student averages its weights, the members do not
    assert student_config(load_config(None, {"ema_decay": 0.99})).ema_decay == 0.99  # None: the teacher's
    assert s.model.embedding_dim == cfg.model.embedding_dim and s.distill == cfg.distill
    plain = student_config(load_config())  # the default student: widths 1-8 of the default member
    assert dataclasses.replace(plain.model, ensemble=3, filter_widths=tuple(range(1, 11))) == load_config().model
    assert plain.model.filter_widths == tuple(range(1, 9))
    same = student_config(load_config(None, {"distill.student_max_width": "none"}))  # every width of the teacher
    assert dataclasses.replace(same.model, ensemble=3) == load_config().model
    small = student_config(load_config(None, {"model.filter_widths": "1,3,9"}))  # up to width 8 of the teacher's
    assert small.model.filter_widths == (1, 3)


@pytest.mark.parametrize("key, value, message", [
    ("distill.alpha", "1.5", "distill.alpha: must be in [0, 1]"),
    ("distill.temperature", "0", "distill.temperature: must be > 0"),
    ("distill.teacher_linear", "high", "distill.teacher_linear: expected a number"),
    ("distill.student_filter_widths", "0,2", "distill.student_filter_widths: must be widths > 0"),
    ("distill.student_max_width", "0", "distill.student_max_width: leaves none of model.filter_widths"),
    ("distill.student_ema_decay", "1.0", "distill.student_ema_decay: must be in [0, 1)"),
    ("distill.student_init", "pretrained", "distill.student_init: expected one of auto, random, teacher"),
])
def test_distill_config_is_checked_naming_the_field(key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, {key: value})


@pytest.mark.parametrize("student", [{"distill.student_filter_widths": "1,11"}, {"distill.student_num_filters": "65"}])
def test_a_student_started_from_the_teacher_must_be_a_cut_of_the_model_config(student):
    assert load_config(None, {"distill.student_init": "teacher", "distill.student_filter_widths": "1,10"}).distill.student_init == "teacher"
    with pytest.raises(ConfigError, match=r"distill.student_init: 'teacher' needs the student's widths among model.filter_widths"):
        load_config(None, {"distill.student_init": "teacher", **student})


def test_linear_teacher_gives_calibrated_probabilities_and_blends():
    from tagging.labels import LabelSpace

    rng = np.random.default_rng(0)
    words = ["torch", "vision", "text", "speech", "graph"]
    texts, y = [], []
    for _ in range(120):
        k = rng.integers(0, 2, 2)
        texts.append(" ".join([words[0] if k[0] else words[2], words[1] if k[1] else words[3], "model"]))
        y.append(k)
    y = np.array(y, np.float32)
    lin = LinearTeacher(seed=0).fit(texts[:80], y[:80], texts[80:], y[80:], LabelSpace(("a", "b")))
    p = lin.probs(texts[80:])
    assert p.shape == (40, 2) and ((p > 0) & (p < 1)).all()
    assert ((p > 0.5) == (y[80:] > 0.5)).mean() > 0.95  # a separable toy: calibrated and right
    cnn = np.full_like(p, 0.2)
    np.testing.assert_allclose(blend(cnn, p, 0.25), 0.75 * cnn + 0.25 * p, rtol=1e-6)
    assert blend(cnn, p, 0.0) is cnn


def test_the_student_keeps_the_teachers_data_split_and_labels(untrained_artifact, synth_parquet, tmp_path):
    from tagging.dist.distill import check_teacher_data, student_rows
    from tagging.local import prepare_local
    from tagging.synth import generate_corpus, write_corpus

    teacher = untrained_artifact(2)
    prepared = prepare_local([synth_parquet], teacher.config)
    check_teacher_data(teacher, prepared)  # the teacher's own data: accepted
    texts, hard, has_hard, pool, counts = student_rows(teacher.config, prepared)
    assert counts == {"train": prepared.counts["train"], "concat_pool": 8 * prepared.counts["train"], "unlabeled_in_data": 0}
    assert len(texts) == len(hard) == sum(counts.values()) and pool.sum() == counts["concat_pool"] and has_hard.all()
    assert not set(texts) & set(prepared.split("val")["text"]) - set(prepared.split("train")["text"])  # no held-out row
    other = tmp_path / "other.parquet"
    write_corpus(generate_corpus(300, seed=9), str(other))
    with pytest.raises(ValueError, match="not the data the teacher .* was trained on"):
        check_teacher_data(teacher, prepare_local([str(other)], teacher.config))
    reseeded = prepare_local([synth_parquet], dataclasses.replace(teacher.config, seed=teacher.config.seed + 1))
    with pytest.raises(ValueError, match="split of --data differs"):
        check_teacher_data(teacher, reseeded)


def _cnn(vocab, widths, filters, seed, **model):
    from tagging.config import ModelConfig
    from tagging.model import CharCNN

    torch.manual_seed(seed)
    cfg = ModelConfig(embedding_dim=8, num_filters=filters, filter_widths=widths, hidden_dim=6, **model)
    net = CharCNN(vocab.size, 3, cfg).eval()
    for p in net.parameters():  # every weight away from its initial value (biases included)
        p.data.add_(torch.randn_like(p) * 0.1)
    net.embedding.weight.data[0] = 0  # PAD embeds to zero, as trained
    return net


def test_a_student_cut_from_the_teacher_computes_the_teachers_features_for_its_widths_and_filters():
    from tagging.distill import pruned_state
    from tagging.vocab import CharVocab

    t_vocab = CharVocab.fit(["abcdef xyz"])
    s_vocab = CharVocab(chars=("z", "q", "b", "a", " ", "c"))  # another order, and a character the teacher lacks
    teacher = _cnn(t_vocab, (1, 2, 3, 5), 4, seed=0, batch_norm=True)
    with torch.no_grad():  # running statistics unlike a fresh norm's, so copying them matters
        for n in teacher.norms:
            n.running_mean.uniform_(-0.2, 0.2)
            n.running_var.uniform_(0.5, 2.0)
    student = _cnn(s_vocab, (1, 3), 2, seed=1, batch_norm=True)
    fresh_q = student.embedding.weight[s_vocab.chars.index("q") + 2].clone()
    student.load_state_dict(pruned_state(teacher, t_vocab, student, s_vocab))
    text = ["cab zab", "a"]
    t_ids, _ = t_vocab.encode(text, 16)
    s_ids, _ = s_vocab.encode(text, 16)
    with torch.no_grad():
        t_feat, s_feat = teacher.conv_features(torch.from_numpy(t_ids)), student.conv_features(torch.from_numpy(s_ids))
        torch.testing.assert_close(s_feat[0], t_feat[0][:, :2])  # width 1: the teacher's first two filters
        torch.testing.assert_close(s_feat[1], t_feat[2][:, :2])  # width 3
        assert not torch.allclose(s_feat[1], t_feat[1][:, :2])  # ... not the teacher's width 2
        torch.testing.assert_close(student.embedding.weight[s_vocab.chars.index("q") + 2], fresh_q)  # unseen: its own row
        assert float(student.embedding.weight[0].abs().sum()) == 0.0  # PAD stays zero
        # the FC layer reads the kept filters' columns: the head of the pruned features equals
        # the teacher's head with the dropped features at zero
        h = torch.rand(2, 4)
        full = torch.zeros(2, 16)
        full[:, 0:2], full[:, 8:10] = h[:, :2], h[:, 2:]
        torch.testing.assert_close(student.head(h), teacher.head(full))


def test_a_student_the_same_shape_as_the_teacher_starts_as_the_teacher():
    from tagging.distill import pruned_state
    from tagging.vocab import CharVocab

    vocab = CharVocab.fit(["hello world"])
    teacher, student = _cnn(vocab, (2, 3), 3, seed=0), _cnn(vocab, (2, 3), 3, seed=1)
    ids = torch.from_numpy(vocab.encode(["hello", "low old"], 12)[0])
    assert not torch.allclose(student(ids), teacher(ids))
    student.load_state_dict(pruned_state(teacher, vocab, student, vocab))
    torch.testing.assert_close(student(ids), teacher(ids))


def test_a_ranked_cut_keeps_the_filters_the_hidden_layer_uses_and_computes_the_teachers_scores():
    from tagging.distill import filter_ranking, pruned_state
    from tagging.vocab import CharVocab

    vocab = CharVocab.fit(["hello world"])
    teacher = _cnn(vocab, (1, 3), 4, seed=0)
    with torch.no_grad():  # filters 0 and 2 of width 1 and 1 and 2 of width 3 reach nothing
        for col in (0, 2, 4 + 1, 4 + 2):
            teacher.fc1.weight[:, col] = 0
    texts = ["hello", "low old", "world", "he"]
    ranking = filter_ranking(teacher, vocab, texts)
    assert ranking.shape == (2, 4)
    assert sorted(ranking[0, :2].tolist()) == [1, 3] and sorted(ranking[1, :2].tolist()) == [0, 3]
    student = _cnn(vocab, (1, 3), 2, seed=1)
    ids = torch.from_numpy(vocab.encode(texts, 12)[0])
    student.load_state_dict(pruned_state(teacher, vocab, student, vocab))  # unranked: the first two filters
    assert not torch.allclose(student(ids), teacher(ids))
    student.load_state_dict(pruned_state(teacher, vocab, student, vocab, ranking))
    torch.testing.assert_close(student(ids), teacher(ids))  # what it dropped never reached the scores


@pytest.mark.parametrize("student, message", [
    (dict(filter_widths=(1, 4)), r"filter widths \[4\]"),
    (dict(num_filters=8), "num_filters 8"),
    (dict(embedding_dim=16), "embedding_dim 16"),
])
def test_a_student_that_is_no_cut_of_the_teacher_is_refused_naming_the_setting(student, message):
    from tagging.config import ModelConfig
    from tagging.distill import check_student_init

    teacher = ModelConfig(embedding_dim=8, num_filters=4, filter_widths=(1, 2, 3))
    with pytest.raises(ConfigError, match="distill.student_init.*" + message):
        check_student_init(teacher, dataclasses.replace(teacher, **student))


def test_auto_starts_from_the_teacher_only_where_the_student_is_a_cut():
    from tagging.config import ModelConfig
    from tagging.distill import starts_from_teacher

    teacher = ModelConfig(embedding_dim=8, num_filters=4, filter_widths=(1, 2, 3))
    cut, other = dataclasses.replace(teacher, filter_widths=(1, 3)), dataclasses.replace(teacher, embedding_dim=4)
    assert starts_from_teacher("auto", teacher, cut) and starts_from_teacher("auto", teacher, teacher)
    assert not starts_from_teacher("auto", teacher, other)
    assert not starts_from_teacher("random", teacher, cut) and starts_from_teacher("teacher", teacher, cut)
    with pytest.raises(ConfigError, match="distill.student_init.*embedding_dim 4"):
        starts_from_teacher("teacher", teacher, other)
