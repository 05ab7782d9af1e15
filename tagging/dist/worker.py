"""The Ray Train worker: DDP training of one char-CNN over Ray Data shards, and its TorchTrainer.

Each worker fetches its shard, wraps the model with ``prepare_model`` (DDP) and runs the core's
epochs (``tagging.training.ModelTraining``); rank 0 checkpoints every epoch. A restarted worker
group (FailureConfig) or a rerun with the same run name resumes from the latest checkpoint.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np

from tagging.training import WorkerInputs

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
            return torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception:  # a checkpoint cut off mid-write: try the one before
            continue
    return None


def shard_rows(shard) -> tuple[list[str], np.ndarray]:
    """All rows of a dataset shard: (texts, float32 targets [rows, labels])."""
    texts, ys = [], []
    for chunk in shard.iter_batches(batch_size=4096, batch_format="numpy", prefetch_batches=1):
        texts.extend(chunk["text"].tolist())
        ys.append(np.asarray(chunk["y"], dtype=np.float32))
    return texts, np.concatenate(ys) if ys else np.zeros((0, 0), dtype=np.float32)


def run_worker(inputs: WorkerInputs) -> None:
    """Runs in every Ray Train worker: shards -> DDP -> the core's epochs -> reports and checkpoints."""
    import ray.train
    import ray.train.torch
    import torch

    from tagging.training import ModelTraining, epoch_line

    cfg = inputs.config
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, cfg.threads_per_worker))
    # Gradients live in DDP's AllReduce buckets (no copy in and out of them each step).
    ddp = functools.partial(ray.train.torch.prepare_model, parallel_strategy_kwargs={"gradient_as_bucket_view": True})
    run = ModelTraining(inputs, ray.train.torch.get_device(), wrap=ddp, after_training=lambda epoch: _fault_injection(epoch, rank))
    checkpoint = ray.train.get_checkpoint()
    state = load_checkpoint_state(checkpoint) if checkpoint else _latest_persisted_state(inputs.run_dir)
    if state is not None:
        run.load_state(state)
        if rank == 0:
            _say(f"[tagging] resumed from checkpoint after epoch {state['epoch']}")
    # A char-CNN's shard of short texts is small: kept in memory after its first pass (cache_shards)
    # instead of re-streaming it from Ray Data every epoch.
    rows: dict[str, tuple] = {}

    def fetch(name: str) -> tuple:
        if name not in rows or not cfg.cache_shards:
            rows[name] = shard_rows(ray.train.get_dataset_shard(name))
        return rows[name]

    while not run.done:
        record = run.run_epoch(*fetch("train"), *fetch("val"))
        metrics = {**record, "best_val_f1": run.stopper.best_score, "stopped": run.stopped}
        if rank == 0:
            _say(f"[tagging] {epoch_line(record)}")
            with tempfile.TemporaryDirectory() as d:
                torch.save(run.state(), Path(d) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=f"epoch-{record['epoch']:04d}")
        else:
            ray.train.report(metrics)


def build_trainer(inputs: WorkerInputs, datasets: dict, run_name: str, storage_path: str, callbacks: list | None = None):
    """A TorchTrainer for ``inputs.config`` (workers, CPUs, GPU, failures) over ``datasets`` (train, val).

    ``callbacks`` go to the RunConfig (Tune passes its TuneReportCallback here).
    """
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = inputs.config
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
        functools.partial(run_worker, inputs),
        scaling_config=scaling,
        run_config=run_config,
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )


def load_checkpoint_state(checkpoint) -> dict:
    import torch

    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
