"""The core commands: `tagging train | evaluate | register | predict | synth | bench-train | config`.

Light imports only (typer, tagging.cli_support); each command imports its implementation in
its body, so `tagging --help` stays fast. tagging.cli composes these into the app.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Annotated, Optional

import typer

from tagging.cli_support import (Address, ConfigFile, Data, Labels, Sets, Tags, TrackingUri, config_overrides, echo_json, parse_sets,
                                  run_command)


def train(
    data: Data,
    out: Annotated[Path, typer.Option(help="Artifact directory to create (must not exist or be empty).")] = Path("artifacts/model"),
    config: ConfigFile = None,
    sets: Sets = None,
    labels: Labels = None,
    tags: Tags = None,
    min_tag_freq: Annotated[Optional[int], typer.Option(help="Without --labels: keep tags in at least N rows (data.min_tag_freq).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray Train workers, DDP; 0 = in-process (workers).")] = None,
    cpus_per_worker: Annotated[Optional[float], typer.Option(help="CPUs per worker, fractional allowed (cpus_per_worker).")] = None,
    gpu: Annotated[Optional[bool], typer.Option("--gpu/--no-gpu", help="One GPU per worker, NCCL, mixed precision (use_gpu).")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (max_epochs).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Global batch size, split across workers (batch_size).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (learning_rate).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for split, init and batch order (seed).")] = None,
    ensemble: Annotated[Optional[int], typer.Option(help="Train K models (seeds seed..seed+K-1), exported as one averaged model (model.ensemble).")] = None,
    run_name: Annotated[Optional[str], typer.Option(help="Run name; rerun with the same name to resume a killed run.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard the checkpoints of an earlier run with this --run-name and start over.")] = False,
    storage: Annotated[str, typer.Option(help="Checkpoint storage path or URI.")] = "runs",
    address: Address = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Train the char-CNN data-parallel with Ray Train and write a versioned artifact (with ONNX).

    Any config field can be set with --set KEY=VALUE; `tagging config` lists every field with its type, default and meaning.
    """

    def body():
        from tagging.config import load_config

        overrides = config_overrides({
            "data.labels_file": labels, "data.tags_file": tags, "data.min_tag_freq": min_tag_freq, "workers": workers,
            "cpus_per_worker": cpus_per_worker, "use_gpu": gpu, "max_epochs": max_epochs, "batch_size": batch_size,
            "learning_rate": lr, "seed": seed, "model.ensemble": ensemble}, sets)
        cfg = load_config(config, overrides)  # a bad config fails here, before anything imports Ray
        from tagging.dist.training import run_training
        from tagging.tracking import tracking_uri as uri

        art = run_training(cfg, data, str(out), run_name=run_name, storage=storage, address=address, fresh=fresh,
                           tracking_uri=uri(tracking_uri))
        teacher = art.manifest.get("distillation", {}).get("teacher", {})
        echo_json({"artifact": str(art.path), "test": art.manifest["metrics"]["overall"],
                   **({"teacher": str(art.path / teacher["path"]), "teacher_test": teacher["test_metrics"]} if teacher else {})})

    run_command(body)


