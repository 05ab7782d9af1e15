"""Model-selection experiments on a labeled file, in-process (no Ray): prints val/test F1.

python scripts/experiment.py --data ../shared/data/projects/projects.json --labels ../shared/data/projects/labels.txt key=value ...
Keys are TrainConfig fields with dotted paths (model.num_filters=64).
"""

import argparse
import json
import time

import numpy as np

from tagging.config import load_config
from tagging.dataset import prepare
from tagging.labels import read_labels_file
from tagging.metrics import evaluate
from tagging.readers import Reject, plan_units, read_unit
from tagging.thresholds import apply_thresholds, fit_thresholds
from tagging.train_loop import fit_local, predict_texts
from tagging.vocab import CharVocab
import pandas as pd


def load(data, cfg):
    rows, rejects = [], []
    for unit in plan_units(data):
        for seq, item in enumerate(read_unit(unit, cfg.data, True)):
            if isinstance(item, Reject):
                rejects.append({"id": item.id, "reason": item.reason, "source": item.source, "raw": item.raw})
            else:
                rows.append({"id": item.id, "text": item.text, "tags": item.tags, "source": item.source, "length": item.length, "unit": unit.name, "seq": seq})
    return pd.DataFrame(rows), pd.DataFrame(rejects, columns=["id", "reason", "source", "raw"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+")
    ap.add_argument("--labels")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("sets", nargs="*")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    over = {}
    for kv in a.sets:
        k, v = kv.split("=", 1)
        over[k] = json.loads(v) if v[:1] in "[{0123456789.-tf" and v not in ("pos_weight",) else v
    over["data.labels_file"] = a.labels
    cfg = load_config(None, over)
    rows, rejects = load(a.data, cfg)
    labels = read_labels_file(open(a.labels).read()) if a.labels else None
    p = prepare(rows, rejects, cfg.data, cfg.seed, None, labels)
    tr, va, te = p.split("train"), p.split("val"), p.split("test")
    vocab = CharVocab.fit(tr["text"])
    yt, yv, ye = (np.stack(d["y"].to_numpy()) for d in (tr, va, te))
    t0 = time.time()
    model, hist, st = fit_local(tr["text"].tolist(), yt, va["text"].tolist(), yv, vocab, cfg, log=print)
    pv = predict_texts(model, va["text"].tolist(), vocab, cfg.model.max_length)
    th, g = fit_thresholds(yv, pv, cfg.threshold_min_support)
    pt = predict_texts(model, te["text"].tolist(), vocab, cfg.model.max_length)
    m = evaluate(ye, apply_thresholds(pt, th), p.labels.labels)["overall"]
    mg = evaluate(ye, apply_thresholds(pt, np.full(len(th), g)), p.labels.labels)["overall"]
    print(json.dumps({"sets": a.sets, "best_epoch": st.best_epoch, "val_f1": st.best_score, "test_f1": m["f1"], "test_f1_global": mg["f1"], "macro": m["macro_f1"], "secs": round(time.time() - t0)}))


if __name__ == "__main__":
    main()
