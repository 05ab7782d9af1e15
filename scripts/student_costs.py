"""What a char-CNN architecture costs to score, int8, before training one: ONNX Runtime µs a row.

python scripts/student_costs.py --model ARTIFACT --data $DATA/projects.json \
    [--variant "embedding_dim=32"] [--variant "filter_widths=1,2,3,5,7,9"] ...

Each variant is the artifact's model config with space-separated ``key=value`` overrides of
ModelConfig fields (one model, no ensemble), random weights (seeded): the cost of a graph does
not depend on its weights. Every variant is exported, statically quantized (the product's
``quantize_model``, calibrated on the same texts) and timed on one ONNX Runtime thread over the
data's texts (normalized by the artifact, length-bucketed batches of 64, best of 3 passes), as
one scoring actor runs them. Prints the convolutions' multiply-adds a character relative to the
first variant, the parameters, and µs a row; ``--profile`` adds each variant's time by operator
(ONNX Runtime's profiler, one pass). Model selection, not product code.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_VARIANTS = ["", "embedding_dim=32", "embedding_dim=40", "embedding_dim=48", "num_filters=48",
                    "filter_widths=1,2,3,4,5,6,7", "filter_widths=1,2,3,4,5,6,7,8", "filter_widths=1,2,3,5,7,9",
                    "embedding_dim=48 filter_widths=1,2,3,4,5,6,7,8"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="an artifact: its vocabulary, labels, normalization and model config")
    ap.add_argument("--data", required=True, nargs="+", help="labeled or unlabeled input files: the texts timed")
    ap.add_argument("--variant", action="append", help='"key=value key=value" ModelConfig overrides ("" = the artifact\'s)')
    ap.add_argument("--rows", type=int, default=8000, help="texts timed (the data's, repeated as needed)")
    ap.add_argument("--profile", action="store_true", help="also print µs a row by ONNX operator type")
    a = ap.parse_args()

    import torch

    from tagging.artifact import load_artifact
    from tagging.export import export_onnx, session
    from tagging.model import CharCNN, count_parameters
    from tagging.quantize import calibration_batches, quantize_model
    from tagging.readers import Row, plan_units, read_unit

    art = load_artifact(a.model)
    texts = [r.text for u in plan_units(a.data) for r in read_unit(u, art.config.data, need_tags=False) if isinstance(r, Row)]
    if not texts:
        raise SystemExit(f"no valid rows in {a.data}")
    texts = (texts * (a.rows // len(texts) + 1))[: a.rows]
    lengths = np.array([len(t) for t in texts])
    batches = calibration_batches(art.vocab, texts, art.max_length)  # length-bucketed, 64 a batch, as scoring runs them
    print(f"{len(texts)} texts, mean {lengths.mean():.0f} characters, {len(batches)} batches")
    base_macs = None
    with tempfile.TemporaryDirectory() as tmp:
        for variant in a.variant or DEFAULT_VARIANTS:
            overrides = dict(kv.split("=", 1) for kv in variant.split())
            cfg = dataclasses.replace(art.config.model, ensemble=1, **overrides)
            torch.manual_seed(0)
            model = CharCNN(art.vocab.size, len(art.labels.labels), cfg).eval()
            fp32, int8 = Path(tmp) / "m.onnx", Path(tmp) / "m.int8.onnx"
            export_onnx(model, fp32)
            quantize_model(fp32, int8, batches[::10])
            sess = session(int8, threads=1)
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for ids in batches:
                    sess.run(["logits"], {"ids": ids})
                best = min(best, (time.perf_counter() - t0) / len(texts))
            macs = cfg.embedding_dim * cfg.num_filters * sum(cfg.filter_widths)
            base_macs = base_macs or macs
            print(f"{variant or '(the artifact)':48s} conv MACs/char {macs / base_macs:4.2f}  "
                  f"parameters {count_parameters(model):8,d}  int8 {best * 1e6:6.1f} µs/row", flush=True)
            if a.profile:
                for op, us in op_times(int8, batches, len(texts)):
                    print(f"    {op:24s} {us:6.1f} µs/row")


def op_times(path: Path, batches: list, rows: int) -> list[tuple[str, float]]:
    """(operator type, µs a row) over one profiled pass, largest first."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for ids in batches:
        sess.run(["logits"], {"ids": ids})
    events = json.loads(Path(sess.end_profiling()).read_text())
    total: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
    return [(op, dur / rows) for op, dur in total.most_common() if dur / rows >= 0.5]


if __name__ == "__main__":
    main()
