"""`tagging quantize`: static int8 (QDQ, calibrated) ONNX model, gated on validation F1.

Needs the training data (``--data``): the artifact keeps the split membership of every id
(splits.json) but not the texts (``Artifact.labeled_rows`` reads them back). Calibration uses a
seeded sample of *train* rows; the gate scores every *validation* row with the fp32 and the int8
model through the same ONNX Runtime code as `tagging score` (tagging.onnx_scoring) and the
artifact's own thresholds, and accepts int8 only if its weighted F1 is at most ``max_drop``
below fp32's. The int8 model, the calibration texts and the gate's numbers are added to the
artifact (checksummed in the manifest, ``int8: {file, f1, fp32_f1, max_drop, accepted, ...}``);
a refused model is kept for inspection but ``--precision int8`` will not load it.

Static, not dynamic: dynamic quantization turns Conv into ConvInteger, measured ~4-6x slower
than fp32 here; static QDQ lets ONNX Runtime fuse QLinearConv. `tune` times int8 candidates with
the same ``quantize_model``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

INT8_FILE = "model.int8.onnx"
UNPADDED_INT8_FILE = "model.unpadded.int8.onnx"
CALIBRATION_FILE = "int8_calibration.jsonl"
# Every op ONNX Runtime can quantize, not only Conv/Gemm: the float Relu, mask Mul and ReduceMax
# between quantized convs cost as much as the convs themselves. Measured single-thread on this
# CPU (AVX512-VNNI): int8 = 3.0-3.2x fp32 with Conv/Gemm only, 4.3-4.8x with all ops, and a
# smaller largest probability change (0.014 vs 0.030 on the default model).
OPS: tuple[str, ...] | None = None

logger = logging.getLogger(__name__)


def calibration_batches(vocab, texts: Sequence[str], max_length: int, batch_size: int = 64,
                        unpadded: bool = False) -> list[np.ndarray]:
    """Encoded texts, int64 [batch, length] per length bucket (``unpadded``: per exact length, no
    empty text): what calibration runs the model on, batched as scoring will batch it."""
    from tagging.batching import bucket_order, exact_length_order

    texts = [t for t in texts if t] if unpadded else list(texts)
    lengths = np.array([min(len(t), max_length) for t in texts], dtype=np.int64)
    batches = exact_length_order(lengths, batch_size) if unpadded else bucket_order(lengths, batch_size, None)
    return [vocab.encode([texts[i] for i in idx], max_length)[0] for idx in batches]


def quantize_model(fp32_path: Path, out_path: Path, batches: Sequence[np.ndarray]) -> None:
    """Static QDQ quantization: per-channel int8 weights, uint8 activations, MinMax calibration
    on ``batches`` (ids int64 [batch, length], e.g. from ``calibration_batches``)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feed = iter(batches)

        def get_next(self):
            ids = next(self.feed, None)
            return None if ids is None else {"ids": ids}

        def rewind(self) -> None:
            self.feed = iter(batches)

    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(fp32_path))
        del model.graph.value_info[:]  # dynamo exports carry value shapes the quantizer trips on
        clean = Path(tmp) / "clean.onnx"
        onnx.save(model, str(clean))
        root = logging.getLogger()
        level, handlers = root.level, list(root.handlers)
        root.setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" warnings go to the root logger
        try:
            quantize_static(str(clean), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(OPS) if OPS else None, calibrate_method=CalibrationMethod.MinMax)
        finally:
            root.setLevel(level)
            for h in [h for h in root.handlers if h not in handlers]:  # its logging.info() calls add one (basicConfig):
                root.removeHandler(h)  # our messages would print twice


def quantize_artifact(model_dir: str, data: Sequence[str], calibration_rows: int = 512, max_drop: float = 0.01,
                      seed: int = 0) -> dict:
    """Produce, gate and store the int8 model; returns the manifest's ``int8`` entry."""
    from tagging.artifact import add_unpadded_graph, load_artifact, update_manifest
    from tagging.metrics import weighted_f1
    from tagging.onnx_scoring import OnnxScorer
    from tagging.thresholds import apply_thresholds

    art = load_artifact(model_dir)
    rows = art.labeled_rows(data)
    train, val = rows.split("train"), rows.split("val")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train.ids), size=min(calibration_rows, len(train.ids)), replace=False))
    calib = [train.texts[i] for i in pick]
    t0 = time.time()
    if art.unpadded_variant("fp32") is None:  # an artifact from before the unpadded graph
        art = add_unpadded_graph(art, val.texts)
    with tempfile.TemporaryDirectory(dir=art.path) as tmp:
        q, qu = Path(tmp) / INT8_FILE, Path(tmp) / UNPADDED_INT8_FILE
        quantize_model(art.onnx_path, q, calibration_batches(art.vocab, calib, art.max_length))
        fp32 = OnnxScorer(art, "fp32", threads=1).probs(val.texts)
        int8 = OnnxScorer(art, "int8", threads=1, model_path=q).probs(val.texts)
        f1_fp32 = weighted_f1(val.y, apply_thresholds(fp32, art.thresholds))
        f1_int8 = weighted_f1(val.y, apply_thresholds(int8, art.thresholds))
        # the graph scoring runs on exact-length batches, gated the same way
        quantize_model(art.unpadded_variant("fp32"), qu, calibration_batches(art.vocab, calib, art.max_length, unpadded=True))
        fast = OnnxScorer(art, "int8", threads=1, model_path=q, unpadded_path=qu).probs(val.texts)
        f1_fast = weighted_f1(val.y, apply_thresholds(fast, art.thresholds))
        accepted = bool(f1_fp32 - f1_int8 <= max_drop and f1_fp32 - f1_fast <= max_drop)
        cal = Path(tmp) / CALIBRATION_FILE
        cal.write_text("".join(json.dumps({"text": t}) + "\n" for t in calib), encoding="utf-8")
        entry = {
            "file": INT8_FILE, "f1": round(float(f1_int8), 6), "fp32_f1": round(float(f1_fp32), 6),
            "max_drop": max_drop, "accepted": accepted, "method": "static QDQ, per-channel int8 weights, "
            "uint8 activations, MinMax calibration", "ops": list(OPS) if OPS else "all supported",
            "calibration_file": CALIBRATION_FILE,
            "calibration_rows": len(calib), "validation_rows": len(val.ids),
            "max_abs_prob_diff": round(float(np.abs(fp32 - int8).max()), 6),
            "unpadded": {"file": UNPADDED_INT8_FILE, "f1": round(float(f1_fast), 6),
                         "max_abs_prob_diff": round(float(np.abs(fp32 - fast).max()), 6)},
        }
        files = [INT8_FILE, CALIBRATION_FILE, UNPADDED_INT8_FILE]
        for name in files:
            shutil.move(str(Path(tmp) / name), art.path / name)
    update_manifest(art, {name: art.path / name for name in files}, {"int8": entry})
    logger.info("int8 %s: validation weighted F1 %.4f (unpadded graph %.4f) vs fp32 %.4f (allowed drop %s); %d validation "
                "rows, %d calibration rows, %.1fs", "accepted" if accepted else "REFUSED", f1_int8, f1_fast, f1_fp32, max_drop,
                len(val.ids), len(calib), time.time() - t0)
    return entry
