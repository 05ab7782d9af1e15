"""The one training epoch (tagging.training): batches, history, early stopping, checkpoints, resume."""

from __future__ import annotations

import io
from contextlib import nullcontext
from dataclasses import replace

import numpy as np
import pytest
import torch

from tagging.config import load_config
from tagging.training import (ModelTraining, WorkerInputs, average_decay, fit_in_process, mixed_precision, training_batches,
                               worker_inputs)
from tagging.vocab import CharVocab


TEXTS = ["pytorch cnn for images", "bert transformer text", "yolo object detection", "gpt language model",
         "segmentation unet medical", "tabular gradient boosting"] * 8
Y = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 1]] * 8, dtype=np.float32)


@pytest.fixture
def inputs() -> WorkerInputs:
    cfg = load_config(None, {"model.num_filters": 8, "model.filter_widths": [2, 3], "model.embedding_dim": 8, "model.hidden_dim": 8,
                             "model.dropout": 0.0, "model.ensemble": 1, "batch_size": 8, "max_epochs": 4, "patience": 10,
                             "bucket_batches": 2, "concat_rate": 1.0})
    return worker_inputs(cfg, CharVocab.fit(TEXTS), Y, [(("tf", "tensorflow"), (1,))])


def test_worker_inputs_are_typed_frozen_and_per_member(inputs):
    assert inputs.num_labels == 3 and inputs.n_train == len(Y) and inputs.label_counts == (24, 16, 24)
    assert inputs.aliases == ()  # alias_examples is off without a tags file: the table is dropped
    member = inputs.member(2, "/runs/x-m2")
    assert member.config.seed == inputs.config.seed + 2 and member.run_dir == "/runs/x-m2" and inputs.run_dir is None
    with pytest.raises(AttributeError):
        inputs.n_train = 1  # frozen


def test_training_batches_cover_every_row_once_in_length_pools():
    lengths = np.arange(40)
    texts = ["x" * (n + 1) for n in lengths]
    y = np.eye(40, dtype=np.float32)
    batches = training_batches(texts, y, CharVocab.fit(texts), 4, 2, 512, np.random.default_rng(0), np.random.default_rng(1))
    rows = np.concatenate([b.y.numpy().argmax(1) for b in batches])
    assert sorted(rows) == list(range(40)) and all(len(b.ids) == 4 for b in batches)
    # a batch holds rows of one pool of 8, sorted by length: its texts span little length
    assert max(int((b.ids > 0).sum(1).max() - (b.ids > 0).sum(1).min()) for b in batches) < 40


def test_an_epoch_records_validation_loss_lr_and_keeps_the_best(inputs):
    run = ModelTraining(inputs)
    records = [run.run_epoch(TEXTS, Y, TEXTS[:12], Y[:12]) for _ in range(4)]
    assert run.done and len(run.history) == 4 and [r["epoch"] for r in records] == [0, 1, 2, 3]
    assert set(records[0]) >= {"train_loss", "val_loss", "val_f1", "val_threshold", "lr", "train_seconds", "samples_per_s", "best_epoch"}
    assert records[0]["lr"] == pytest.approx(inputs.config.learning_rate)  # the rate the epoch trained with
    assert records[-1]["lr"] < records[0]["lr"]  # cosine decay
    assert all(isinstance(v, (int, float)) for r in records for v in r.values())
    assert run.stopper.best_epoch == max(range(4), key=lambda e: (records[e]["val_f1"], -e))


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_checkpoint_loads_weights_only_and_resumes_as_if_never_stopped(inputs, ema_decay):
    inputs = replace(inputs, config=replace(inputs.config, ema_decay=ema_decay))
    whole = ModelTraining(inputs)
    for _ in range(3):
        whole.run_epoch(TEXTS, Y, TEXTS[:12], Y[:12])
    first = ModelTraining(inputs)
    first.run_epoch(TEXTS, Y, TEXTS[:12], Y[:12])
    buf = io.BytesIO()
    torch.save(first.state(), buf)
    buf.seek(0)
    resumed = ModelTraining(inputs)
    resumed.load_state(torch.load(buf, weights_only=True))  # tensors and plain containers only
    assert resumed.epoch == 1
    for _ in range(2):
        resumed.run_epoch(TEXTS, Y, TEXTS[:12], Y[:12])
    for a, b in zip(whole.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5) and a["val_f1"] == pytest.approx(b["val_f1"])
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)  # the weight average resumed too


