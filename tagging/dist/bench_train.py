"""Training throughput: N-worker Ray Train (DDP) vs a plain single-process PyTorch loop.

Same model config, same training rows, same global batch size, same epoch function
(tagging.training), same cores (the plain loop gets as many torch threads as the workers have
in total), measured in one run. Each side
runs one warm-up epoch, then timed epochs; samples/s counts training steps only. The plain
loop's timed epochs are split before and after the Ray run (so a drift in the machine's speed
hits both sides), and each side reports the median of its epochs (a VM's CPU steal makes
single epochs swing by 20-30% here).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

logger = logging.getLogger(__name__)


def bench_train(data: Sequence[str], labels_file=None, epochs: int = 4, workers: int = 2, config_overrides: dict | None = None) -> dict:
    import torch

    from tagging.config import load_config, to_dict
    from tagging.dist.runtime import init_ray
    from tagging.dist.training import training_inputs
    from tagging.dist.worker import build_trainer, load_checkpoint_state
    from tagging.local import prepare_local
    from tagging.training import ModelTraining, split_inputs

    overrides = {"data.labels_file": str(labels_file) if labels_file else None, "workers": workers,
                 "max_epochs": epochs + 1, "patience": 10_000, **(config_overrides or {})}
    cfg = load_config(None, overrides)
    threads = max(1, (os.cpu_count() or 1) // workers)  # the machine's cores, shared evenly
    cfg = replace(cfg, threads_per_worker=threads)
    p = prepare_local(data, cfg)
    rows = (*p.texts_and_targets("train"), *p.texts_and_targets("val"))

    # Plain single-process loop: the same epochs as a worker's, all the workers' threads in one process.
    _, inputs, _ = split_inputs(cfg, p)
    plain_run, plain = ModelTraining(inputs), []

    def plain_epochs(n: int) -> None:
        torch.set_num_threads(threads * workers)
        plain.extend(plain_run.run_epoch(*rows)["samples_per_s"] for _ in range(n))

    plain_epochs(1)
    plain.clear()  # warm-up
    plain_epochs((epochs + 1) // 2)
    init_ray()
    _, _, datasets, _ = training_inputs(cfg, p)
    with tempfile.TemporaryDirectory() as storage:
        trainer = build_trainer(inputs, datasets, f"bench-{int(time.time())}", storage)
        history = load_checkpoint_state(trainer.fit().checkpoint)["history"]
    ray_sps = float(np.median([h["samples_per_s"] for h in history[1:]]))
    logger.info(f"Ray Train, {workers} workers x {threads} threads (DDP gloo): {ray_sps:.0f} samples/s")
    plain_epochs(epochs // 2)
    plain_sps = float(np.median(plain))
    logger.info(f"plain PyTorch, 1 process x {threads * workers} threads: {plain_sps:.0f} samples/s "
                f"(epochs: {', '.join(f'{v:.0f}' for v in plain)})")
    ratio = ray_sps / plain_sps
    out = {"rows": len(rows[0]), "epochs_timed": epochs, "plain_epochs_samples_per_s": plain,
           "ray_epochs_samples_per_s": [h["samples_per_s"] for h in history[1:]], "workers": workers, "threads_per_worker": threads,
           "plain_samples_per_s": plain_sps, "ray_train_samples_per_s": ray_sps, "ray_over_plain": ratio,
           "model": to_dict(cfg.model), "batch_size": cfg.batch_size}
    out["table"] = (f"{'side':<34}{'samples/s':>12}\n{'plain PyTorch (1 process)':<34}{plain_sps:>12.0f}\n"
                    f"{f'Ray Train ({workers} workers, DDP)':<34}{ray_sps:>12.0f}\n{'ratio Ray/plain':<34}{ratio:>12.2f}")
    return out
