"""The end-to-end demo (`make demo`): generate data -> train (Ray Train) -> export -> register -> batch-score (Ray Data).

Everything runs on a local Ray started by each step, on the built-in generated dataset, and
writes under ``demo/`` (override with --workdir). Each step is the real CLI a user would run.
Runs and the registered model go to a local MLflow store, ``demo/mlflow.db`` (SQLite, artifacts
in ``demo/mlartifacts``); the demo ends by saying how to open it with ``mlflow ui``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path


def step(title: str, *args: str) -> str:
    print(f"\n=== {title}\n$ tagging {' '.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "tagging.cli", *args], stdout=subprocess.PIPE, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed: {title} (exit {proc.returncode})")
    return proc.stdout


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="demo")
    ap.add_argument("--train-rows", type=int, default=3000)
    ap.add_argument("--score-rows", type=int, default=50_000)
    ap.add_argument("--max-epochs", type=int, default=10)
    a = ap.parse_args(argv)
    work = Path(a.workdir).absolute()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    data, nightly = work / "data" / "train.parquet", work / "data" / "nightly" / "part-00000.jsonl"
    model, output = work / "artifacts" / f"model-{stamp}", work / "scores"
    date = dt.date.today().isoformat()
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    os.environ.setdefault("TAGGING_MODEL_CACHE", str(work / "model-cache"))  # registered models download here, not ~/.cache
    step("1. generate a labeled training set", "synth", "--rows", str(a.train_rows), "--out", str(data), "--seed", "0")
    step("2. generate tonight's untagged texts (1% bad rows of every kind)", "synth", "--rows", str(a.score_rows),
         "--out", str(nightly), "--seed", "1", "--bad-fraction", "0.01")
    step("3. train the 3-member ensemble with Ray Train (2 DDP workers), distill it into one student, export ONNX, "
         "write the artifact (the teacher inside it), track it in MLflow", "train", "--data", str(data),
         "--out", str(model), "--storage", str(work / "runs"), "--max-epochs", str(a.max_epochs), "--tracking-uri", tracking)
    step("4. register the artifact in the MLflow model registry as tagging-demo@production", "register", "--model", str(model),
         "--name", "tagging-demo", "--alias", "production", "--tracking-uri", tracking)
    step("5. batch-score the production model with ONNX Runtime on Ray Data (a nightly MLflow run, drift in summary.json)", "score",
         "--model", "models:/tagging-demo@production", "--input", str(nightly.parent), "--output", str(output), "--date", date,
         "--overwrite", "--tracking-uri", tracking)
    summary = json.loads((output / f"date={date}" / "summary.json").read_text())
    print("\n=== done")
    print(f"artifact: {model}\nscores:   {output}/date={date}/ (part-*.parquet, _rejects/, summary.json, _SUCCESS)")
    keys = ("rows_read", "rows_scored", "rows_rejected")
    print("accounting: " + ", ".join(f"{k} {summary.get(k)}" for k in keys))
    print("drift flagged: " + (", ".join(summary.get("drift", {}).get("flagged", [])) or "none"))
    step("6. tag a text with the artifact", "predict", "--model", str(model), "--text",
         "Fine-tuning BERT transformers with PyTorch for question answering")
    step("7. the last nights side by side", "report", "--scores", str(output))
    print(f"\n=== MLflow: runs, nightly results and the registered model are in {tracking}")
    print(f"open them with:  .venv/bin/mlflow ui --backend-store-uri {tracking} --port 5000   then http://127.0.0.1:5000")
    print("experiments: tagging-train (the training run, per-epoch curves), tagging-nightly (one run per scored date); "
          "Models: tagging-demo (alias production)")


if __name__ == "__main__":
    main()
