"""Distillation experiments in-process (no Ray): a teacher artifact -> students under several settings.

python scripts/distill_experiment.py --data $DATA/projects.json --labels $DATA/labels.txt \
    --teacher out/splits/model-42 [--linear] key=value ...

Keys are TrainConfig fields (distill.alpha=0.3, distill.student_num_filters=48, ...). The split is
the teacher's own (prepared with its config and seed; the data hash must match). Prints one JSON
line: the teacher's, the student's and (with --linear) the calibrated linear teacher's test F1.
Model selection, not product code (the product path is `tagging distill`).
"""

import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+")
    ap.add_argument("--labels")
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("sets", nargs="*")
    a = ap.parse_args()
    import torch

    from tagging.artifact import load_artifact
    from tagging.batching import predict_texts
    from tagging.config import from_dict, merge, to_dict
    from tagging.distill import LinearTeacher, blend, concat_pool, pack, student_config
    from tagging.local import prepare_local
    from tagging.metrics import evaluate
    from tagging.onnx_scoring import OnnxScorer
    from tagging.thresholds import apply_thresholds, fit_thresholds, select_policy
    from tagging.training import fit_in_process, split_inputs

    torch.set_num_threads(a.threads)
    over = {}
    for kv in a.sets:
        k, v = kv.split("=", 1)
        try:
            over[k] = json.loads(v)
        except json.JSONDecodeError:
            over[k] = v
    teacher = load_artifact(a.teacher)
    cfg = from_dict(merge(to_dict(teacher.config), {"data.labels_file": a.labels, **over}))
    p = prepare_local(a.data, cfg)
    assert p.data_hash == teacher.manifest["data_hash"], "not the teacher's data"
    labels = p.labels.labels
    (tt, yt), (vt, yv), (et, ye) = (p.texts_and_targets(name) for name in ("train", "val", "test"))
    scorer = OnnxScorer(teacher, threads=a.threads)
    d = cfg.distill
    pool_t, pool_y = concat_pool(tt, yt, d.concat_pool, cfg.seed)
    unl = p.unlabeled_texts() if d.unlabeled else []
    lin = LinearTeacher(cfg.seed).fit(tt, yt, vt, yv, p.labels) if d.teacher_linear > 0 else None

    def teach(texts):
        return blend(scorer.probs(texts), lin.probs(texts) if lin else None, d.teacher_linear)

    def f1(yv_, pv, ye_, pe):
        pol = select_policy(yv_, pv, seed=cfg.seed)
        th, _ = fit_thresholds(yv_, pv, int(pol["min_support"]), float(pol["shrink"]))
        m = evaluate(ye_, apply_thresholds(pe, th), labels)["overall"]
        return round(m["f1"], 4), round(m["macro_f1"], 4)

    t0 = time.time()
    texts = tt + pool_t + unl
    soft = teach(texts)
    L = len(labels)
    hard = np.concatenate([yt, pool_y, np.zeros((len(unl), L), np.float32)])
    has = np.r_[np.ones(len(tt) + len(pool_t)), np.zeros(len(unl))]
    pool = np.r_[np.zeros(len(tt)), np.ones(len(pool_t)), np.zeros(len(unl))]
    packed = pack(hard, soft, has, pool)
    teacher_f1 = f1(yv, teach(vt), ye, teach(et))
    scfg = student_config(cfg)
    vocab, inputs, _ = split_inputs(scfg, p)
    from dataclasses import replace
    inputs = replace(inputs, student=True)
    run = fit_in_process(inputs, texts, packed, vt, yv)
    model = run.best_model()
    pv = predict_texts(model, vt, vocab, scfg.model.max_length)
    pe = predict_texts(model, et, vocab, scfg.model.max_length)
    print(json.dumps({"teacher": a.teacher, "sets": a.sets, "rows": [len(tt), len(pool_t), len(unl)],
                      "teacher_f1": teacher_f1, "student_f1": f1(yv, pv, ye, pe), "best_epoch": run.stopper.best_epoch,
                      "teacher_ensemble_f1": teacher.manifest["metrics"]["overall"]["f1"],
                      "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    main()
