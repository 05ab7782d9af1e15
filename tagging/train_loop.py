"""Framework-free training pieces: batches, loss, one epoch, prediction, early stopping.

The Ray Train worker only fetches its shard and calls these, so they are tested without Ray.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tagging.augment import alias_examples, with_concat
from tagging.batching import bucket_order
from tagging.vocab import CharVocab


@dataclass
class Batch:
    ids: torch.Tensor  # int64 [batch, length], 0 = PAD
    y: torch.Tensor | None  # float32 [batch, labels]


# Batches are padded up to a multiple of this many characters. PyTorch's CPU convolutions
# (oneDNN) build a kernel per input shape; with a new length in every batch that set-up cost
# dominated a step (1 thread, batch 16: 80 -> 150 samples/s with the padding). The max-pool
# ignores padding, so scores do not change.
SHAPE_MULTIPLE = 32


def encode_batch(texts: Sequence[str], vocab: CharVocab, max_length: int, multiple: int = SHAPE_MULTIPLE) -> torch.Tensor:
    ids, _ = vocab.encode(texts, max_length)
    width = ids.shape[1]
    padded = min(max_length, -(-width // multiple) * multiple)
    if padded > width:
        ids = np.pad(ids, ((0, 0), (0, padded - width)))
    return torch.from_numpy(ids)


def iter_batches(
    texts: Sequence[str],
    y: np.ndarray | None,
    vocab: CharVocab,
    batch_size: int,
    max_length: int,
    rng: np.random.Generator | None = None,
) -> Iterator[Batch]:
    """Length-bucketed batches over in-memory rows (training: rng shuffles batch order)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    for idx in bucket_order(lengths, batch_size, rng):
        ids = encode_batch([texts[i] for i in idx], vocab, max_length)
        yield Batch(ids, None if y is None else torch.from_numpy(np.asarray(y[idx], dtype=np.float32)))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau:
    """The learning-rate schedule of ``cfg`` (stepped once per epoch with ``step_scheduler``)."""
    if cfg.lr_schedule == "cosine":
        warm = cfg.max_epochs // 10
        if warm == 0:  # short runs: no warm-up
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.max_epochs)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [
            torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warm),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.max_epochs - warm)),
        ], milestones=[warm])
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=cfg.lr_factor, patience=cfg.lr_patience)


def step_scheduler(scheduler, val_f1: float) -> None:
    """End of an epoch: plateau schedules watch validation F1, the others count epochs."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_f1)
    else:
        scheduler.step()


def make_loss(pos_counts: np.ndarray, n_rows: int, imbalance: str) -> nn.Module:
    """BCE-with-logits with imbalance handling from training label counts.

    ``pos_counts``: positives per class in the training split; ``n_rows``: training rows.
    'pos_weight': positives weighted by sqrt(neg/pos) per class (damped);
    'inverse_count': per-class weights proportional to 1/count (the reference), mean 1;
    'none': plain BCE.
    """
    pos = np.asarray(pos_counts, dtype=np.float64)
    neg = n_rows - pos
    if imbalance == "pos_weight":
        weight = np.sqrt(np.maximum(neg, 1) / np.maximum(pos, 1))
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, dtype=torch.float32))
    if imbalance == "inverse_count":
        w = 1.0 / np.maximum(pos, 1)
        w = w / w.mean()
        return nn.BCEWithLogitsLoss(weight=torch.tensor(w, dtype=torch.float32))
    if imbalance == "none":
        return nn.BCEWithLogitsLoss()
    raise ValueError(f"unknown imbalance handling {imbalance!r}")


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str = "cpu",
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, int]:
    """One pass over ``batches``; returns (mean loss per sample, samples seen).

    With a ``scaler`` (GPU), the forward pass runs in float16 autocast.
    """
    model.train()
    total, seen = 0.0, 0
    device = torch.device(device)
    loss_fn = loss_fn.to(device)
    for batch in batches:
        ids, y = batch.ids.to(device, non_blocking=True), batch.y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, dtype=torch.float16) if scaler is not None else nullcontext()
        with ctx:
            logits = model(ids)
        loss = loss_fn(logits.float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += float(loss.detach()) * len(ids)
        seen += len(ids)
    return total / max(seen, 1), seen


@torch.no_grad()
def predict_probs(model: nn.Module, batches: Iterable[Batch], device: torch.device | str = "cpu") -> np.ndarray:
    """Sigmoid probabilities float32 [rows, labels] in batch order."""
    model.eval()
    out = [torch.sigmoid(model(b.ids.to(device)).float()).cpu().numpy() for b in batches]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def predict_texts(model: nn.Module, texts: Sequence[str], vocab: CharVocab, max_length: int, batch_size: int = 256) -> np.ndarray:
    """Probabilities for texts in their given order (length-bucketed internally)."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    order = np.concatenate(bucket_order(lengths, batch_size, None)) if len(texts) else np.zeros(0, dtype=np.int64)
    probs = predict_probs(model, (Batch(encode_batch([texts[i] for i in idx], vocab, max_length), None)
                                  for idx in bucket_order(lengths, batch_size, None)))
    out = np.empty_like(probs)
    out[order] = probs
    return out


