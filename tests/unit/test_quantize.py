"""quantize: calibration batches and the static int8 quantizer, on a tiny random model (no training)."""

from __future__ import annotations

import numpy as np
import torch

from tagging.config import ModelConfig
from tagging.quantize import calibration_batches, quantize_model
from tagging.vocab import CharVocab

CFG = ModelConfig(embedding_dim=8, num_filters=6, filter_widths=(1, 2, 3), hidden_dim=8, ensemble=1, max_length=64)


def test_calibration_batches_are_length_bucketed_encodings():
    vocab = CharVocab(tuple("abc "))
    texts = ["a" * n for n in (3, 90, 5, 4)]
    batches = calibration_batches(vocab, texts, max_length=64, batch_size=2)
    assert [b.shape for b in batches] == [(2, 4), (2, 64)]  # shortest first; truncated at max_length
    assert all(b.dtype == np.int64 for b in batches)


def test_int8_model_scores_like_fp32_and_tune_times_it(tmp_path):
    import onnx

    from tagging.export import export_onnx, session, sigmoid
    from tagging.model import CharCNN
    from tune.cost import onnx_docs_per_s

    torch.manual_seed(0)
    model = CharCNN(30, 4, CFG).eval()
    export_onnx(model, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    batches = [rng.integers(2, 30, size=(8, n)).astype(np.int64) for n in (5, 17, 40)]
    quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", batches)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
    for ids in batches:
        fp32, int8 = (sigmoid(session(tmp_path / f, providers=["CPUExecutionProvider"]).run(["logits"], {"ids": ids})[0])
                      for f in ("m.onnx", "q.onnx"))
        assert np.abs(fp32 - int8).max() < 0.05
    assert onnx_docs_per_s(CFG, 30, 4, np.array([5, 20, 60]), threads=1, seconds=0.1, int8=True) > 0


def test_quantizing_leaves_no_logging_handler_behind(tmp_path):
    """onnxruntime's quantizer logs through logging.info(), which installs a root handler when
    there is none (as in the CLI): our messages would then print twice."""
    import logging

    from tagging.export import export_onnx
    from tagging.model import CharCNN

    torch.manual_seed(0)
    export_onnx(CharCNN(30, 4, CFG).eval(), tmp_path / "m.onnx")
    root = logging.getLogger()
    saved = root.handlers[:]  # pytest's capture handlers: without them, as in a CLI process
    root.handlers.clear()
    try:
        quantize_model(tmp_path / "m.onnx", tmp_path / "q.onnx", [np.full((4, 9), 3, dtype=np.int64)])
        assert root.handlers == []
    finally:
        root.handlers[:] = saved