def distill(
    teacher: Annotated[Path, typer.Option(help="The teacher: an artifact directory (a `tagging train` ensemble).")],
    data: Data,
    out: Annotated[Path, typer.Option(help="The student's artifact directory (must not exist or be empty).")] = Path("artifacts/student"),
    unlabeled: Annotated[Optional[list[str]], typer.Option(help="More texts without labels for the teacher to score (files, dirs, URIs; ids and texts of the teacher's val/test rows are dropped). Repeatable.")] = None,
    teacher_linear: Annotated[Optional[float], typer.Option(help="Weight 0..1 of TF-IDF + LinearSVC (calibrated on validation) in the teacher (distill.teacher_linear).")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Softening temperature of the soft loss (distill.temperature).")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Weight of the hard-label loss on labeled rows (distill.alpha).")] = None,
    student_config: Annotated[Optional[Path], typer.Option(help="Config file (JSON/YAML) on top of the teacher's config: the student's settings.")] = None,
    sets: Sets = None,
    run_name: Annotated[Optional[str], typer.Option(help="Run name; rerun with the same name to resume a killed run.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Discard the checkpoints of an earlier run with this --run-name and start over.")] = False,
    storage: Annotated[str, typer.Option(help="Checkpoint storage path or URI.")] = "runs",
    address: Address = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Distill a teacher (ensemble) into one char-CNN: teacher scores by Ray Data + ONNX Runtime, the student by Ray Train.

    The student's config is the teacher's, with one member and the distill.* settings (student_num_filters, student_max_width,
    student_filter_widths, student_max_length, student_ema_decay, concat_pool, unlabeled) from --student-config and --set.
    --data must be the teacher's training data: the student keeps the teacher's split.
    """

    def body():
        from tagging.artifact import load_artifact
        from tagging.config import load_config, to_dict

        base = to_dict(load_artifact(teacher).config)
        overrides = config_overrides({"distill.teacher_linear": teacher_linear, "distill.temperature": temperature,
                                      "distill.alpha": alpha}, sets)
        cfg = load_config(student_config, overrides, base=base)
        from tagging.dist.distill import run_distillation
        from tagging.tracking import tracking_uri as uri

        art = run_distillation(cfg, str(teacher), data, str(out), unlabeled=unlabeled or (), run_name=run_name,
                               storage=storage, address=address, fresh=fresh, tracking_uri=uri(tracking_uri))
        echo_json({"artifact": str(art.path), "test": art.manifest["metrics"]["overall"],
                   "teacher_test": art.manifest["distillation"]["teacher"]["test_metrics"]})

    run_command(body)


def show_config(
    config: ConfigFile = None,
    sets: Sets = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the resolved config as JSON (a file --config reads).")] = False,
) -> None:
    """Every config field with its type, value and meaning; with --config/--set, checks them (no Ray) and shows the result.

    Precedence: command line (options, --set) > --config file > defaults. Numbers may be written 1e-3,
    booleans true/false/yes/no, lists as [1, 2] or "1,2". A wrong type, an unknown field or a value
    out of range fails naming the field.
    """

    def body():
        from tagging.config import describe, load_config, to_dict

        cfg = load_config(config, parse_sets(sets))
        if as_json:
            typer.echo(json.dumps(to_dict(cfg), indent=1))
            return
        for name, kind, value, doc in describe(cfg):
            typer.echo(f"{name}: {kind} = {json.dumps(value)}")
            typer.echo(textwrap.fill(" ".join(doc.split()), 100, initial_indent="    ", subsequent_indent="    "))

    run_command(body)


def evaluate(
    model: Annotated[Path, typer.Option(help="Artifact directory.")],
    data: Data,
    out: Annotated[Path, typer.Option(help="Directory for metrics.json.")] = Path("out/eval"),
    tracking_uri: TrackingUri = None,
) -> None:
    """Evaluate an artifact on labeled data with its own label space and thresholds."""

    def body():
        from tagging.evaluation import evaluate_files
        from tagging.tracking import start_run, tracking_uri as uri

        metrics = evaluate_files(str(model), data)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        with start_run("evaluate", uri(tracking_uri), f"evaluate-{metrics['model_version']}",
                       tags={"model_version": metrics["model_version"], "artifact_dir": str(model.absolute())}) as run:
            run.log_params({"model": str(model.absolute()), "data": list(data)})
            run.log_metrics({**metrics["overall"], **metrics["accounting"]})
            run.log_metrics({f"f1/{tag}": v["f1"] for tag, v in metrics["per_class"].items()})
            run.log_artifact(out / "metrics.json")
        echo_json({"metrics": str(out / "metrics.json"), "overall": metrics["overall"], "accounting": metrics["accounting"]})

    run_command(body)


def register(
    model: Annotated[Path, typer.Option(help="Artifact directory to register (verified first).")],
    name: Annotated[str, typer.Option(help="Registered model name.")],
    alias: Annotated[Optional[str], typer.Option(help="Point this alias (e.g. production) at the new version.")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Register an artifact in the MLflow model registry as a new version (ONNX, manifest and every file, checksums kept).

    Score it with `tagging score --model models:/NAME@ALIAS` (or models:/NAME/VERSION): the alias is resolved to one version when the run plans.
    """

    def body():
        from tagging.tracking import register_model, tracking_uri as uri

        echo_json(register_model(uri(tracking_uri), model, name, alias))

    run_command(body)


def predict(
    model: Annotated[Path, typer.Option(help="Artifact directory.")],
    text: Annotated[list[str], typer.Option(help="Text to tag. Repeatable.")],
    top: Annotated[int, typer.Option(help="Also show this many highest-scoring tags.")] = 5,
) -> None:
    """Tag texts: prints the predicted tags with their probabilities (JSON Lines)."""

    def body():
        from tagging.evaluation import predict_texts_from_artifact

        for item in predict_texts_from_artifact(str(model), text, top=top):
            echo_json(item)

    run_command(body)


def synth(
    rows: Annotated[int, typer.Option(help="Rows to generate.")] = 5000,
    out: Annotated[str, typer.Option(help="Output file or URI (.parquet, .csv, .jsonl, .json).")] = "data/synth.parquet",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    bad_fraction: Annotated[float, typer.Option(help="Fraction of rows replaced by bad rows of every kind.")] = 0.0,
) -> None:
    """Write the built-in synthetic corpus (id, text, tags)."""

    def body():
        from tagging.synth import generate_corpus, write_corpus

        df = generate_corpus(rows, seed=seed, bad_fraction=bad_fraction)
        write_corpus(df, out)
        echo_json({"rows": len(df), "out": out})

    run_command(body)


def bench_train(
    data: Data,
    labels: Labels = None,
    epochs: Annotated[int, typer.Option(help="Timed epochs per side (after one warm-up epoch); medians are compared.")] = 4,
    workers: Annotated[int, typer.Option(help="Ray Train workers.")] = 2,
    out: Annotated[Optional[Path], typer.Option(help="Write the measurements as JSON here.")] = None,
) -> None:
    """Samples/s of N-worker Ray Train vs a plain single-process PyTorch loop, same model, data and cores."""

    def body():
        from tagging.dist.bench_train import bench_train as run

        result = run(data, labels, epochs=epochs, workers=workers)
        typer.echo(result["table"])
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")

    run_command(body)


COMMANDS = {"train": train, "distill": distill, "config": show_config, "evaluate": evaluate, "register": register, "predict": predict,
            "synth": synth,
            "bench-train": bench_train}
