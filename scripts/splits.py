"""The default `tagging train` and the TF-IDF baseline on several splits of the same data.

python scripts/splits.py --data $DATA/projects.json --labels $DATA/labels.txt \
    --seeds 42,43,44,45,46 --out out/splits [-- extra tagging train options]

One 168-row test split moves weighted F1 by a few points, so a single split cannot say whether
the char-CNN beats TF-IDF + LinearSVC, or where it stands against a fixed target. Per seed
(``--seed`` draws the split, the weights and the batch order) this runs the product commands,
``tagging train`` and ``tagging baselines --model`` (same split, same test rows), skips seeds
whose outputs already exist, and prints one row per split, the mean and standard deviation, and
the paired per-split difference. Model selection, not product code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

TAGGING = [sys.executable, "-m", "tagging.cli"]


def run(cmd: list[str], log: Path) -> None:
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; log {log}")


def row(seed: int, model: Path, base: Path) -> dict:
    metrics = json.loads((model / "metrics.json").read_text())
    manifest = json.loads((model / "manifest.json").read_text())
    tfidf = json.loads((base / "baselines.json").read_text())["tfidf_svm"]
    data = manifest["data"]
    return {
        "seed": seed, "train/val/test": f"{data['train']}/{data['val']}/{data['test']}",
        "cnn_val": manifest["metrics"].get("val_f1_ensemble_global"),
        "cnn_test": metrics["overall"]["f1"], "cnn_test_global": metrics["global_threshold_f1"],
        "cnn_macro": metrics["overall"]["macro_f1"],
        "tfidf_val": tfidf["val_f1"], "tfidf_test": tfidf["overall"]["f1"], "tfidf_macro": tfidf["overall"]["macro_f1"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--labels")
    ap.add_argument("--tags")
    ap.add_argument("--seeds", default="42,43,44,45,46")
    ap.add_argument("--out", default="out/splits")
    ap.add_argument("extra", nargs="*", help="more `tagging train` options (after --)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--data", a.data] + (["--labels", a.labels] if a.labels else []) + (["--tags", a.tags] if a.tags else [])
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        model, base = out / f"model-{seed}", out / f"baselines-{seed}"
        if not (model / "manifest.json").exists():
            run(TAGGING + ["train", *common, "--seed", str(seed), "--out", str(model), "--storage", str(out / "runs"), *a.extra],
                out / f"train-{seed}.log")
        if not (base / "baselines.json").exists():
            run(TAGGING + ["baselines", "--data", a.data, "--model", str(model), "--out", str(base)], out / f"baselines-{seed}.log")
        rows.append(row(seed, model, base))
        print(json.dumps(rows[-1]), flush=True)
    keys = ["cnn_test", "cnn_test_global", "cnn_macro", "tfidf_test", "tfidf_macro"]
    table = np.array([[r[k] for k in keys] for r in rows])
    diff = table[:, 0] - table[:, 3]
    summary = {
        "splits": len(rows),
        "mean": dict(zip(keys, np.round(table.mean(0), 4).tolist())),
        "sd": dict(zip(keys, np.round(table.std(0, ddof=1), 4).tolist())) if len(rows) > 1 else None,
        "cnn_minus_tfidf": {"per_split": np.round(diff, 4).tolist(), "mean": round(float(diff.mean()), 4),
                            "cnn_ahead": int((diff > 0).sum())},
    }
    (out / "summary.json").write_text(json.dumps({"rows": rows, **summary}, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
