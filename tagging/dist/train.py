"""Ray Train shell: DDP training of the char-CNN over Ray Data shards.

The worker function only fetches its shard, wraps the model with ``prepare_model`` and calls
the core's ``train_epoch`` / ``predict_probs``. Rank 0 checkpoints every epoch; a restarted
worker group (FailureConfig) or a rerun with the same run name resumes from the latest one.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

STATE_FILE = "state.pt"


def _say(message: str) -> None:
    """A line for the driver's console, once. Ray Train patches print() in workers to both tee to
    stdout and log through the root logger, which also reaches the console: every line showed
    twice. Writing to the process's own stdout bypasses the patch."""
    stream = sys.__stdout__ or sys.stdout
    stream.write(message + "\n")
    stream.flush()


def _fault_injection(epoch: int, rank: int) -> None:
    """Test hook: TAGGING_FAULT_KILL=<epoch>:<rank>:<marker file> SIGKILLs that worker once,
    after it trained that epoch and before the epoch's report (so that epoch's work is lost)."""
    spec = os.environ.get("TAGGING_FAULT_KILL")
    if not spec:
        return
    kill_epoch, kill_rank, marker = spec.split(":", 2)
    if int(kill_epoch) == epoch and int(kill_rank) == rank and not os.path.exists(marker):
        Path(marker).write_text(f"killed rank {rank} at epoch {epoch}\n")
        os.kill(os.getpid(), signal.SIGKILL)


def _latest_persisted_state(run_dir: str | None) -> dict | None:
    """The newest readable epoch checkpoint in the run's storage directory (local storage).

    A worker that dies right after a report can leave a checkpoint on disk that the Train
    controller has not registered yet; restarting from it avoids redoing that epoch.
    """
    import torch

    if not run_dir or "://" in run_dir or not os.path.isdir(run_dir):
        return None
    for ckpt in sorted(Path(run_dir).glob("epoch-*"), reverse=True):
        try:
            return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
        except Exception:  # a checkpoint cut off mid-write: try the one before
            continue
    return None


