"""Scoring cost of an architecture: ONNX Runtime docs/s on this machine.

fp32 throughput depends on the architecture and the text lengths, not on the weights; int8
throughput does depend on them (calibrated activation ranges decide the quantized graph), so
a tuning trial is timed with its own trained weights, calibrated on real training texts.
Without weights/texts, a model with random weights is timed on random texts of realistic lengths.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np


def onnx_docs_per_s(model_cfg, vocab_size: int, num_labels: int, lengths: np.ndarray, threads: int | None = None,
                    batch_size: int = 64, seconds: float = 2.0, int8: bool = False, state_dict: dict | None = None,
                    vocab=None, calibration_texts: list[str] | None = None) -> float:
    """Docs/s of ONNX Runtime on the given text lengths, as the batch scorer runs them: the
    unpadded graph (tagging.export.export_unpadded) on batches of one exact length each.

    With ``state_dict`` (and the ``vocab`` and ``calibration_texts`` for int8), the trained model
    is timed; otherwise random weights (int8: calibrated on the random timing batches)."""
    import torch

    from tagging.batching import exact_length_order
    from tagging.export import export_unpadded, session
    from tagging.model import build_model

    threads = threads or os.cpu_count() or 1
    torch.manual_seed(0)
    model = build_model(vocab_size, num_labels, model_cfg).eval()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    rng = np.random.default_rng(0)
    lengths = np.clip(np.asarray(lengths), 1, model_cfg.max_length)
    batches = [rng.integers(2, vocab_size, size=(len(idx), int(lengths[idx[0]]))).astype(np.int64)
               for idx in exact_length_order(lengths, batch_size)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        export_unpadded(model, path)
        if int8:
            from tagging.quantize import calibration_batches, quantize_model  # the quantizer `tagging quantize` uses

            calibration = (calibration_batches(vocab, calibration_texts, model_cfg.max_length, unpadded=True)
                           if vocab is not None and calibration_texts else batches[:8])  # else: the random ids
            path, fp32 = Path(d) / "m.int8.onnx", path
            quantize_model(fp32, path, calibration)
        sess = session(path, threads=threads, providers=["CPUExecutionProvider"])
        for ids in batches[:2]:
            sess.run(None, {"ids": ids})
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for ids in batches:
                sess.run(None, {"ids": ids})
                done += len(ids)
        return done / (time.perf_counter() - t0)