def test_weight_average_and_trained_weights_are_both_validated_and_the_better_is_kept(inputs):
    plain = ModelTraining(replace(inputs, config=replace(inputs.config, ema_decay=0.0)))
    averaged = ModelTraining(replace(inputs, config=replace(inputs.config, ema_decay=0.9)))
    snapshots = []
    for _ in range(3):
        a, b = plain.run_epoch(TEXTS, Y, TEXTS[:12], Y[:12]), averaged.run_epoch(TEXTS, Y, TEXTS[:12], Y[:12])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)  # the average does not steer training
        assert b["val_f1_trained"] == pytest.approx(a["val_f1"])  # the trained weights are validated as without it
        assert b["val_f1_average"] == averaged.validate(averaged.average.module, TEXTS[:12], Y[:12])[0]
        assert b["val_f1"] == max(b["val_f1_average"], b["val_f1_trained"])  # the better is kept (the average on a tie)
        kept = averaged.average.module if b["val_f1_average"] >= b["val_f1_trained"] else averaged.model
        snapshots.append({k: v.clone() for k, v in kept.state_dict().items()})
    trained = plain.model.state_dict()
    assert all(torch.allclose(v, averaged.model.state_dict()[k]) for k, v in trained.items())
    assert not all(torch.allclose(v, averaged.average.module.state_dict()[k]) for k, v in trained.items())
    best = averaged.stopper.best_epoch
    assert best == max(range(3), key=lambda e: (averaged.history[e]["val_f1"], -e))
    # early stopping keeps the better of the two at its best epoch, and that is the model training returns
    assert all(torch.equal(v, snapshots[best][k]) for k, v in averaged.best_model().state_dict().items())


def test_the_trained_weights_are_kept_when_the_average_validates_worse(inputs):
    def spoil_the_average(epoch):  # between training and validation: the average now predicts no tag at all
        run.average.module.fc2.bias.data.fill_(-1e4)

    run = ModelTraining(replace(inputs, config=replace(inputs.config, ema_decay=0.9)), after_training=spoil_the_average)
    record = run.run_epoch(TEXTS, Y, TEXTS[:12], Y[:12])
    assert record["val_f1_average"] == 0 < record["val_f1_trained"] == record["val_f1"]
    assert all(torch.equal(v, run.model.state_dict()[k]) for k, v in run.stopper.best_state.items())


def test_weight_average_horizon_is_capped_by_the_planned_run(inputs):
    # the real data (~820 training rows, concatenations x1, batch 32, 40 epochs: ~2,050 steps): 0.998 as configured
    real = load_config(None, {"ema_decay": 0.998})
    assert average_decay(real, 820) == 0.998
    assert average_decay(replace(real, ema_decay=0.0), 820) == 0.0
    assert load_config(None, {}).ema_decay == 0.998  # on by default
    # this file's run (48 rows, batch 8, x2 with concatenations, 4 epochs: 48 steps): a 12-step horizon
    cfg = replace(inputs.config, ema_decay=0.998)
    assert average_decay(cfg, len(TEXTS)) == pytest.approx(1 - 1 / 12)
    # uncapped, the average would still be 0.998 ** 48 = 91% the first weights when the run ends
    assert average_decay(cfg, len(TEXTS)) ** 48 < 0.02
    run = ModelTraining(replace(inputs, config=cfg))
    assert run.average_decay == pytest.approx(1 - 1 / 12) and run.average is not None
    assert ModelTraining(replace(inputs, config=replace(inputs.config, ema_decay=0.0))).average is None
    assert average_decay(cfg, 1) == 0.0  # a horizon under one step: the average is the current weights


def test_early_stopping_ends_training_and_the_best_weights_come_back(inputs):
    cfg = replace(inputs.config, patience=1, max_epochs=30, learning_rate=1e-9)  # nothing improves after epoch 0
    run = fit_in_process(replace(inputs, config=cfg), TEXTS, Y, TEXTS[:12], Y[:12])
    model, stopper = run.best_model(), run.stopper
    assert len(run.history) == 2 and stopper.best_epoch == 0
    assert all(torch.equal(v, stopper.best_state[k]) for k, v in model.state_dict().items())
    assert not model.training


def test_mixed_precision_by_device(monkeypatch):
    """CPU trains in fp32; CUDA in bf16 where supported (no loss scaling), else fp16 with a GradScaler."""
    assert mixed_precision(torch.device("cpu")) == (None, None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert mixed_precision(torch.device("cuda")) == (torch.bfloat16, None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else nullcontext():  # no CUDA here: the scaler disables itself
        dtype, scaler = mixed_precision(torch.device("cuda"))
    assert dtype == torch.float16 and isinstance(scaler, torch.amp.GradScaler)
