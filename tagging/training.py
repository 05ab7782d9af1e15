"""Training, Ray-free: one model's epochs (augment -> train -> validate -> early stopping ->
history), and the trained members -> thresholds -> test metrics -> artifact (``finalize_artifact``).

``ModelTraining.run_epoch`` is the one epoch of the product. In-process training
(``fit_in_process``), the Ray Train worker (tagging.dist.worker) and the training benchmark all
call it; the worker only adds its shard, the DDP wrapper and reporting. Device-agnostic: CPU in
fp32; CUDA with bf16 autocast (fp16 + GradScaler where bf16 is unsupported). Under
torch.distributed (DDP) ranks draw their own rows but share the bucket order, follow rank 0's
stop decision and count samples over all ranks.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tagging.artifact import Artifact, save_artifact
from tagging.augment import alias_examples, alias_table_for, with_concat
from tagging.batching import Batch, bucket_order, encode_batch, predict_texts
from tagging.config import TrainConfig
from tagging.dataset import Prepared
from tagging.distill import DistillLoss, draw_epoch_rows, packed_examples
from tagging.drift import reference_profile
from tagging.metrics import evaluate, weighted_f1
from tagging.model import CharCNN, assemble, count_parameters
from tagging.thresholds import apply_thresholds, fit_global_threshold, fit_thresholds, select_policy
from tagging.vocab import CharVocab

logger = logging.getLogger(__name__)

Aliases = tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]


@dataclass(frozen=True)
class WorkerInputs:
    """What a training process needs besides its rows; built on the driver, shipped to Ray Train
    workers as it is (picklable)."""

    config: TrainConfig
    """The run's config; ``config.seed`` seeds this model (ensemble member k trains with seed + k)."""
    vocab: CharVocab
    """Character vocabulary of the training split."""
    label_counts: tuple[int, ...]
    """Positives per label in the training split, in label order (loss weights; one per label)."""
    n_train: int
    """Rows in the training split (loss weights)."""
    aliases: Aliases = ()
    """``tagging.augment.alias_table`` of the tags file: (surface forms, label positions) per tag;
    empty unless ``config.alias_examples``."""
    run_dir: str | None = None
    """Storage directory of the Ray Train run (a restarted worker looks for checkpoints there); None in-process."""
    student: bool = False
    """A distillation student: training targets are ``tagging.distill.pack``ed (hard labels, the
    teacher's soft targets, masks), the loss is ``DistillLoss`` and concatenations come from the
    teacher-scored pool instead of being made on the fly."""
    initial_state: dict | None = None
    """The model's first weights (a state dict), in place of the seeded random ones: a student
    started from its teacher (``distill.student_init``, ``tagging.distill.pruned_state``)."""

    @property
    def num_labels(self) -> int:
        return len(self.label_counts)

    def member(self, k: int, run_dir: str | None = None) -> "WorkerInputs":
        """Inputs of ensemble member ``k`` (seed + k), checkpointing into ``run_dir``."""
        return replace(self, config=replace(self.config, seed=self.config.seed + k), run_dir=run_dir)


def worker_inputs(cfg: TrainConfig, vocab: CharVocab, y_train: np.ndarray, aliases: Iterable = (), student: bool = False) -> WorkerInputs:
    """``WorkerInputs`` from the training split's targets (float [rows, labels]) and an alias table."""
    aliases = tuple((tuple(forms), tuple(int(i) for i in hits)) for forms, hits in aliases) if cfg.alias_examples else ()
    return WorkerInputs(cfg, vocab, tuple(int(c) for c in np.asarray(y_train).sum(0)), len(y_train), aliases, student=student)


def split_inputs(cfg: TrainConfig, prepared: Prepared) -> tuple[CharVocab, WorkerInputs, dict]:
    """The vocabulary (training split only), the workers' inputs and each split's count of texts over max_length."""
    texts, y = prepared.texts_and_targets("train")
    vocab = CharVocab.fit(texts)
    truncated = {name: int((prepared.split(name)["length"] > cfg.model.max_length).sum()) for name in ("train", "val", "test")}
    return vocab, worker_inputs(cfg, vocab, y, alias_table_for(cfg, prepared.labels)), truncated


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


