"""Model-selection experiments on a labeled file, in-process (no Ray): prints val/test F1.

python scripts/experiment.py --data $DATA/projects.json --labels $DATA/labels.txt key=value ...
Keys are TrainConfig fields with dotted paths (model.num_filters=64, data.tags_file=PATH).
``--seeds K`` trains K models (seeds seed..seed+K-1) and also reports their averaged
probabilities (a seed ensemble), with per-class thresholds fit on validation as in training.
"""

import argparse
import json
import time

import numpy as np

from tagging.config import load_config
from tagging.local import prepare_local
from tagging.metrics import evaluate
from tagging.thresholds import apply_thresholds, fit_thresholds
from tagging.batching import predict_texts
from tagging.training import fit_in_process, split_inputs


def scores(yv, pv, ye, pe, cfg, labels) -> dict:
    th, g = fit_thresholds(yv, pv, cfg.threshold_min_support)
    m = evaluate(ye, apply_thresholds(pe, th), labels)["overall"]
    mg = evaluate(ye, apply_thresholds(pe, np.full(len(th), g)), labels)["overall"]
    return {"test_f1": round(m["f1"], 4), "test_f1_global": round(mg["f1"], 4), "macro": round(m["macro_f1"], 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+")
    ap.add_argument("--labels")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("sets", nargs="*")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    over = {}
    for kv in a.sets:
        k, v = kv.split("=", 1)
        try:
            over[k] = json.loads(v)
        except json.JSONDecodeError:
            over[k] = v
    over["data.labels_file"] = a.labels
    cfg = load_config(None, over)
    p = prepare_local(a.data, cfg)
    labels = p.labels.labels
    (tt, yt), (vt, yv), (et, ye) = (p.texts_and_targets(name) for name in ("train", "val", "test"))
    vocab, inputs, _ = split_inputs(cfg, p)
    pvs, pes = [], []
    for k in range(a.seeds):
        t0 = time.time()
        run = fit_in_process(inputs.member(k), tt, yt, vt, yv)
        model, st, run_cfg = run.best_model(), run.stopper, run.cfg
        pvs.append(predict_texts(model, vt, vocab, cfg.model.max_length))
        pes.append(predict_texts(model, et, vocab, cfg.model.max_length))
        print(json.dumps({"sets": a.sets, "seed": run_cfg.seed, "rows": [len(tt), len(vt), len(et)], "best_epoch": st.best_epoch,
                          "val_f1": round(st.best_score, 4), **scores(yv, pvs[-1], ye, pes[-1], cfg, labels),
                          "secs": round(time.time() - t0)}), flush=True)
    if a.seeds > 1:
        print(json.dumps({"sets": a.sets, "ensemble": a.seeds,
                          **scores(yv, np.mean(pvs, 0), ye, np.mean(pes, 0), cfg, labels)}), flush=True)


if __name__ == "__main__":
    main()