@dataclass
class EarlyStopping:
    """Tracks the best validation score and keeps a *copy* of the best weights."""

    patience: int
    best_score: float = -np.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict | None = field(default=None, repr=False)

    def update(self, score: float, epoch: int, model: nn.Module) -> bool:
        """Record an epoch; returns True when training should stop."""
        if score > self.best_score + 1e-6:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()})
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "best_state": self.best_state}

    @classmethod
    def from_state(cls, patience: int, state: dict) -> "EarlyStopping":
        return cls(patience, state["best_score"], state["best_epoch"], state["bad_epochs"], state["best_state"])


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def merged_history(states: Sequence[dict]) -> list[dict]:
    """history.json of a run: member 0's epochs as they are; later ensemble members' epochs
    follow, each record tagged ``member``."""
    out = [dict(r) for r in states[0]["history"]]
    for k, state in enumerate(states[1:], start=1):
        out.extend({**r, "member": k} for r in state["history"])
    return out


def fit_local(
    train_texts: Sequence[str],
    y_train: np.ndarray,
    val_texts: Sequence[str],
    y_val: np.ndarray,
    vocab: CharVocab,
    cfg,
    max_epochs: int | None = None,
    log=None,
    aliases: Sequence | None = None,
) -> tuple[nn.Module, list[dict], EarlyStopping]:
    """Plain single-process training with the same pieces as the Ray Train worker.

    Used by the training benchmark (the baseline Ray Train is compared with), by experiments
    and by tests. ``aliases``: a ``tagging.augment.alias_table`` (used with ``cfg.alias_examples``).
    Returns the model with the best weights loaded, the history and the stopper.
    """
    import time

    from tagging.metrics import weighted_f1
    from tagging.model import CharCNN
    from tagging.thresholds import fit_global_threshold

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = CharCNN(vocab.size, y_train.shape[1], cfg.model)
    loss_fn = make_loss(y_train.sum(0), len(y_train), cfg.imbalance)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, cfg)
    stopper = EarlyStopping(cfg.patience)
    history = []
    for epoch in range(max_epochs or cfg.max_epochs):
        t0 = time.perf_counter()
        texts, y = with_concat(train_texts, y_train, cfg.concat_rate, rng)
        if aliases and cfg.alias_examples:
            at, ay = alias_examples(aliases, y_train.shape[1], rng)
            texts, y = texts + at, np.concatenate([y, ay])
        loss, seen = train_epoch(model, iter_batches(texts, y, vocab, cfg.batch_size, cfg.model.max_length, rng), loss_fn, opt)
        secs = time.perf_counter() - t0
        p_val = predict_texts(model, val_texts, vocab, cfg.model.max_length)
        t = fit_global_threshold(y_val, p_val)
        f1 = weighted_f1(y_val, p_val >= t)
        step_scheduler(sched, f1)
        stop = stopper.update(f1, epoch, model)
        history.append({"epoch": epoch, "train_loss": loss, "val_f1": f1, "train_seconds": secs, "samples_per_s": seen / secs})
        if log:
            log(f"epoch {epoch}: loss {loss:.4f} val_f1 {f1:.4f} ({seen / secs:.0f} samples/s)")
        if stop:
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    return model, history, stopper