def mixed_precision(device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """(autocast dtype, loss scaler) for ``device``: CUDA bf16 (no scaling needed) where supported,
    else fp16 with a GradScaler; (None, None) = fp32 on CPU."""
    if device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    after_step: Callable[[], None] | None = None,
) -> tuple[float, int]:
    """One pass over ``batches``; returns (mean loss per sample, samples seen).

    ``amp_dtype``: the forward pass runs in that autocast dtype; ``scaler`` scales the fp16 loss;
    ``after_step()`` runs after each optimizer step (the weight average's update).
    """
    model.train()
    total, seen = 0.0, 0
    device = torch.device(device)
    loss_fn = loss_fn.to(device)
    for batch in batches:
        ids, y = batch.ids.to(device, non_blocking=True), batch.y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext():
            logits = model(ids)
        loss = loss_fn(logits.float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if after_step is not None:
            after_step()
        total += float(loss.detach()) * len(ids)
        seen += len(ids)
    return total / max(seen, 1), seen


def augment(texts: Sequence[str], y: np.ndarray, inputs: WorkerInputs, rng: np.random.Generator,
            rank: int = 0, world: int = 1) -> tuple[list[str], np.ndarray]:
    """An epoch's training rows: ``texts`` (this rank's rows), their concatenations with partners
    drawn from all of them (``config.concat_rate``; a student draws them from its teacher-scored
    pool), then this rank's share of alias examples."""
    if inputs.student:
        texts, y = draw_epoch_rows(texts, y, inputs.config.concat_rate, rng)
    else:
        texts, y = with_concat(texts, y, inputs.config.concat_rate, rng)
    if inputs.aliases:
        at, ay = alias_examples(inputs.aliases, inputs.num_labels, rng, rank, world)
        if inputs.student:
            at, ay = packed_examples(at, ay)
        texts, y = texts + at, np.concatenate([y, ay])
    return texts, y


def training_batches(texts: Sequence[str], y: np.ndarray, vocab: CharVocab, batch_size: int, pool_batches: int, max_length: int,
                     rng: np.random.Generator, order_rng: np.random.Generator) -> list[Batch]:
    """Rows shuffled by ``rng``, cut into pools of ``pool_batches`` batches, each pool sorted by length
    and cut into batches (little padding); the batches' order is shuffled by ``order_rng``."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    order, pool = rng.permutation(len(texts)), batch_size * pool_batches
    batches = [idx[b] for start in range(0, len(order), pool) for idx in [order[start : start + pool]]
               for b in bucket_order(lengths[idx], batch_size, None)]
    order_rng.shuffle(batches)
    y = np.asarray(y, dtype=np.float32)
    return [Batch(encode_batch([texts[i] for i in idx], vocab, max_length), torch.from_numpy(y[idx])) for idx in batches]


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
            self.best_score, self.best_epoch, self.bad_epochs = float(score), int(epoch), 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()})
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "best_state": self.best_state}

    @classmethod
    def from_state(cls, patience: int, state: dict) -> "EarlyStopping":
        return cls(patience, state["best_score"], state["best_epoch"], state["bad_epochs"], state["best_state"])


EMA_SPAN_OF_RUN = 0.25  # the weight average's horizon: at most this fraction of the planned steps


def average_decay(cfg: TrainConfig, n_train: int) -> float:
    """The weight average's decay per step: ``cfg.ema_decay`` (it remembers ~1 / (1 - decay)
    steps), shortened on a run planned with fewer than 4x as many steps (``max_epochs`` of
    ~``n_train x (1 + concat_rate) / batch_size`` steps), to a horizon of a quarter of them. A plain
    EMA of a short run (the tests', a demo's, a small dataset's) is mostly its first, untrained
    weights (0.998 over 100 steps: 82%); capped, the first weights keep ~2% at the planned end."""
    if cfg.ema_decay <= 0:
        return 0.0
    planned = cfg.max_epochs * math.ceil(max(1, n_train) * (1 + cfg.concat_rate) / cfg.batch_size)
    return min(cfg.ema_decay, 1.0 - 1.0 / max(1.0, EMA_SPAN_OF_RUN * planned))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ModelTraining:
    """One model's training state (model, optimizer, schedule, early stopping, history) and its epoch.

    ``wrap`` turns the fresh model into the one trained (the Ray worker passes DDP's
    ``prepare_model``, which also moves it to ``device``); ``after_training(epoch)`` runs between
    an epoch's training pass and its validation (the worker's fault-injection test hook).
    """

    def __init__(self, inputs: WorkerInputs, device: torch.device | str = "cpu", wrap=None, after_training=None) -> None:
        cfg = self.cfg = inputs.config
        self.inputs, self.device = inputs, torch.device(device)
        torch.manual_seed(cfg.seed)
        model = CharCNN(inputs.vocab.size, inputs.num_labels, cfg.model)
        if inputs.initial_state is not None:
            model.load_state_dict(inputs.initial_state)
        self.model = wrap(model) if wrap else model.to(self.device)
        self.loss_fn = make_loss(np.asarray(inputs.label_counts), inputs.n_train, cfg.imbalance)
        if inputs.student:
            self.loss_fn = DistillLoss(self.loss_fn, cfg.distill.alpha, cfg.distill.temperature)
        self.loss_fn = self.loss_fn.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self.amp_dtype, self.scaler = mixed_precision(self.device)
        self.stopper = EarlyStopping(cfg.patience)
        # The weight average (EMA per step) lives beside the trained model; with DDP every rank
        # holds the same parameters after each step, so every rank holds the same average.
        decay = self.average_decay = average_decay(cfg, inputs.n_train)
        self.average = (AveragedModel(unwrap(self.model), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
                        if decay > 0 else None)
        self.history: list[dict] = []
        self.epoch = 0  # the next epoch to train
        self.after_training = after_training
        self.stopped = False

    @property
    def done(self) -> bool:
        return self.stopped or self.epoch >= self.cfg.max_epochs

    def run_epoch(self, train_texts: Sequence[str], y_train: np.ndarray, val_texts: Sequence[str], y_val: np.ndarray) -> dict:
        """Augment, train one pass over this rank's rows, validate on all of ``val_texts``, update early
        stopping and the schedule; returns the epoch's history record (also appended to ``history``)."""
        cfg, epoch = self.cfg, self.epoch
        rank, world = _rank_world()
        # Rows and augmentation are drawn per rank; the order of length buckets is shared by all
        # ranks (same seed): at each step every worker holds texts of about the same length, so
        # no worker waits at the gradient AllReduce for one that drew the long texts. Seeded by
        # epoch, so a resumed run draws what the uninterrupted run would have.
        rng, order_rng = np.random.default_rng([cfg.seed, epoch, 0, rank]), np.random.default_rng([cfg.seed, epoch, 1])
        lr = float(self.optimizer.param_groups[0]["lr"])
        t0 = time.perf_counter()
        texts, y = augment(train_texts, y_train, self.inputs, rng, rank, world)
        batches = training_batches(texts, y, self.inputs.vocab, max(1, cfg.batch_size // world), cfg.bucket_batches,
                                   cfg.model.max_length, rng, order_rng)
        with self.model.join() if world > 1 and hasattr(self.model, "join") else nullcontext():  # uneven batch counts
            loss, seen = train_epoch(self.model, batches, self.loss_fn, self.optimizer, self.device, self.amp_dtype, self.scaler,
                                     after_step=partial(self.average.update_parameters, unwrap(self.model)) if self.average is not None else None)
        train_s = time.perf_counter() - t0
        if self.after_training:
            self.after_training(epoch)
        # With a weight average, validation scores both it and the trained weights and keeps the
        # better (the average first on a tie): the validation split decides whether averaging helps.
        candidates = [self.average.module, unwrap(self.model)] if self.average is not None else [unwrap(self.model)]
        scored = [self.validate(m, val_texts, y_val) for m in candidates]
        kept = 1 if len(scored) > 1 and scored[1][0] > scored[0][0] else 0
        val_f1, threshold, val_loss = scored[kept]
        stop = self.stopper.update(val_f1, epoch, candidates[kept])
        if world > 1:
            flag, total = (torch.tensor([v], dtype=torch.int64, device=self.device) for v in (int(stop), seen))
            dist.broadcast(flag, src=0)  # rank 0 decides, everyone follows
            dist.all_reduce(total)
            stop, seen = bool(flag.item()), int(total.item())
        step_scheduler(self.scheduler, val_f1)
        record = {"epoch": epoch, "train_loss": float(loss), "val_loss": val_loss, "val_f1": val_f1, "val_threshold": threshold,
                  **({"val_f1_average": scored[0][0], "val_f1_trained": scored[1][0]} if len(scored) > 1 else {}),
                  "lr": lr, "train_seconds": train_s, "samples_per_s": seen / max(train_s, 1e-9), "best_epoch": self.stopper.best_epoch}
        self.history.append(record)
        self.epoch, self.stopped = epoch + 1, stop
        return record

    def validate(self, model: nn.Module, val_texts: Sequence[str], y_val: np.ndarray) -> tuple[float, float, float]:
        """Weighted F1 at the best global threshold, that threshold and the mean BCE on validation."""
        p_val = predict_texts(model, val_texts, self.inputs.vocab, self.cfg.model.max_length, device=self.device)
        threshold = fit_global_threshold(y_val, p_val)
        eps = 1e-7
        val_loss = float(-np.mean(y_val * np.log(p_val + eps) + (1 - y_val) * np.log(1 - p_val + eps)))
        return weighted_f1(y_val, p_val >= threshold), threshold, val_loss

    def state(self) -> dict:
        """A checkpoint of tensors and plain containers only: loads with ``torch.load(weights_only=True)``."""
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "average": self.average.state_dict() if self.average is not None else None,
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                "early_stopping": self.stopper.state(), "history": self.history, "epoch": self.epoch - 1, "stop": self.stopped}

    def load_state(self, state: dict) -> None:
        """Continue from a ``state()`` checkpoint (after its epoch)."""
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.stopper = EarlyStopping.from_state(self.cfg.patience, state["early_stopping"])
        self.history = list(state["history"])
        self.epoch, self.stopped = state["epoch"] + 1, bool(state["stop"])

    def best_model(self) -> nn.Module:
        """The model with its best validation weights, on the CPU, in eval mode."""
        model = unwrap(self.model).cpu()
        if self.stopper.best_state is not None:
            model.load_state_dict(self.stopper.best_state)
        return model.eval()


