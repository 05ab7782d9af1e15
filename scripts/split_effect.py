"""How much of a test F1 difference is the split draw, and how much the targets?

python scripts/split_effect.py --data-dir DIR [--seeds 42,43,44,45,46]   (DIR: projects.json, labels.txt, tags.json)

With a tags file, aliases in the rows' tags are mapped to their tag before the label space is
applied; that changes a few rows' targets, and since the stratified split depends on
(ids, targets, seed), ``--seed S`` then draws other train/val/test rows. This crosses the two:
TF-IDF + LinearSVC (``tagging baselines``' model, C / class weight / thresholds chosen on
validation) trained and scored with the targets of one mode on the split of the other, per
seed, so the split's effect and the targets' effect are measured separately (seconds a seed).
"""
import argparse, json, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tagging.baselines import SplitData, TfidfLinearBaseline
from tagging.config import load_config
from tagging.dataset import prepare
from tagging.local import read_rows_local
from tagging.readers import load_label_inputs
from tagging.metrics import weighted_f1


def prepared(d: str, seed: int, tags: bool):
    over = {"data.labels_file": f"{d}/labels.txt", "seed": seed}
    if tags:
        over["data.tags_file"] = f"{d}/tags.json"
    cfg = load_config(None, over)
    rows, rejects = read_rows_local([f"{d}/projects.json"], cfg)
    return prepare(rows, rejects, cfg.data, seed, *load_label_inputs(cfg.data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="folder with projects.json, labels.txt, tags.json")
    ap.add_argument("--seeds", default="42,43,44,45,46")
    a = ap.parse_args()
    results = []
    for seed in map(int, a.seeds.split(",")):
        p = {mode: prepared(a.data_dir, seed, mode == "tags") for mode in ("labels", "tags")}
        changed = p["tags"].rows.merge(p["labels"].rows, on="id", how="left", suffixes=("", "_l"))
        n_changed = int(sum(not isinstance(b, np.ndarray) or not np.array_equal(a_, b)
                            for a_, b in zip(changed["y"], changed["y_l"])))
        out = {"seed": seed, "rows": {m: len(q.rows) for m, q in p.items()}, "rows_with_other_targets": n_changed}
        for ymode in ("labels", "tags"):
            for smode in ("labels", "tags"):
                fr = p[ymode].rows.merge(p[smode].rows[["id", "split"]].rename(columns={"split": "s"}), on="id")
                texts = {n: fr[fr.s == n]["text"].tolist() for n in ("train", "val", "test")}
                ys = {n: np.stack(fr[fr.s == n]["y"].to_numpy()).astype(np.float32) for n in ("train", "val", "test")}
                model = TfidfLinearBaseline(seed=seed)
                model.fit(SplitData(p[ymode].labels, texts, ys, {}))
                out[f"targets={ymode} split={smode}"] = round(weighted_f1(ys["test"], model.predict(texts["test"])), 4)
        results.append(out)
        print(json.dumps(out), flush=True)
    keys = [k for k in results[0] if k.startswith("targets=")]
    print(json.dumps({"MEAN": {k: round(float(np.mean([r[k] for r in results])), 4) for k in keys}}))


if __name__ == "__main__":
    main()
