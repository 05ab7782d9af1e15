"""Distillation over several split seeds, paired per split: one model, the ensemble, the student, TF-IDF.

python scripts/splits.py --data $DATA/projects.json --labels $DATA/labels.txt --seeds 42,43,44,45,46 --out out/splits \
    -- --set distill.enabled=false          # the teachers (3-member ensembles) and TF-IDF baselines
python scripts/distill_study.py --data $DATA/projects.json --splits out/splits --seeds 42,43,44,45,46 \
    [--name default] [-- extra `tagging distill` options]

Per seed it runs the product command `tagging distill --teacher SPLITS/model-SEED` (skipped when
SPLITS/student-NAME-SEED exists), and reads: the teacher's test metrics (the ensemble), its
member 0 scored alone with thresholds chosen as training chooses them (one model of the same
seed and split), the student's, and TF-IDF + LinearSVC's (`tagging baselines --model`). Rare
classes: the labels with at most 5 validation positives in that split; their test F1 (macro over
them) is reported apart. Prints a row per seed, means, standard deviations and the paired
differences. Model selection, not product code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

TAGGING = [sys.executable, "-m", "tagging.cli"]
RARE = 5


def member_metrics(teacher_dir: Path) -> dict:
    """Member 0 of the teacher scored alone: thresholds by the teacher's own policy on validation."""
    from tagging.artifact import load_artifact
    from tagging.batching import predict_texts
    from tagging.metrics import evaluate
    from tagging.model import members
    from tagging.thresholds import apply_thresholds, fit_thresholds, select_policy

    art = load_artifact(teacher_dir)
    rows = art.labeled_rows(art.manifest["data"]["inputs"])
    model = members(art.load_model())[0].eval()
    val, test = rows.split("val"), rows.split("test")
    pv = predict_texts(model, val.texts, art.vocab, art.max_length)
    pe = predict_texts(model, test.texts, art.vocab, art.max_length)
    policy = select_policy(val.y, pv, seed=art.config.seed)
    thresholds, _ = fit_thresholds(val.y, pv, int(policy["min_support"]), float(policy["shrink"]))
    return evaluate(test.y, apply_thresholds(pe, thresholds), art.labels.labels) | {"val_positives": dict(zip(art.labels.labels, val.y.sum(0).tolist()))}


def rare_f1(metrics: dict, rare: list[str]) -> float:
    return float(np.mean([metrics["per_class"][t]["f1"] for t in rare])) if rare else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--splits", default="out/splits")
    ap.add_argument("--seeds", default="42,43,44,45,46")
    ap.add_argument("--name", default="default")
    ap.add_argument("extra", nargs="*", help="more `tagging distill` options (after --)")
    a = ap.parse_args()
    root = Path(a.splits)
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        teacher, student, base = root / f"model-{seed}", root / f"student-{a.name}-{seed}", root / f"baselines-{seed}"
        if not (student / "manifest.json").exists():
            log = root / f"student-{a.name}-{seed}.log"
            with log.open("w") as f:
                proc = subprocess.run(TAGGING + ["distill", "--teacher", str(teacher), "--data", a.data, "--out", str(student),
                                                 "--storage", str(root / "runs"), *a.extra], stdout=f, stderr=subprocess.STDOUT)
            if proc.returncode != 0:
                raise SystemExit(f"tagging distill failed for seed {seed}; log {log}")
        ens = json.loads((teacher / "metrics.json").read_text())
        stu = json.loads((student / "metrics.json").read_text())
        lin = json.loads((base / "baselines.json").read_text())["tfidf_svm"]
        one = member_metrics(teacher)
        rare = sorted(t for t, n in one["val_positives"].items() if n <= RARE)
        row = {"seed": seed, "rare_classes": len(rare)}
        for name, m in (("single", one), ("ensemble", ens), ("student", stu), ("tfidf", lin)):
            row[f"{name}_f1"] = round(m["overall"]["f1"], 4)
            row[f"{name}_macro"] = round(m["overall"]["macro_f1"], 4)
            row[f"{name}_rare"] = round(rare_f1(m, rare), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = [k for k in rows[0] if k.endswith(("_f1", "_macro", "_rare"))]
    table = np.array([[r[k] for k in keys] for r in rows], dtype=float)
    col = {k: table[:, i] for i, k in enumerate(keys)}
    summary = {
        "name": a.name, "options": a.extra, "splits": len(rows),
        "mean": {k: round(float(np.nanmean(v)), 4) for k, v in col.items()},
        "sd": {k: round(float(np.nanstd(v, ddof=1)), 4) for k, v in col.items()} if len(rows) > 1 else None,
        "paired": {f"student_minus_{other}": {"per_split": np.round(col["student_f1"] - col[f"{other}_f1"], 4).tolist(),
                                               "mean": round(float(np.mean(col["student_f1"] - col[f"{other}_f1"])), 4)}
                   for other in ("single", "ensemble", "tfidf")},
    }
    print(json.dumps(summary, indent=1))
    (root / f"distill-study-{a.name}.json").write_text(json.dumps({"rows": rows, **summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