def epoch_line(record: dict) -> str:
    return (f"epoch {record['epoch']}: loss {record['train_loss']:.4f} val_loss {record['val_loss']:.4f} "
            f"val_f1 {record['val_f1']:.4f} ({record['samples_per_s']:.0f} samples/s)")


def fit_in_process(inputs: WorkerInputs, train_texts: Sequence[str], y_train: np.ndarray, val_texts: Sequence[str],
                   y_val: np.ndarray) -> ModelTraining:
    """Train one model in this process (the Ray worker's epochs, without Ray); returns the finished
    run (``best_model()``, ``history``, ``stopper``, ``state()``)."""
    run = ModelTraining(inputs, "cuda" if inputs.config.use_gpu else "cpu")
    while not run.done:
        logger.info(epoch_line(run.run_epoch(train_texts, y_train, val_texts, y_val)))
    return run


def merged_history(states: Sequence[dict]) -> list[dict]:
    """history.json of a run: member 0's epochs as they are; later ensemble members' epochs
    follow, each record tagged ``member``."""
    out = [dict(r) for r in states[0]["history"]]
    for k, state in enumerate(states[1:], start=1):
        out.extend({**r, "member": k} for r in state["history"])
    return out


def member_run_name(run_name: str, k: int) -> str:
    """Ray Train run name of ensemble member ``k`` (member 0 keeps the run's own name)."""
    return run_name if k == 0 else f"{run_name}-m{k}"