class ShardCache:
    """A worker's shard kept in memory after its first pass.

    Ray Data re-executes a dataset's stream every epoch (split coordinator start-up, object
    transfers); a char-CNN's shard of short texts is small, so after the first epoch it is
    re-used from memory (``cache_shards`` in the config; off for shards that do not fit).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.rows: dict[str, tuple] = {}

    def chunks(self, name: str, shard, chunk_rows: int, rng):
        """Column chunks (text, y, length) of ``chunk_rows`` rows; shuffled once cached."""
        if name in self.rows:
            texts, y, lengths = self.rows[name]
            order = rng.permutation(len(texts)) if rng is not None else np.arange(len(texts))
            for start in range(0, len(order), chunk_rows):
                idx = order[start : start + chunk_rows]
                yield {"text": texts[idx], "y": y[idx], "length": lengths[idx]}
            return
        kept = []
        for chunk in shard.iter_batches(batch_size=chunk_rows, batch_format="numpy", prefetch_batches=1):
            if self.enabled:
                kept.append(chunk)
            yield chunk
        if self.enabled and kept:
            self.rows[name] = tuple(np.concatenate([c[k] for c in kept]) for k in ("text", "y", "length"))


def _batches(chunks, batch: int, vocab, max_length: int, rng, concat_rate: float = 0.0, aug_rng=None):
    """Length-bucketed batches from column chunks (rng: shuffle batch order, for training;
    ``concat_rate``: concatenation augmentation within each chunk, drawn from ``aug_rng``)."""
    import torch

    from tagging.augment import with_concat
    from tagging.batching import bucket_order
    from tagging.train_loop import Batch, encode_batch

    for chunk in chunks:
        texts, y = chunk["text"], chunk["y"]
        if concat_rate > 0:
            texts, y = with_concat(list(texts), np.stack(list(y)) if y.dtype == object else y, concat_rate, aug_rng)
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        for idx in bucket_order(lengths, batch, rng):
            yield Batch(encode_batch([texts[i] for i in idx], vocab, max_length),
                        torch.from_numpy(np.asarray(y[idx], dtype=np.float32)))


def train_loop_per_worker(loop_cfg: dict) -> None:
    """Runs in every Ray Train worker."""
    import time

    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from tagging.augment import alias_examples
    from tagging.config import from_dict
    from tagging.model import CharCNN
    from tagging.thresholds import fit_global_threshold
    from tagging.metrics import weighted_f1
    from tagging.train_loop import EarlyStopping, make_loss, make_scheduler, step_scheduler, train_epoch, unwrap
    from tagging.vocab import CharVocab

    cfg = from_dict(loop_cfg["config"])
    vocab = CharVocab(tuple(loop_cfg["vocab"]))
    aliases = loop_cfg.get("aliases") or []
    num_labels = int(loop_cfg["num_labels"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, cfg.threads_per_worker))
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed * 1000 + rank)
    local_batch = max(1, cfg.batch_size // max(world, 1))

    model = CharCNN(vocab.size, num_labels, cfg.model)
    # Gradients live in DDP's AllReduce buckets (no copy in and out of them each step).
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"gradient_as_bucket_view": True})
    device = ray.train.torch.get_device()
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    loss_fn = make_loss(np.asarray(loop_cfg["label_counts"]), int(loop_cfg["n_train"]), cfg.imbalance)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg)
    stopper = EarlyStopping(cfg.patience)
    history: list[dict] = []
    start_epoch = 0

    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
    else:
        state = _latest_persisted_state(loop_cfg.get("run_dir"))
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper = EarlyStopping.from_state(cfg.patience, state["early_stopping"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        rng = np.random.default_rng(cfg.seed * 1000 + rank + 7919 * start_epoch)
        if rank == 0:
            _say(f"[tagging] resumed from checkpoint after epoch {state['epoch']}")
        if state.get("stop"):
            start_epoch = cfg.max_epochs  # finished before the restart: nothing left to do

    cache = ShardCache(cfg.cache_shards)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, cfg.max_epochs):
        t0 = time.perf_counter()
        # Rows are shuffled per rank, but the order of length buckets is shared by all ranks
        # (same seed): at each step every worker holds texts of about the same length, so no
        # worker waits at the gradient AllReduce for one that drew the long texts.
        step_rng = np.random.default_rng(cfg.seed * 1000 + 7919 * (epoch + 1))
        chunks = cache.chunks("train", train_shard, local_batch * cfg.bucket_batches, rng)
        if aliases:  # this rank's share of the tags file's names, as one more chunk
            texts, y = alias_examples(aliases, num_labels, rng, rank, world)
            chunks = itertools.chain(chunks, [{"text": np.array(texts, dtype=object), "y": y}])
        batches = _batches(chunks, local_batch, vocab, cfg.model.max_length, step_rng, cfg.concat_rate, rng)
        join = model.join() if world > 1 and hasattr(model, "join") else _null()
        with join:
            loss, seen = train_epoch(model, batches, loss_fn, optimizer, device, scaler)
        train_s = time.perf_counter() - t0
        _fault_injection(epoch, rank)  # a crash after an epoch's work, before its checkpoint
        ys, ps = [], []
        unwrap(model).eval()
        with torch.no_grad():
            for b in _batches(cache.chunks("val", val_shard, 2048, None), 256, vocab, cfg.model.max_length, None):
                ps.append(torch.sigmoid(unwrap(model)(b.ids.to(device)).float()).cpu().numpy())
                ys.append(b.y.numpy())
        y_val, p_val = np.concatenate(ys), np.concatenate(ps)
        t = fit_global_threshold(y_val, p_val)
        val_f1 = weighted_f1(y_val, p_val >= t)
        eps = 1e-7
        val_loss = float(-np.mean(y_val * np.log(p_val + eps) + (1 - y_val) * np.log(1 - p_val + eps)))
        stop = stopper.update(val_f1, epoch, model)
        if world > 1 and dist.is_initialized():
            flag = torch.tensor([int(stop)], dtype=torch.int64, device=device)
            dist.broadcast(flag, src=0)  # rank 0 decides, everyone follows
            stop = bool(flag.item())
        step_scheduler(scheduler, val_f1)
        seen_t = torch.tensor([seen], dtype=torch.int64, device=device)
        if world > 1 and dist.is_initialized():
            dist.all_reduce(seen_t)
        record = {
            "epoch": epoch, "train_loss": loss, "val_loss": val_loss, "val_f1": val_f1, "val_threshold": t,
            "lr": optimizer.param_groups[0]["lr"], "train_seconds": train_s,
            "samples_per_s": float(seen_t.item()) / max(train_s, 1e-9), "best_epoch": stopper.best_epoch,
        }
        history.append(record)
        metrics = {**record, "best_val_f1": stopper.best_score, "stopped": stop}
        if rank == 0:
            _say(f"[tagging] epoch {epoch}: loss {loss:.4f} val_loss {val_loss:.4f} val_f1 {val_f1:.4f} "
                 f"({record['samples_per_s']:.0f} samples/s)")
            with tempfile.TemporaryDirectory() as d:
                torch.save({
                    "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "early_stopping": stopper.state(),
                    "history": history, "epoch": epoch, "stop": stop,
                }, Path(d) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                                 checkpoint_dir_name=f"epoch-{epoch:04d}")
        else:
            ray.train.report(metrics)
        if stop:
            break


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def build_trainer(cfg, loop_cfg: dict, datasets: dict, run_name: str, storage_path: str, callbacks: list | None = None):
    """A TorchTrainer for ``cfg`` (workers, CPUs, GPU, failures) over ``datasets`` (train, val).

    ``callbacks`` go to the RunConfig (Tune passes its TuneReportCallback here).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    if cfg.workers == 0:
        scaling = ray.train.ScalingConfig(num_workers=0)
    else:
        resources = {"CPU": cfg.cpus_per_worker}
        if cfg.use_gpu:
            resources["GPU"] = 1
        scaling = ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker=resources)
    run_config = ray.train.RunConfig(
        name=run_name,
        storage_path=storage_path,
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks or None,
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_cfg,
        scaling_config=scaling,
        run_config=run_config,
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )


def load_checkpoint_state(checkpoint) -> dict:
    import torch

    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
