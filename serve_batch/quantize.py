"""`tagging quantize`: static int8 (QDQ, calibrated) ONNX model, gated on validation F1.

Needs the training data (``--data``): the artifact keeps the split membership of every id
(splits.json) but not the texts. Calibration uses a seeded sample of *train* rows; the gate
scores every *validation* row with the fp32 and the int8 model through the same ONNX Runtime
code as `tagging score` (serve_batch.scorer) and the artifact's own thresholds, and accepts
int8 only if its weighted F1 is at most ``max_drop`` below fp32's. The int8 model, the
calibration texts and the gate's numbers are added to the artifact (checksummed in the
manifest, ``int8: {file, f1, fp32_f1, max_drop, accepted, ...}``); a refused model is kept
for inspection but ``--precision int8`` will not load it.

Static, not dynamic: dynamic quantization turns Conv into ConvInteger, measured ~4-6x slower
than fp32 here (../shared/RAY.md); static QDQ lets ONNX Runtime fuse QLinearConv.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

INT8_FILE = "model.int8.onnx"
CALIBRATION_FILE = "int8_calibration.jsonl"
# Every op ONNX Runtime can quantize, not only Conv/Gemm: the float Relu, mask Mul and ReduceMax
# between quantized convs cost as much as the convs themselves. Measured single-thread on this
# CPU (AVX512-VNNI): int8 = 3.0-3.2x fp32 with Conv/Gemm only, 4.3-4.8x with all ops, and a
# smaller largest probability change (0.014 vs 0.030 on the default model).
OPS: tuple[str, ...] | None = None


def labeled_split_rows(art, data: Sequence[str]) -> dict[str, list]:
    """{'train': [(text, tags)], 'val': [...]} of the artifact's splits found in ``data``.

    Rows are read and normalized with the core readers (the training code); the first
    occurrence of an id wins, as in training; tags are canonicalized with the artifact's
    tags file when it is available.
    """
    from tagging.readers import Row, check_columns, plan_units, read_unit

    cfg = art.config.data
    splits = art.read_json("splits.json")
    units = plan_units(list(data))
    check_columns(units, cfg, need_tags=True)
    index = tag_index(cfg)
    out: dict[str, list] = {"train": [], "val": []}
    seen: set[str] = set()
    for unit in units:
        for item in read_unit(unit, cfg, need_tags=True):
            if not isinstance(item, Row) or item.id in seen:
                continue
            seen.add(item.id)
            split = splits.get(item.id)
            if split in out:
                out[split].append((item.text, index.canonical(item.tags, cfg.expand_parents)))
    return out


def tag_index(cfg):
    """The tags file the artifact was trained with (aliases, parents), when it is still there."""
    from tagging.labels import TagIndex

    from tagging.readers import file_exists, load_tag_index

    return load_tag_index(cfg.tags_file) if cfg.tags_file and file_exists(cfg.tags_file) else TagIndex()


class _Calibration:
    """onnxruntime CalibrationDataReader over length-bucketed batches of encoded texts."""

    def __init__(self, art, texts: Sequence[str], batch_size: int = 64) -> None:
        from tagging.batching import bucket_order

        lengths = np.array([len(t) for t in texts])
        self.batches = [art.vocab.encode([texts[i] for i in idx], art.max_length)[0]
                        for idx in bucket_order(lengths, batch_size, None)]
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.batches):
            return None
        self.pos += 1
        return {"ids": self.batches[self.pos - 1]}

    def rewind(self) -> None:
        self.pos = 0


def quantize_model(art, fp32_path: Path, out_path: Path, calibration_texts: Sequence[str]) -> None:
    """Static QDQ quantization: per-channel int8 weights, uint8 activations, MinMax calibration."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(_Calibration, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(str(fp32_path))
        del model.graph.value_info[:]  # dynamo exports carry shapes the quantizer trips on (RAY.md)
        clean = Path(tmp) / "clean.onnx"
        onnx.save(model, str(clean))
        import logging

        logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" warnings
        quantize_static(str(clean), str(out_path), Reader(art, calibration_texts), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(OPS) if OPS else None, calibrate_method=CalibrationMethod.MinMax)


def quantize_artifact(model_dir: str, data: Sequence[str], calibration_rows: int = 512, max_drop: float = 0.01,
                      seed: int = 0, log=print) -> dict:
    """Produce, gate and store the int8 model; returns the manifest's ``int8`` entry."""
    from serve_batch.scorer import OnnxScorer
    from tagging.artifact import ArtifactError, load_artifact, update_manifest
    from tagging.metrics import weighted_f1
    from tagging.thresholds import apply_thresholds

    art = load_artifact(model_dir)
    rows = labeled_split_rows(art, data)
    if not rows["val"]:
        raise ArtifactError(f"--data holds none of {art.path}'s validation rows (splits.json); pass its training data")
    if not rows["train"]:
        raise ArtifactError(f"--data holds none of {art.path}'s training rows (splits.json); pass its training data")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(rows["train"]), size=min(calibration_rows, len(rows["train"])), replace=False))
    calib = [rows["train"][i][0] for i in pick]
    val_texts = [t for t, _ in rows["val"]]
    y = art.labels.encode([tags for _, tags in rows["val"]])
    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=art.path) as tmp:
        q = Path(tmp) / INT8_FILE
        quantize_model(art, art.onnx_path, q, calib)
        fp32 = OnnxScorer(art, "fp32", threads=1).probs(val_texts)
        int8 = OnnxScorer(art, "int8", threads=1, model_path=q).probs(val_texts)
        f1_fp32 = weighted_f1(y, apply_thresholds(fp32, art.thresholds))
        f1_int8 = weighted_f1(y, apply_thresholds(int8, art.thresholds))
        accepted = bool(f1_fp32 - f1_int8 <= max_drop)
        cal = Path(tmp) / CALIBRATION_FILE
        cal.write_text("".join(json.dumps({"text": t}) + "\n" for t in calib), encoding="utf-8")
        entry = {
            "file": INT8_FILE, "f1": round(float(f1_int8), 6), "fp32_f1": round(float(f1_fp32), 6),
            "max_drop": max_drop, "accepted": accepted, "method": "static QDQ, per-channel int8 weights, "
            "uint8 activations, MinMax calibration", "ops": list(OPS) if OPS else "all supported",
            "calibration_file": CALIBRATION_FILE,
            "calibration_rows": len(calib), "validation_rows": len(val_texts),
            "max_abs_prob_diff": round(float(np.abs(fp32 - int8).max()), 6) if len(val_texts) else 0.0,
        }
        shutil.move(str(q), art.path / INT8_FILE)
        shutil.move(str(cal), art.path / CALIBRATION_FILE)
    update_manifest(art, {INT8_FILE: art.path / INT8_FILE, CALIBRATION_FILE: art.path / CALIBRATION_FILE}, {"int8": entry})
    log(f"int8 {'accepted' if accepted else 'REFUSED'}: validation weighted F1 {f1_int8:.4f} vs fp32 {f1_fp32:.4f} "
        f"(allowed drop {max_drop}); {len(val_texts)} validation rows, {len(calib)} calibration rows, "
        f"{time.time() - t0:.1f}s")
    return entry