def finalize_artifact(cfg: TrainConfig, prepared: Prepared, vocab: CharVocab, states: dict | list[dict], out: str, run_name: str,
                      inputs: list[str], truncated: dict, run_info: dict,
                      threshold_policy: dict | None = None, extra: dict | None = None) -> Artifact:
    """Best weights from a checkpoint state -> thresholds on val -> test metrics -> artifact (ONNX checked).

    ``threshold_policy`` ({"min_support", "shrink"}) comes from the tuning threshold stage; by
    default it is chosen here by 5-fold cross-validation over the validation rows. ``extra``
    goes into the manifest as it is (e.g. a student's ``distillation``).
    """
    states = [states] if isinstance(states, dict) else list(states)
    stops = [s["early_stopping"] for s in states]
    model = assemble(vocab.size, len(prepared.labels), cfg.model, [s["best_state"] for s in stops])
    for k, (state, stop_state) in enumerate(zip(states, stops)):
        member = f"member {k}: " if len(states) > 1 else ""
        logger.info(f"{member}best epoch {stop_state['best_epoch']} (val weighted F1 {stop_state['best_score']:.4f}) of {len(state['history'])} epochs")
    (val_texts, y_val), (test_texts, y_test) = prepared.texts_and_targets("val"), prepared.texts_and_targets("test")
    p_val = predict_texts(model, val_texts, vocab, cfg.model.max_length)
    if threshold_policy is None:  # choose the policy by 5-fold CV on validation, as the tune stage does
        threshold_policy = {**select_policy(y_val, p_val, seed=cfg.seed), "source": "train: 5-fold CV on validation"}
    policy = threshold_policy
    thresholds, global_t = fit_thresholds(y_val, p_val, min_support=int(policy["min_support"]), shrink=float(policy["shrink"]))
    p_test = predict_texts(model, test_texts, vocab, cfg.model.max_length)
    metrics = evaluate(y_test, apply_thresholds(p_test, thresholds), prepared.labels.labels)
    metrics["global_threshold_f1"] = evaluate(y_test, apply_thresholds(p_test, np.full(len(thresholds), global_t)), prepared.labels.labels)["overall"]["f1"]
    metrics["split"] = "test"
    if len(states) > 1:
        metrics["val_f1_ensemble_global"] = weighted_f1(y_val, p_val >= global_t)
    logger.info(f"test weighted F1 {metrics['overall']['f1']:.4f} (per-class thresholds), "
                f"{metrics['global_threshold_f1']:.4f} (global {global_t:.2f}); macro F1 {metrics['overall']['macro_f1']:.4f}")
    return save_artifact(
        out, config=cfg, labels=prepared.labels, vocab=vocab, state_dict=model.state_dict(), model=model,
        thresholds=thresholds, global_threshold=global_t, metrics=metrics,
        splits=dict(zip(prepared.rows["id"], prepared.rows["split"])), history=merged_history(states),
        data_hash=prepared.data_hash, model_version=run_name, parity_texts=val_texts[:256],
        extra={
            "run": {**run_info, "best_epoch": stops[0]["best_epoch"], "epochs": len(states[0]["history"]),
                    **({"members": [{"run": member_run_name(run_name, k), "seed": cfg.seed + k, "best_epoch": st["best_epoch"],
                                     "epochs": len(s["history"]), "best_val_f1": st["best_score"]}
                                    for k, (s, st) in enumerate(zip(states, stops))]} if len(states) > 1 else {})},
            "data": {"inputs": inputs, **prepared.counts, "truncated": truncated},
            "threshold_policy": policy,
            "parameters": count_parameters(model),
            # nightly drift compares against this (tagging.drift): the model's own tag rates on its test split
            "drift_reference": reference_profile(prepared.labels.labels, apply_thresholds(p_test, thresholds), test_texts, vocab,
                                                 cfg.model.max_length),
            **(extra or {}),
        },
    )
